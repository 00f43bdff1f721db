"""The evaluation transform without PyTorch: what the weights expect, the centre crop, normalisation.

:class:`PretrainedConfig` is the preprocessing a backbone's weights were trained with; every frame
transform derives from it (never configured twice). Everything here is numpy, so a command that runs
an exported engine (``vidtune predict --runtime onnxruntime``) never imports torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedConfig:
    """Preprocessing the weights were trained with; the frame transform is derived from it."""

    input_size: int = 224  # square crop fed to the network
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # resize filter: bicubic | bilinear | area | nearest
    crop_pct: float = 0.875  # centre crop = input_size; resize short side to input_size / crop_pct

    @property
    def resize_size(self) -> int:
        return int(math.floor(self.input_size / self.crop_pct))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PretrainedConfig:
        return cls(
            input_size=int(d["input_size"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
        )


def transform_id(cfg: PretrainedConfig) -> dict:
    """What the evaluation transform depends on (part of feature-cache keys)."""
    return {"resize": cfg.resize_size, "crop": cfg.input_size, "interp": cfg.interpolation,
            "mean": list(cfg.mean), "std": list(cfg.std)}


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3); pads with edge pixels when a side is shorter than ``size``."""
    t, h, w, _ = frames.shape
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        frames = np.pad(frames, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="edge")
        t, h, w, _ = frames.shape
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])


def normalise(frames: np.ndarray, cfg: PretrainedConfig) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` -> float32 ``(..., 3, H, W)`` scaled by the config's mean and std, the
    same arithmetic as :class:`vidtune.data.transforms.Normalize` (``(x - 255 mean) / (255 std)``)."""
    mean = (np.asarray(cfg.mean, np.float32) * np.float32(255.0)).reshape(3, 1, 1)
    inv_std = (np.float32(1.0) / (np.asarray(cfg.std, np.float32) * np.float32(255.0))).reshape(3, 1, 1)
    src = np.moveaxis(frames, -1, -3)
    out = np.empty(src.shape, np.float32)  # one pass from uint8 into the result, then one in place:
    np.subtract(src, mean, out=out, dtype=np.float32)  # 0.15 ms a 224 px frame against 1.1 ms for
    out *= inv_std  # astype + arithmetic + a contiguous copy
    return out
