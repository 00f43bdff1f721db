"""Decode -> transform -> backbone, with worker processes, prefetch and an on-disk feature cache.

Workers decode only the sampled frames (resized in FFmpeg's scaler), crop them on uint8 and hand
them to the main process (:mod:`vidtune.runs.decoding`), which batches frames across videos through the
backbone's engine (:mod:`vidtune.engines.backbone`). Files that fail are returned as skipped (path +
reason), never raised: one corrupt video must not stop a dataset.
"""

from __future__ import annotations

import logging

import torch

from vidtune.data.manifest import VideoItem
from vidtune.data.sampling import Sampling
from vidtune.data.transforms import Normalize
from vidtune.errors import ConfigError
from vidtune.models.backbones import FrameEncoder
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
from vidtune.runs.decoding import (  # noqa: F401 (re-exported: their home before vidtune.runs.decoding)
    ClipDataset,
    FrameOp,
    as_list,
    clip_loader,
    init_worker,
)
from vidtune.runs.device import autocast, precision
from vidtune.utils import (  # noqa: F401 (default_workers: re-exported)
    all_finite,
    default_workers,
    lower_priority,
    require_finite,
)

log = logging.getLogger(__name__)


def sampling_for(encoder, frames: int, mode: str = "centre", views: int = 1, flow: bool = False) -> Sampling:
    """The sampling an encoder needs: single frames, or clips at the frame rate of its weights;
    ``flow``: with optical-flow cues (frame encoders only)."""
    clip_len = int(getattr(encoder, "clip_len", 1))
    step = 1.0 / float(getattr(encoder, "clip_fps", 0) or 1) if clip_len > 1 else 0.0
    if flow and clip_len > 1:
        raise ConfigError("flow", f"is for image backbones; {encoder.name} is a video model that sees motion itself")
    return Sampling(frames, mode, views, clip_len, step, flow)


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
    :func:`vidtune.engines.runtime.set_default_runtime`); fp32 engines share cached features.
    ``int8`` (default: the process default): the backbone quantised to int8 (calibrated once per weights,
    on frames spread over the first int8 job's videos: :mod:`vidtune.runs.calibration`); its features
    are cached under keys naming that engine.
    ``reuse``: the encoder will be applied again in later jobs (a trained run's predict): ``auto`` builds
    its engine even for a small job, as later ones reuse it from disk.
    """
    from vidtune.engines.backbone import AUTO_MIN_FRAMES, backbone_engine
    from vidtune.engines.runtime import default_int8

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
    job_frames = max(n_frames, AUTO_MIN_FRAMES) if reuse else n_frames
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
        if not all_finite(out):
            require_finite(out, "the backbone, for " + ", ".join(str(items[j].path) for j, _, _ in pending[:3])
                           + (f" and {len(pending) - 3} more clips" if len(pending) > 3 else "") + ",")
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
