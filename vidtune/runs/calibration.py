"""The int8 backbone engine of a feature pass: calibrated on frames spread over the job, and its identity.

The engine (``<weights fingerprint>-<input size>-int8.onnx`` in ``<feature cache>/engines/``) is quantised
statically (:func:`vidtune.export.int8.quantise_file`) once per encoder weights, by the first int8 job,
on up to :data:`CALIBRATION_FRAMES` clean frames taken from as many of the job's videos as possible
(:func:`spread_items`): up to 64 different files evenly spaced over the job, a few frames at segment
centres from each when there are fewer. Calibrating on the job's first batch instead saw one or two
videos (the first 32 frames) and set every activation range from them.

Beside the engine, ``...-int8.json`` records how it was calibrated and the engine file's digest. That
digest is the engine's identity: int8 features are cached with the precision ``fp32-int8-<digest>``, so
features of another calibration (the engine deleted and rebuilt by another job, or an engine from
before this record existed, which is rebuilt) are never served in place of this engine's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vidtune.utils import atomic_write_json, file_digest

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
    from vidtune.data.transforms import Normalize
    from vidtune.runs.features import ClipDataset, Sampling, clip_loader

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


def _record_path(int8_path: Path) -> Path:
    return int8_path.with_suffix(".json")


def read_record(int8_path: Path) -> dict | None:
    """The calibration record of an int8 engine file, or None (no engine, or one without a record)."""
    try:
        record = json.loads(_record_path(int8_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("digest"), str) or not int8_path.is_file():
        return None
    return record


def quantised(fp32_path: Path, calibration: torch.Tensor | Callable[[], tuple[torch.Tensor, dict]] | None) -> Path:
    """The int8 engine file of ``fp32_path``, quantised now on ``calibration`` when it has no record yet.

    ``calibration``: frames, or a function returning ``(frames, description)`` (called only when the
    engine must be built, so a job whose engine exists decodes nothing for it)."""
    from vidtune.export.int8 import quantise_file

    q = fp32_path.with_name(fp32_path.stem + "-int8.onnx")
    if read_record(q) is not None:
        return q
    if calibration is None:
        raise ValueError("an int8 engine needs calibration frames")
    frames, info = calibration() if callable(calibration) else (calibration, {"frames": int(len(calibration))})
    quantise_file(fp32_path, q, frames.float().contiguous(), "frames")
    atomic_write_json(_record_path(q), {**info, "digest": file_digest(q)})
    log.info("quantised %s to int8 on %d frames (%s)", fp32_path.name, len(frames),
             ", ".join(f"{k} {v}" for k, v in info.items()))
    return q


def int8_tag(fp32_path: Path) -> str | None:
    """The identity of the int8 engine built from ``fp32_path`` (a digest prefix), None before it exists."""
    record = read_record(fp32_path.with_name(fp32_path.stem + "-int8.onnx"))
    return record["digest"][:16] if record else None


def int8_precision(encoder, runtime: str | None, device: torch.device, items: list, workers: int,
                   base: str) -> tuple[str | None, list[dict]]:
    """The cache precision of this job's int8 features, ``<base>-int8-<engine identity>``, building the
    int8 engine first (calibrated on ``items``) when there is none. ``(None, skipped)`` when it had to be
    built and not one of the job's videos decodes (each item then skipped with its file's reason)."""
    from vidtune.runs import engines

    tag = int8_tag(engines._engine_path(encoder))
    if tag is None:
        engines.resolve(runtime, encoder, device, len(items), int8=True)  # an int8 engine can run it at all
        with engines._lock:  # an int8 engine kept in memory whose file has no record now is stale
            for key in [k for k in engines._engines if k[-1] == "int8" and k[:2] == engines._key(encoder, "")[:2]]:
                del engines._engines[key]
        x, info, failed = calibration_frames(encoder, items, workers)
        if x is None:
            return None, [{"path": str(it.path), "reason": failed.get(str(it.path), "not decodable")} for it in items]
        engines.backbone_engine(encoder, runtime, device, len(items), int8=True, calibration=lambda: (x, info))
        tag = int8_tag(engines._engine_path(encoder))
    return f"{base}-int8-{tag}", []
