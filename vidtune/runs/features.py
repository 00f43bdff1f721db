"""Decode -> transform -> backbone, with worker processes, prefetch and an on-disk feature cache.

Workers decode only the sampled frames (resized in FFmpeg's scaler), crop them on uint8 and hand
them to the main process, which batches frames across videos through the backbone. Files that fail
are returned as skipped (path + reason), never raised: one corrupt video must not stop a dataset.
"""

from __future__ import annotations

import logging
import os
import warnings
import zlib
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vidtune.data.clips import read_clip
from vidtune.data.manifest import VideoItem
from vidtune.data.sampling import Sampling
from vidtune.data.transforms import Normalize, centre_crop, random_resized_crop
from vidtune.errors import ConfigError
from vidtune.models.backbones import FrameEncoder, PretrainedConfig
from vidtune.progress import NullProgress, Progress
from vidtune.runs.cache import (  # noqa: F401 (re-exported: the cache's home before vidtune.runs.cache)
    CACHE_VERSION,
    FeatureCache,
    cache_key,
    default_cache_dir,
    lookup,
    op_identity,
    open_cache,
    split_cached,
)
from vidtune.runs.device import autocast, precision
from vidtune.utils import default_workers, lower_priority  # noqa: F401 (default_workers: re-exported)

log = logging.getLogger(__name__)


def sampling_for(encoder, frames: int, mode: str = "centre", views: int = 1, flow: bool = False) -> Sampling:
    """The sampling an encoder needs: single frames, or clips at the frame rate of its weights;
    ``flow``: with optical-flow cues (frame encoders only)."""
    clip_len = int(getattr(encoder, "clip_len", 1))
    step = 1.0 / float(getattr(encoder, "clip_fps", 0) or 1) if clip_len > 1 else 0.0
    if flow and clip_len > 1:
        raise ConfigError("flow", f"is for image backbones; {encoder.name} is a video model that sees motion itself")
    return Sampling(frames, mode, views, clip_len, step, flow)


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


_JIT_MIN_FRAMES = 256  # below this, tracing (about a second) costs more than it saves


def inference_encoder(encoder: FrameEncoder, device: torch.device, n_frames: int):
    """The fastest way to run a frozen encoder for ``n_frames`` frames on ``device``.

    On CPU, a traced and frozen TorchScript graph runs EfficientNet-Lite0 about 1.5x faster than
    eager mode (``bench/pipeline.py`` measures both; features agree to ~1e-5). It is built once per
    weights fingerprint and falls back to eager mode if tracing fails. ``VIDTUNE_JIT=0`` disables it.
    """
    if (device.type != "cpu" or n_frames < _JIT_MIN_FRAMES or os.environ.get("VIDTUNE_JIT", "1") == "0"
            or not encoder.frame_independent):  # shift hooks read the clip length at run time
        return encoder
    key = encoder.fingerprint()
    cached = getattr(encoder, "_jit", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    size = encoder.cfg.input_size
    example = torch.zeros(8, 3, size, size).contiguous(memory_format=torch.channels_last)
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(encoder.eval(), example, check_trace=False))
            traced(example)  # run the graph optimiser once, outside the timed loop
    except Exception as exc:  # any model timm/torchvision can build must still work, just slower
        log.info("TorchScript tracing failed for %s (%s); using eager mode", encoder.name, exc)
        traced = encoder
    object.__setattr__(encoder, "_jit", (key, traced))
    return traced


def _worker_init(_):
    torch.set_num_threads(1)
    lower_priority()


def _as_list(batch: list) -> list:  # module level: "spawn" workers (macOS, Windows) must pickle it
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
        kwargs = {"num_workers": workers, "prefetch_factor": 4, "worker_init_fn": _worker_init,
                  "persistent_workers": False}
    return DataLoader(dataset, batch_size=batch_size, sampler=order, generator=torch.Generator().manual_seed(0),
                      collate_fn=_as_list if batch_size else None, pin_memory=pin_memory, **kwargs)


def with_flow(feats: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Frame features ``(F, V, D)`` or tokens ``(F, V, G, D)`` with each frame's flow cues ``(F, V, C)``
    appended to every token: ``(F, V[, G], D + C)``. Heads built with ``flow=C`` split them off again."""
    flow = flow.to(feats.dtype)
    if feats.dim() == 4:
        flow = flow[:, :, None].expand(-1, -1, feats.shape[2], -1)
    return torch.cat([feats, flow], dim=-1)




@torch.inference_mode()
def extract_features(encoder: FrameEncoder, items: list[VideoItem], sampling: Sampling, *,
                     device: torch.device, cache: FeatureCache | None = None, batch_frames: int = 32,
                     workers: int | None = None, progress: Progress | None = None,
                     description: str = "features", grid_views: int | None = None,
                     frame_op: FrameOp | None = None, seed: int = 0, runtime: str | None = None,
                     int8: bool | None = None, reuse: bool = False) -> tuple[dict[int, torch.Tensor], list[dict]]:
    """Features ``(frames, views, D)`` (``(frames, views, G, D)`` for token grids) per item index
    (``views`` is 1 unless ``mode='grid'``).

    Returns the features of every readable item and the skipped ones as ``{"path", "reason"}``.
    ``grid_views``: for centre sampling, also look for cached training grids with that many (odd)
    views, whose middle column holds exactly the centre frames (so evaluating a linear-probe run on
    its own training videos decodes nothing).
    ``frame_op``: applied to every decoded clip (see :class:`FrameOp`); ``seed`` seeds it.
    ``runtime``: auto | torch | onnxruntime | openvino for the backbone (default: the process default,
    :func:`vidtune.runs.engines.set_default_runtime`); fp32 engines share cached features.
    ``int8`` (default: the process default): the backbone quantised to int8 (calibrated once per weights,
    on frames spread over the first int8 job's videos: :mod:`vidtune.runs.calibration`); its features
    are cached under keys naming that engine.
    ``reuse``: the encoder will be applied again in later jobs (a trained run's predict): ``auto`` builds
    its engine even for a small job, as later ones reuse it from disk.
    """
    from vidtune.runs.engines import _AUTO_MIN_FRAMES, backbone_engine, default_int8

    int8 = default_int8() if int8 is None else int8
    progress = progress or NullProgress()
    workers = default_workers() if workers is None else workers
    encoder.eval().to(device)
    norm = Normalize(encoder.cfg).to(device)
    views = sampling.views if sampling.mode == "grid" else 1
    feats: dict[int, torch.Tensor] = {}
    fp = encoder.fingerprint() if cache is not None else ""
    prec = precision(device)
    if int8:  # int8 features differ beyond the fp32 tolerance: keyed by the int8 engine's identity
        from vidtune.runs.calibration import int8_precision

        prec, failed = int8_precision(encoder, runtime, device, items, workers, prec)
        if prec is None:  # not one video of the job decodes: no frame to calibrate on, nothing to compute
            for f in failed:
                log.warning("skipping %s: %s", f["path"], f["reason"])
            return feats, failed
    hits, keys, todo, skipped = split_cached(cache, items, fp, encoder.cfg, sampling, prec, frame_op, grid_views)
    feats.update((i, torch.from_numpy(hit)) for i, hit in hits.items())
    if not todo:
        return feats, skipped

    subset = [items[i] for i in todo]
    if device.type == "cuda":  # NHWC kernels for the channels_last batches below; fixed shapes: tune once
        encoder.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    n_frames = len(todo) * sampling.per_clip
    job_frames = max(n_frames, _AUTO_MIN_FRAMES) if reuse else n_frames
    net = backbone_engine(encoder, runtime, device, job_frames, int8=int8)[0]
    loader = clip_loader(ClipDataset(subset, sampling, encoder.cfg, seed=seed, frame_op=frame_op), workers,
                         pin_memory=device.type == "cuda")
    pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []

    clip_len = sampling.clip_len

    def flush():
        if not pending:
            return
        x = torch.cat([f for _, f, _ in pending]).to(device, non_blocking=True)
        x = norm(x).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out = net(x).float().cpu()  # one row per frame, or per clip_len frames for video backbones
        pos = 0
        for j, f, flow in pending:
            n = f.shape[0] // clip_len
            clip = out[pos : pos + n].view(sampling.frames, views, *out.shape[1:])  # grid order: (frame, view)
            pos += n
            feats[j] = clip.clone() if flow is None else with_flow(clip, flow)
            if cache is not None:
                cache.put(keys[j], feats[j])
        pending.clear()

    with progress.task(f"{description} ({len(todo)} clips)", total=len(todo) * sampling.per_clip,
                       unit="frames") as task:
        for sample in loader:
            j = todo[sample["index"]]
            if sample["error"] is not None:
                skipped.append({"path": str(items[j].path), "reason": sample["error"]})
                log.warning("skipping %s: %s", items[j].path, sample["error"])
            else:
                pending.append((j, sample["frames"], sample.get("flow")))
                if sum(f.shape[0] for _, f, _ in pending) >= batch_frames:
                    flush()
            task.advance(sampling.per_clip)
        flush()
    return feats, skipped
