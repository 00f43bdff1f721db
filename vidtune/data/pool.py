"""Unlabelled clips: a folder of videos, a manifest whose ``label`` column is optional (and ignored),
or video files. ``start``/``end`` segments of a manifest are kept; a file without them is one clip."""

from __future__ import annotations

from pathlib import Path

from vidtune.data.external import sniff_format
from vidtune.data.manifest import MANIFEST_SUFFIXES, VideoItem, load_unlabelled, walk_videos
from vidtune.errors import DatasetError


def load_pool(sources) -> list[VideoItem]:
    """Unlabelled clips from ``sources`` (one path or several): folders are searched recursively, a
    ``.csv``/``.jsonl`` (or a Label Studio / CVAT export) is read as a manifest (labels dropped), anything
    else is a video file.
    Duplicates (same file and segment) are kept once, in first-seen order."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    items: list[VideoItem] = []
    for src in map(Path, sources):
        if not src.exists():
            raise DatasetError(f"unlabelled pool not found: {src}. Pass a folder of videos, a .csv/.jsonl manifest "
                               "(path column; label optional) or video files")
        if src.is_dir():
            found = walk_videos(src)
            if not found:
                raise DatasetError(f"{src}: folder holds no video files")
            items += [VideoItem(path=p, label="") for p in found]
        elif src.suffix.lower() in MANIFEST_SUFFIXES or sniff_format(src) is not None:  # also LS / CVAT exports
            items += [VideoItem(path=it.path, label="", start=it.start, end=it.end, group=it.group)
                      for it in load_unlabelled(src)]
        else:
            items.append(VideoItem(path=src, label=""))
    seen, out = set(), []
    for it in items:
        if it.key() not in seen:
            seen.add(it.key())
            out.append(it)
    return out
