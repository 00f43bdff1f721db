"""The int8 backbone engine of a feature pass: calibrated on frames spread over the job, and its identity.

The engine (``<weights fingerprint>-<input size>-int8.onnx`` in ``<feature cache>/engines/``) is quantised
statically (:func:`vidtune.engines.int8.quantised`) once per encoder weights, by the first int8 job,
on up to :data:`CALIBRATION_FRAMES` clean frames taken from as many of the job's videos as possible
(:func:`spread_items`): up to 64 different files evenly spaced over the job, a few frames at segment
centres from each when there are fewer. Calibrating on the job's first batch instead saw one or two
videos (the first 32 frames) and set every activation range from them.

Beside the engine, ``...-int8.json`` records how it was calibrated and the engine file's digest. That
digest is the engine's identity (:func:`vidtune.engines.int8.int8_tag`): int8 features are cached with the
precision ``fp32-int8-<digest>``, so features of another calibration (the engine deleted or damaged and
rebuilt, or an engine from before this record existed, which is rebuilt) are never served in place of this
engine's.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

CALIBRATION_FRAMES = 64
CALIBRATION_VIDEOS = 64
METHOD = "spread"  # the calibration recipe (recorded beside the engine)


def spread_items(items: list, budget: int = CALIBRATION_VIDEOS) -> list:
    """Up to ``budget`` of the job's clips, from as many different files as possible, evenly spaced.

    With more files than ``budget``: one clip of each of ``budget`` files spread over the job's order.
    With fewer: every file, each giving a share of the budget as clips spread over its own clips (the
    windows of one long video, the segments of a few)."""
    groups: dict[str, list] = {}
    for it in items:
        groups.setdefault(str(it.path), []).append(it)
    paths = list(groups)
    if not paths:
        return []
    if len(paths) >= budget:
        idx = np.unique(np.linspace(0, len(paths) - 1, budget).round().astype(int))
        return [groups[paths[i]][len(groups[paths[i]]) // 2] for i in idx]
    base, extra = divmod(budget, len(paths))
    chosen = []
    for r, p in enumerate(paths):
        g = groups[p]
        k = min(len(g), base + (r < extra))
        chosen += [g[i] for i in np.unique(np.linspace(0, len(g) - 1, k).round().astype(int))]
    return chosen


def calibration_frames(encoder, items: list, workers: int, frames: int = CALIBRATION_FRAMES
                       ) -> tuple[torch.Tensor | None, dict, dict[str, str]]:
    """Normalised frames ``(N, 3, S, S)``, ``N <= frames``, spread over ``items``, what they are, and the
    files that failed (path -> reason). When none of the chosen clips decodes, one clip of each other
    file is tried; frames are None only when no file of the job decodes at all."""
    from vidtune.data.sampling import Sampling
    from vidtune.data.transforms import Normalize
    from vidtune.runs.decoding import ClipDataset, clip_loader

    chosen = spread_items(items, min(CALIBRATION_VIDEOS, frames))
    got, files, failed = [], set(), {}
    for attempt in range(2):
        if attempt:  # every chosen clip failed: one clip of each file not tried yet
            tried = {str(it.path) for it in chosen}
            chosen = list({str(it.path): it for it in items if str(it.path) not in tried}.values())
        per = max(1, frames // max(1, len(chosen)))
        for s in clip_loader(ClipDataset(chosen, Sampling(per), encoder.cfg), workers):
            path = str(chosen[s["index"]].path)
            if s["error"] is None:
                got.append(s["frames"])
                files.add(path)
            else:
                failed[path] = s["error"]
        if got or not chosen:
            break
    if not got:
        return None, {}, failed
    x = Normalize(encoder.cfg)(torch.cat(got)[:frames])  # (N, 3, S, S)
    return x, {"method": METHOD, "frames": int(len(x)), "clips": len(got), "videos": len(files)}, failed


def int8_precision(encoder, runtime: str | None, device: torch.device, items: list, workers: int,
                   base: str) -> tuple[str | None, list[dict]]:
    """The cache precision of this job's int8 features, ``<base>-int8-<engine identity>``, building the
    int8 engine first (calibrated on ``items``) when there is none. ``(None, skipped)`` when it had to be
    built and not one of the job's videos decodes (each item then skipped with its file's reason)."""
    from vidtune.engines.backbone import backbone_engine, resolve
    from vidtune.engines.build import engine_path
    from vidtune.engines.int8 import int8_tag

    tag = int8_tag(engine_path(encoder))  # None also when the engine was damaged (removed now: calibrated again)
    if tag is None:
        resolve(runtime, encoder, device, len(items), int8=True)  # an int8 engine can run it at all
        x, info, failed = calibration_frames(encoder, items, workers)
        if x is None:
            return None, [{"path": str(it.path), "reason": failed.get(str(it.path), "not decodable")} for it in items]
        backbone_engine(encoder, runtime, device, len(items), int8=True, calibration=lambda: (x, info))
        tag = int8_tag(engine_path(encoder))
    return f"{base}-int8-{tag}", []
