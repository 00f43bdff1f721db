"""A pool of unlabelled clips: what ``vidtune suggest`` ranks and the Label page queues.

A pool comes from a folder (every video under it, recursively), a manifest (CSV/JSONL with a ``path``
column; ``label`` is optional and ignored; ``start``/``end`` segments are honoured) or video files.
Videos without a segment that are longer than one clip are cut into consecutive clips of
``clip_seconds`` (a run's training clip length, else :data:`DEFAULT_CLIP_SECONDS`), so a ten-minute
recording becomes several things to label, not one. Files that cannot be opened are skipped and
reported, never fatal.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vidtune.data.manifest import VideoItem, load_unlabelled
from vidtune.data.pool import load_pool as load_video_items
from vidtune.errors import DatasetError, VideoDecodeError, VidtuneError

log = logging.getLogger(__name__)

DEFAULT_CLIP_SECONDS = 2.0  # clip length when no run says otherwise (the length sample-data and embed use)
LONG_FACTOR = 1.5  # a video longer than this many clips is cut into clips


@dataclass(frozen=True)
class PoolItem:
    """One clip to label: a whole file (``start``/``end`` None) or a span of it in seconds."""

    path: str
    start: float | None = None
    end: float | None = None

    @property
    def key(self) -> str:
        """A stable string id: the path, plus ``#start-end`` (milliseconds) for a segment."""
        if self.start is None and self.end is None:
            return self.path
        return f"{self.path}#{_ms(self.start)}-{_ms(self.end)}"

    def to_video_item(self, label: str = "") -> VideoItem:
        return VideoItem(path=Path(self.path), label=label, start=self.start, end=self.end)

    def to_dict(self) -> dict:
        return {"path": self.path, "start": self.start, "end": self.end}


def _ms(t: float | None) -> str:
    return "" if t is None else str(int(round(float(t) * 1000)))


def _sources(sources) -> list:
    if isinstance(sources, (str, os.PathLike)):
        return [sources]
    return list(sources)


def load_pool(sources, clip_seconds: float | None = None, *, skipped: list[dict] | None = None) -> list[PoolItem]:
    """The clips of ``sources`` (a folder, a manifest, video files, or a list of them), in a stable order
    without repeats.

    ``clip_seconds``: the length long unsegmented videos are cut to (default
    :data:`DEFAULT_CLIP_SECONDS`). ``skipped``: a list that receives ``{"path", "reason"}`` for every
    file that could not be opened (they are also logged). Raises :class:`DatasetError` when a source
    does not exist or nothing is left.
    """
    clip = float(clip_seconds) if clip_seconds else DEFAULT_CLIP_SECONDS
    if not math.isfinite(clip) or clip <= 0:
        raise DatasetError(f"clip length must be a positive number of seconds, got {clip_seconds!r}")
    skipped = [] if skipped is None else skipped
    srcs = _sources(sources)
    if not srcs:
        raise DatasetError("no pool given: pass a folder of videos, a manifest (.csv/.jsonl) or video files")
    items: list[PoolItem] = []
    for src in srcs:
        if isinstance(src, PoolItem):
            items.append(src)
            continue
        if isinstance(src, VideoItem):
            items.extend(_cut(src.path, src.start, src.end, clip, skipped))
            continue
        for it in load_video_items([src]):  # a folder, a manifest or an export, or a video file
            items.extend(_cut(it.path, it.start, it.end, clip, skipped))
    seen: dict[str, PoolItem] = {}
    for it in items:
        seen.setdefault(it.key, it)
    if not seen:
        raise DatasetError(f"no readable clips in the pool ({len(skipped)} file(s) skipped, e.g. "
                           f"{skipped[0]['path']}: {skipped[0]['reason']})" if skipped else "the pool is empty")
    return list(seen.values())


def clip_spans(duration: float, clip: float) -> list[tuple[float, float]]:
    """Consecutive ``clip``-second spans covering ``duration`` (the last one ends at the end; a tail
    shorter than half a clip is left out). A video up to ``LONG_FACTOR`` clips long is one span."""
    if duration <= clip * LONG_FACTOR:
        return [(0.0, duration)]
    n = int(duration // clip)
    spans = [(round(i * clip, 3), round((i + 1) * clip, 3)) for i in range(n)]
    if duration - n * clip >= clip / 2:
        spans.append((round(duration - clip, 3), round(duration, 3)))
    return spans


def _cut(path, start, end, clip: float, skipped: list[dict]) -> list[PoolItem]:
    """A segment as given, or a whole file (probed: cut into clips when long; unreadable: skipped).
    Paths are made absolute (ids must not depend on the working folder), symlinks kept."""
    path = Path(os.path.abspath(path))
    if start is not None or end is not None:
        return [PoolItem(str(path), start, end)]
    from vidtune.io import probe

    try:
        duration = float(probe(path, scan_packets=False).duration or 0.0)
    except VideoDecodeError as exc:
        _skip(skipped, path, exc.reason)
        return []
    except VidtuneError as exc:
        _skip(skipped, path, str(exc))
        return []
    except OSError as exc:
        _skip(skipped, path, f"cannot read file ({exc.strerror or exc})")
        return []
    spans = clip_spans(duration, clip) if duration > 0 else [(0.0, 0.0)]
    if len(spans) == 1:
        return [PoolItem(str(path))]
    return [PoolItem(str(path), a, b) for a, b in spans]


def _skip(skipped: list[dict], path, reason: str) -> None:
    log.warning("skipping %s: %s", path, reason)
    skipped.append({"path": str(path), "reason": reason})


def held_spans(labeled) -> dict[str, list[tuple[float, float]]]:
    """``labeled`` (PoolItems, VideoItems, or a manifest / folder path) as spans per real file path."""
    if labeled is None:
        return {}
    if isinstance(labeled, (str, os.PathLike)):
        p = Path(labeled)
        if not p.exists():
            raise DatasetError(f"labelled set not found: {p}. Pass the manifest (or class folders) of the clips "
                               "already labelled")
        if p.is_dir():
            from vidtune.data.manifest import load_dataset

            labeled = load_dataset(p)
        else:
            labeled = load_unlabelled(p)
    out: dict[str, list[tuple[float, float]]] = {}
    for it in labeled:
        if isinstance(it, (str, os.PathLike)):
            it = PoolItem(str(it))
        real = os.path.realpath(str(it.path))
        a = 0.0 if it.start is None else float(it.start)
        b = math.inf if it.end is None else float(it.end)
        out.setdefault(real, []).append((a, b))
    return out


def is_held(item: PoolItem, held: dict[str, list[tuple[float, float]]]) -> bool:
    """Whether a labelled span covers at least half of ``item`` (the same clip, or its whole file)."""
    spans = held.get(os.path.realpath(item.path))
    if not spans:
        return False
    a = 0.0 if item.start is None else float(item.start)
    b = math.inf if item.end is None else float(item.end)
    for s, e in spans:
        if (s, e) == (a, b):
            return True
        overlap = min(b, e) - max(a, s)
        length = b - a
        if math.isinf(length):  # a whole file against a segment: held only by a whole-file label
            if math.isinf(e) and s <= a:
                return True
            continue
        if overlap >= 0.5 * length:
            return True
    return False


def pool_items(pool: Iterable, clip_seconds: float | None = None, skipped: list[dict] | None = None) -> list[PoolItem]:
    """``pool`` as PoolItems: a list of PoolItems as it is, anything else through :func:`load_pool`."""
    if isinstance(pool, (list, tuple)) and pool and all(isinstance(p, PoolItem) for p in pool):
        return list(pool)
    return load_pool(pool, clip_seconds, skipped=skipped)
