"""Labels made in other tools, read as vidtune manifests: what the Label Studio and CVAT readers share.

A labelling tool names its media by URL or file name and its segments by frame number. Here the
media become files under a media root (each file that cannot be found is reported with its reason,
never dropped silently) and frame numbers become seconds on the video's own clock: frame ``n`` starts
at the presentation time of the ``n``-th decoded frame (from the packet headers, so variable frame
rate files are timed right), and a segment ends where the frame after its last one starts.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from vidtune.data.items import LABEL_SEP, VideoItem, parse_labels
from vidtune.errors import DatasetError, VidtuneError

log = logging.getLogger(__name__)

FORMATS = ("labelstudio", "cvat")
_SNIFF_BYTES = 4096


@dataclass
class Missing:
    """A media reference of the export that names no readable file, and why."""

    ref: str
    reason: str

    def to_dict(self) -> dict:
        return {"ref": self.ref, "reason": self.reason}


@dataclass
class ImportResult:
    """Rows read from another tool's export, the media it names that were not found, and notes."""

    source: str
    format: str
    items: list[VideoItem] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def multilabel(self) -> bool:
        return any(LABEL_SEP in it.label for it in self.items)

    def classes(self) -> list[str]:
        return sorted({lab for it in self.items for lab in parse_labels(it.label)})


def sniff_format(path) -> str | None:
    """``"labelstudio"`` or ``"cvat"`` when ``path`` holds such an export (judged by its content, not
    its name); None for anything else (a vidtune manifest, a folder)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                return "cvat" if any(n.endswith("annotations.xml") for n in z.namelist()) else None
        with open(p, "rb") as f:
            head = f.read(_SNIFF_BYTES)
    except OSError:
        return None
    text = head.decode("utf-8-sig", errors="replace").lstrip()
    if text.startswith("<") and "<annotations" in text:
        return "cvat"
    if text.startswith("["):
        inner = text[1:].lstrip()
        if inner.startswith("]") or (inner.startswith("{") and re.search(r'"(annotations|data|predictions)"\s*:', text)):
            return "labelstudio"
    if text.startswith("{") and re.search(r'"annotations"\s*:\s*\[', text) and re.search(r'"data"\s*:', text):
        return "labelstudio"  # one task on its own
    return None


# -- media references -> files ---------------------------------------------------------------------
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-", re.IGNORECASE)


def media_candidates(ref: str, root: Path) -> list[Path]:
    """Files a media reference may mean, most likely first.

    ``/data/local-files/?d=rel/a.mp4`` -> ``root/rel/a.mp4``; ``/data/upload/3/1a2b3c4d-a.mp4`` ->
    ``root/3/1a2b3c4d-a.mp4``, ``root/upload/3/...``, ``root/1a2b3c4d-a.mp4``, ``root/a.mp4`` (Label Studio
    prefixes uploads with 8 hex digits); URLs (``http(s)://``, ``s3://``, ``gs://``) -> their path under
    ``root``, then their file name; plain paths as given (relative ones under ``root``), then by name.
    """
    ref = ref.strip()
    url = urlparse(ref)
    out: list[Path] = []

    def add(p) -> None:
        p = Path(p)
        if p not in out:
            out.append(p)

    if url.path.rstrip("/").endswith("/data/local-files") or "local-files" in url.path and url.query:
        d = parse_qs(url.query).get("d")
        if d:
            rel = unquote(d[0]).lstrip("/")
            add(root / rel)
            add(root / Path(rel).name)
        return out
    if "/data/upload/" in url.path:
        rel = unquote(url.path.split("/data/upload/", 1)[1]).lstrip("/")
        name = Path(rel).name
        add(root / rel)
        add(root / "upload" / rel)
        add(root / name)
        if _UPLOAD_PREFIX.match(name):
            add(root / _UPLOAD_PREFIX.sub("", name))
        return out
    if url.scheme in ("http", "https", "s3", "gs", "azure-blob", "gcs") and url.path:
        rel = unquote(url.path).lstrip("/")
        add(root / rel)
        add(root / Path(rel).name)
        return out
    p = Path(unquote(ref) if url.scheme == "file" else ref)
    if url.scheme == "file":
        p = Path(unquote(url.path))
    add(p if p.is_absolute() else root / p)
    add(root / p.name)
    return out


def resolve_media(ref, root: Path) -> tuple[Path | None, str]:
    """``(file, "")`` for the first candidate that is a readable regular file, else ``(None, reason)``."""
    if not isinstance(ref, str) or not ref.strip():
        return None, "the task names no media (empty video field)"
    tried = media_candidates(ref, root)
    for p in tried:
        if p.is_file() and os.access(p, os.R_OK):
            return p, ""
    shown = ", ".join(str(p) for p in tried[:4])
    return None, f"not found under {root} (tried {shown}); pass the folder holding it with --media-root"


# -- frame numbers -> seconds ------------------------------------------------------------------------
class FrameClock:
    """Frame numbers to seconds on each video's own clock (cached per file).

    Times come from the packet headers of the video stream (no decoding), relative to its first frame,
    as everywhere in vidtune; variable frame rate files get each frame's true time.
    """

    def __init__(self):
        self._times: dict[str, list[float]] = {}

    def times(self, path) -> list[float]:
        key = str(path)
        if key not in self._times:
            from vidtune.io import open_video

            try:
                with open_video(path) as reader:
                    times = reader.frame_times()
            except VidtuneError as exc:
                raise DatasetError(f"{path}: cannot read its frame times to place the labelled frames "
                                   f"({getattr(exc, 'reason', exc)})") from None
            if not times:
                raise DatasetError(f"{path}: the video stream has no frames, so frame numbers cannot be placed")
            self._times[key] = times
        return self._times[key]

    def frame_count(self, path) -> int:
        return len(self.times(path))

    def span(self, path, first: int, last: int) -> tuple[float, float]:
        """Seconds covered by frames ``first..last`` (0-based, inclusive), clamped to the video."""
        t = self.times(path)
        n = len(t)
        first = min(max(int(first), 0), n - 1)
        last = min(max(int(last), first), n - 1)
        start = t[first]
        if last + 1 < n:
            end = t[last + 1]
        else:  # the last frame lasts as long as the one before it
            step = (t[-1] - t[-2]) if n > 1 else 1 / 25
            end = t[-1] + max(step, 1e-3)
        return round(start, 6), round(max(end, start + 1e-3), 6)

    def frame_at(self, path, seconds: float) -> int:
        """The 0-based number of the frame shown at ``seconds``."""
        import bisect

        t = self.times(path)
        return max(0, bisect.bisect_right(t, float(seconds) + 1e-6) - 1)


def merge_runs(frames: dict[int, tuple[str, ...]]) -> list[tuple[int, int, tuple[str, ...]]]:
    """Consecutive frames with the same labels merged: ``[(first, last, labels)]`` (frames without labels
    break runs)."""
    runs: list[tuple[int, int, tuple[str, ...]]] = []
    for f in sorted(frames):
        labels = frames[f]
        if not labels:
            continue
        if runs and runs[-1][2] == labels and runs[-1][1] == f - 1:
            runs[-1] = (runs[-1][0], f, labels)
        else:
            runs.append((f, f, labels))
    return runs


def seconds_text(t: float | None) -> str:
    """Seconds for a manifest cell: microsecond precision, no trailing zeros; ``""`` for None."""
    if t is None:
        return ""
    return f"{float(t):.6f}".rstrip("0").rstrip(".") or "0"


def manifest_text(items: list[VideoItem], base: Path) -> str:
    """A vidtune CSV manifest ``path,label,start,end,group``, paths relative to ``base`` (the manifest's
    folder, or the working folder for one printed)."""
    import csv
    import io

    base = Path(base).resolve()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label", "start", "end", "group"])
    for it in items:
        p = Path(it.path).resolve()
        try:
            shown = os.path.relpath(p, base)
        except ValueError:  # another drive (Windows)
            shown = str(p)
        w.writerow([shown, it.label, seconds_text(it.start), seconds_text(it.end), it.group or ""])
    return buf.getvalue()


def write_manifest(path, items: list[VideoItem]) -> None:
    """:func:`manifest_text` written atomically to ``path`` (paths relative to its folder)."""
    from vidtune.utils import atomic_write_text

    atomic_write_text(path, manifest_text(items, Path(path).resolve().parent))
