"""Decode one clip: its sampled frames, resized in FFmpeg's scaler, with failures as reasons, not raises.

Shared by the PyTorch data pipeline (:class:`vidtune.runs.features.ClipDataset`) and the engine-only
path (:mod:`vidtune.runs.lean`), which imports no torch.
"""

from __future__ import annotations

import logging

import numpy as np

from vidtune.data.manifest import VideoItem
from vidtune.data.preprocess import PretrainedConfig
from vidtune.data.sampling import Sampling
from vidtune.errors import VidtuneError
from vidtune.io import open_video

log = logging.getLogger(__name__)


def read_clip(item: VideoItem, sampling: Sampling, cfg: PretrainedConfig, rng: np.random.Generator | None = None,
              frame_op=None, op_rng: np.random.Generator | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(frames, None)``: uint8 ``(F, H, W, 3)`` with the short side at ``cfg.resize_size`` (not cropped),
    or ``(None, reason)`` when the file cannot give them (a corrupt video must not end a job).

    ``rng`` draws random sampling offsets; ``frame_op`` (a :class:`vidtune.runs.features.FrameOp`) changes
    the decoded frames, drawing from ``op_rng``; its ``retime`` (if any) changes which frames are decoded.
    """
    try:
        with open_video(item.path, interpolation=cfg.interpolation) as reader:
            ts = sampling.timestamps(reader.info.duration, item.start, item.end, rng)
            if frame_op is not None and hasattr(frame_op, "retime"):
                ts = frame_op.retime(ts, reader.info.duration, op_rng)
            frames = reader.frames_at(ts, short_side=cfg.resize_size)
            if frame_op is not None:
                frames = frame_op(frames, ts, op_rng)
    except VidtuneError as exc:
        return None, getattr(exc, "reason", str(exc))
    except ValueError as exc:
        return None, str(exc)
    except Exception as exc:  # a decoder bug must not end a 10,000-video job
        log.debug("unexpected error on %s", item.path, exc_info=True)
        return None, f"unexpected {type(exc).__name__}: {exc}"
    return frames, None
