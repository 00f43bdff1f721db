"""Label Studio JSON exports of video projects, read as vidtune manifest rows.

What is read from each task's chosen annotation (ground truth first, else the most recently updated one
that was not cancelled):

- ``choices`` (whole-video classification) -> one row for the whole file; several choices make a
  multi-label row (labels joined with ``|``);
- ``timelinelabels`` (Video + TimelineLabels) -> one row per range, ``ranges[].start/end`` being
  1-based frame numbers, end inclusive, as Label Studio's timeline counts them;
- ``videorectangle`` tracks with ``labels`` -> the spans where the track is shown: from a keyframe to the
  next keyframe whose ``enabled`` is false (the track ends after it), or to the end of the video.

Frame numbers become seconds with the video's own frame times (see :class:`FrameClock`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from vidtune.data.external import FrameClock, ImportResult, Missing, resolve_media
from vidtune.data.items import LABEL_SEP, VideoItem
from vidtune.errors import DatasetError

VIDEO_KEYS = ("video", "video_url", "url", "videoUrl", "file", "media")


def load_tasks(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}); export the project as "
                           "'JSON' from Label Studio") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise DatasetError(f"{path}: a Label Studio export is a JSON list of tasks (objects with data and annotations)")
    return data


def task_media(task: dict) -> str | None:
    """The media reference of a task: the first video-like field of ``data``."""
    data = task.get("data") or {}
    if not isinstance(data, dict):
        return None
    for k in VIDEO_KEYS:
        v = data.get(k)
        if isinstance(v, str) and v.strip():
            return v
    strings = [v for v in data.values() if isinstance(v, str) and v.strip()]
    return strings[0] if len(strings) == 1 else None


def chosen_annotation(task: dict) -> dict | None:
    """Ground truth first, else the most recently updated annotation that was not cancelled."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not anns:
        return None
    truth = [a for a in anns if a.get("ground_truth")]
    pool = truth or anns
    return max(pool, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))


def _labels_of(value: dict, key: str) -> tuple[str, ...]:
    labs = value.get(key) or []
    if isinstance(labs, str):
        labs = [labs]
    return tuple(dict.fromkeys(str(x).strip() for x in labs if str(x).strip()))


def rectangle_spans(value: dict, frame_count: int | None) -> list[tuple[int, int]]:
    """1-based inclusive frame spans where a ``videorectangle`` track is shown."""
    seq = sorted((s for s in value.get("sequence") or [] if isinstance(s, dict) and "frame" in s),
                 key=lambda s: int(s["frame"]))
    last_frame = int(value.get("framesCount") or frame_count or (int(seq[-1]["frame"]) if seq else 0))
    spans: list[tuple[int, int]] = []
    open_at: int | None = None
    for s in seq:
        f = int(s["frame"])
        if open_at is None:
            open_at = f
        if s.get("enabled", True) is False:
            spans.append((open_at, f))
            open_at = None
    if open_at is not None:
        spans.append((open_at, max(open_at, last_frame)))
    return spans


def read_labelstudio(path: Path, root: Path) -> ImportResult:
    res = ImportResult(source=str(path), format="labelstudio")
    clock = FrameClock()
    for i, task in enumerate(load_tasks(path)):
        where = f"task {task.get('id', i)}"
        ann = chosen_annotation(task)
        if ann is None:
            res.notes.append(f"{where}: no annotation (skipped)")
            continue
        ref = task_media(task)
        video, reason = resolve_media(ref or "", root)
        if video is None:
            res.missing.append(Missing(ref=ref or where, reason=reason))
            continue
        whole: list[str] = []
        spans: dict[tuple[int, int], list[str]] = defaultdict(list)
        for r in ann.get("result") or []:
            if not isinstance(r, dict):
                continue
            value = r.get("value") or {}
            kind = r.get("type")
            if kind == "choices":
                whole.extend(_labels_of(value, "choices"))
            elif kind in ("timelinelabels", "timeserieslabels") or "timelinelabels" in value:
                labs = _labels_of(value, "timelinelabels")
                for rng in value.get("ranges") or []:
                    try:
                        a, b = int(rng["start"]), int(rng["end"])
                    except (KeyError, TypeError, ValueError):
                        raise DatasetError(f"{path}: {where}: a timeline range needs whole frame numbers "
                                           f"start and end, got {rng!r}") from None
                    for lab in labs:
                        spans[(min(a, b), max(a, b))].append(lab)
            elif kind == "videorectangle":
                labs = _labels_of(value, "labels") or _labels_of(value, "rectanglelabels")
                if not labs:
                    continue
                for a, b in rectangle_spans(value, clock.frame_count(video)):
                    for lab in labs:
                        spans[(a, b)].append(lab)
        if whole:
            res.items.append(VideoItem(path=video, label=LABEL_SEP.join(dict.fromkeys(whole))))
        for (a, b), labs in sorted(spans.items()):
            try:
                start, end = clock.span(video, a - 1, b - 1)  # Label Studio counts frames from 1
            except DatasetError as exc:
                res.missing.append(Missing(ref=ref, reason=str(exc)))
                break
            res.items.append(VideoItem(path=video, label=LABEL_SEP.join(dict.fromkeys(labs)), start=start, end=end))
        if not whole and not spans:
            res.notes.append(f"{where}: the annotation holds no choices, timeline labels or labelled tracks")
    return res
