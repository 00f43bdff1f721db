"""CVAT XML exports, read as vidtune manifest rows.

- "CVAT for video 1.1": each ``<track label=...>`` becomes the spans of frames where its shapes are shown
  (``outside="0"``; a shape with ``outside="1"`` ends the span before its frame), and frame-level
  ``<tag frame=... label=...>`` elements become segments (consecutive frames with the same tags merged).
- "CVAT for images 1.1" of a video task: the ``<tag>`` elements of each ``<image id=...>`` (the frame
  number) become segments the same way.

Frame numbers are the task's: frame ``f`` is video frame ``start_frame + f * step`` (``<start_frame>`` and
``<frame_filter>step=N</frame_filter>`` of the task's meta). The video is the task's ``<source>`` (or
``--video``), found under the media root. ZIP exports (``annotations.xml`` inside) are read as they are.
Parsed with defusedxml: entity expansion and external entities are refused.
"""

from __future__ import annotations

import re
import zipfile
from collections import defaultdict
from pathlib import Path

from vidtune.data.external import FrameClock, ImportResult, Missing, merge_runs, resolve_media
from vidtune.data.items import LABEL_SEP, VideoItem
from vidtune.errors import DatasetError


def _parse(path: Path):
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("annotations.xml")]
                if not names:
                    raise DatasetError(f"{path}: ZIP without annotations.xml; export from CVAT as 'CVAT for "
                                       "video 1.1' or 'CVAT for images 1.1'")
                with z.open(sorted(names, key=len)[0]) as f:
                    return ElementTree.parse(f).getroot()
        return ElementTree.parse(str(path)).getroot()
    except DefusedXmlException as exc:
        raise DatasetError(f"{path}: refused XML ({exc.__class__.__name__}: entity declarations are not read)") from None
    except (ElementTree.ParseError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{path}: not valid CVAT XML ({exc})") from None


def _meta_text(root, *names: str) -> str | None:
    for name in names:
        for el in root.iter(name):
            if el.text and el.text.strip():
                return el.text.strip()
    return None


def frame_mapping(root) -> tuple[int, int]:
    """``(start_frame, step)`` of the task (0 and 1 when the meta does not say)."""
    meta = root.find("meta")
    start, step = 0, 1
    if meta is not None:
        s = _meta_text(meta, "start_frame")
        if s and s.isdigit():
            start = int(s)
        flt = _meta_text(meta, "frame_filter") or ""
        m = re.search(r"step\s*=\s*(\d+)", flt)
        if m and int(m.group(1)) > 0:
            step = int(m.group(1))
    return start, step


def source_name(root) -> str | None:
    meta = root.find("meta")
    if meta is None:
        return None
    src = _meta_text(meta, "source")
    if src:
        return src
    name = _meta_text(meta, "name")
    if name and Path(name).suffix.lower() in (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg"):
        return name
    return None


def task_size(root) -> int | None:
    """Frames in the task (``<size>`` of its meta), if stated."""
    meta = root.find("meta")
    s = _meta_text(meta, "size") if meta is not None else None
    return int(s) if s and s.isdigit() and int(s) > 0 else None


def track_spans(track, size: int | None = None) -> list[tuple[int, int]]:
    """Inclusive task-frame spans where a track's shapes are shown. A track that is never put outside
    after its last shape stays shown to the task's last frame (``size - 1``), as CVAT interpolates it."""
    shapes = sorted(((int(el.get("frame")), el.get("outside", "0") == "1") for el in track
                     if el.get("frame") is not None), key=lambda x: x[0])
    spans, open_at, last = [], None, None
    for f, outside in shapes:
        if outside:
            if open_at is not None:
                spans.append((open_at, f - 1))
                open_at = None
        elif open_at is None:
            open_at = f
        last = f
    if open_at is not None:
        spans.append((open_at, max(last, size - 1) if size else last))
    return [(a, b) for a, b in spans if b >= a]


def read_cvat(path: Path, root_dir: Path, video=None) -> ImportResult:
    root = _parse(path)
    if root.tag != "annotations":
        raise DatasetError(f"{path}: the root element is <{root.tag}>, not <annotations> (a CVAT XML export)")
    res = ImportResult(source=str(path), format="cvat")
    ref = str(video) if video is not None else source_name(root)
    if ref is None:
        raise DatasetError(f"{path}: the export does not name its video (no <source> in its meta); pass the video "
                           "file with --video")
    file, reason = (Path(video), "") if video is not None and Path(video).is_file() else resolve_media(ref, root_dir)
    if file is None:
        res.missing.append(Missing(ref=ref, reason=reason))
        return res
    start_frame, step = frame_mapping(root)
    size = task_size(root)
    clock = FrameClock()

    def seconds(first: int, last: int) -> tuple[float, float]:
        return clock.span(file, start_frame + first * step, start_frame + last * step + (step - 1))

    spans: dict[tuple[int, int], list[str]] = defaultdict(list)
    for track in root.iter("track"):
        label = (track.get("label") or "").strip()
        if not label:
            continue
        for a, b in track_spans(track, size):
            spans[(a, b)].append(label)
    tags: dict[int, list[str]] = defaultdict(list)
    for tag in root.findall("tag"):  # video format: frame-level tags at the top level
        if tag.get("frame") is not None and (tag.get("label") or "").strip():
            tags[int(tag.get("frame"))].append(tag.get("label").strip())
    for image in root.iter("image"):  # images format: tags inside each frame
        fid = image.get("id")
        if fid is None:
            continue
        for tag in image.iter("tag"):
            if (tag.get("label") or "").strip():
                tags[int(fid)].append(tag.get("label").strip())
    for a, b, labs in merge_runs({f: tuple(sorted(set(v))) for f, v in tags.items()}):
        spans[(a, b)].extend(labs)
    for (a, b), labs in sorted(spans.items()):
        start, end = seconds(a, b)
        res.items.append(VideoItem(path=file, label=LABEL_SEP.join(dict.fromkeys(labs)), start=start, end=end))
    if not spans:
        res.notes.append(f"{path}: no labelled tracks or tags")
    return res
