"""Decoding clips for a network: worker processes that decode only the sampled frames and crop them.

:class:`ClipDataset` gives decoded, cropped uint8 clips (failures as ``error`` strings, never raised);
:func:`clip_loader` prefetches them with worker processes at a lower priority than the network.
Used by feature passes (:mod:`vidtune.runs.features`), int8 calibration (:mod:`vidtune.runs.calibration`),
end-to-end training and the export parity check.
"""

from __future__ import annotations

import zlib
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidtune.data.clips import read_clip
from vidtune.data.manifest import VideoItem
from vidtune.data.sampling import Sampling
from vidtune.data.transforms import centre_crop, random_resized_crop
from vidtune.models.backbones import PretrainedConfig
from vidtune.runs.cache import op_identity
from vidtune.utils import lower_priority


@runtime_checkable
class FrameOp(Protocol):
    """A change applied to decoded clips before cropping (corruptions, robust augmentation).

    It must be picklable (decoding runs in worker processes) and deterministic given ``rng``.
    ``cache_id`` names it in the feature-cache key, so changed frames never reuse clean features.
    An op may also define ``retime(ts, duration, rng) -> ts`` to change *which* frames are decoded
    (frame drops, frame-rate changes); it is called before decoding when present.
    """

    cache_id: str

    def __call__(self, frames: np.ndarray, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``frames``: uint8 ``(T, H, W, 3)`` decoded at ``times`` (seconds); returns the same shape."""
        ...


class ClipDataset(Dataset):
    """Decoded, cropped uint8 clips ``(F, S, S, 3)``; failures come back as ``error`` strings."""

    def __init__(self, items: list[VideoItem], sampling: Sampling, cfg: PretrainedConfig,
                 augment: bool = False, seed: int = 0, frame_op: FrameOp | None = None, flip: bool = True):
        self.items = items
        self.sampling = sampling
        self.cfg = cfg
        self.augment = augment
        self.flip = flip  # off when labels depend on left/right (direction of motion, Something-Something)
        self.seed = seed
        self.frame_op = frame_op
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        """``k = draw * len(self) + i``: item ``i``; ``draw`` tells repeated draws of one item apart
        (class-balanced epochs repeat small classes), so each repeat gets fresh offsets and crops."""
        i = k % len(self.items)
        item = self.items[i]
        rng = np.random.default_rng([self.seed, self.epoch, k])
        # Seeded by the clip (file name and segment), not by its position in the list nor by the folder it
        # lies in: a corrupted clip must not depend on which other clips were already cached, nor change
        # when the dataset moves (its cache key records the same name).
        op_rng = None
        if self.frame_op is not None:
            op_rng = np.random.default_rng([self.seed, self.epoch, k // len(self.items),
                                            zlib.crc32(op_identity(item).encode("utf-8", "surrogateescape"))])
        frames, error = read_clip(item, self.sampling, self.cfg, rng, self.frame_op, op_rng)
        if error is not None:
            return {"index": i, "frames": None, "error": error}
        if self.augment:
            frames = random_resized_crop(frames, self.cfg.input_size, rng, flip=self.flip)
        else:
            frames = centre_crop(frames, self.cfg.input_size)
        sample = {"index": i, "frames": torch.from_numpy(frames), "error": None}
        if self.sampling.flow:
            from vidtune.data.flow import clip_flow

            views = self.sampling.views if self.sampling.mode == "grid" else 1
            sample["flow"] = torch.from_numpy(clip_flow(frames, self.sampling.frames, views))  # (F, V, C)
        return sample


def init_worker(_):
    """A decoding worker: one torch thread, lower priority than the process feeding the network."""
    torch.set_num_threads(1)
    lower_priority()


def as_list(batch: list) -> list:  # module level: "spawn" workers (macOS, Windows) must pickle it
    return batch


def clip_loader(dataset: Dataset, workers: int, batch_size: int | None = None, order=None,
                pin_memory: bool = False) -> DataLoader:
    """Items one at a time (``batch_size=None``) or as lists, prefetched by ``workers`` processes.

    ``order``: the indices to visit (a shuffled or class-balanced epoch); default all, in order.
    The loader gets its own generator so that building one never advances the global torch RNG
    (results must not depend on whether features came from the cache).
    """
    kwargs = {}
    if workers > 0:
        kwargs = {"num_workers": workers, "prefetch_factor": 4, "worker_init_fn": init_worker,
                  "persistent_workers": False}
    return DataLoader(dataset, batch_size=batch_size, sampler=order, generator=torch.Generator().manual_seed(0),
                      collate_fn=as_list if batch_size else None, pin_memory=pin_memory, **kwargs)
