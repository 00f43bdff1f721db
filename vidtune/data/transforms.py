"""Frame transforms derived from a backbone's :class:`PretrainedConfig` (never configured twice).

The decoder already resizes each frame so that its short side is ``cfg.resize_size`` (in FFmpeg's
scaler, with the config's filter). What is left is cropping to ``cfg.input_size`` (centre for
evaluation; random scale/aspect crop plus horizontal flip, identical for all frames of a clip, for
training) and normalisation, done on uint8 until the last step to keep worker -> main traffic small.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vidtune.data.preprocess import PretrainedConfig, centre_crop, transform_id  # noqa: F401 (re-exported)


def random_resized_crop(frames: np.ndarray, size: int, rng: np.random.Generator,
                        scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True) -> np.ndarray:
    """One random crop (area fraction ``scale``, aspect ``ratio``) and flip shared by all frames."""
    t, h, w, _ = frames.shape
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            break
    else:
        ch = cw = min(h, w)
        top, left = (h - ch) // 2, (w - cw) // 2
    crop = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + ch, left : left + cw])).permute(0, 3, 1, 2)
    crop = F.interpolate(crop.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = crop.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if flip and rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


class Normalize(torch.nn.Module):
    """uint8 ``(..., H, W, 3)`` -> float ``(..., 3, H, W)`` scaled by the config's mean and std."""

    def __init__(self, cfg: PretrainedConfig):
        super().__init__()
        self.register_buffer("mean", torch.tensor(cfg.mean).view(3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(cfg.std).view(3, 1, 1) * 255.0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(-1, -3).float()
        return (x - self.mean.to(x.device)) * self.inv_std.to(x.device)

