"""Datasets as lists of :class:`VideoItem`: from a folder per class or a CSV/JSONL manifest.

Manifest columns: ``path,label`` required; ``split`` (train/val/test), ``start`` and ``end``
(seconds) and ``group`` (the source a clip shares with others: splits never divide a group; default:
the file) optional. Relative paths resolve against the manifest's folder. Several labels in one
cell are separated by ``|`` (multi-label tasks: see :func:`parse_labels`); in a multi-label manifest
an empty cell means "no positive label".
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vidtune.data.items import (  # noqa: F401  (re-exported: the manifest API)
    LABEL_SEP,
    VideoItem,
    canonical_label,
    is_multilabel,
    item_labels,
    parse_labels,
)
from vidtune.errors import DatasetError
from vidtune.io.base import is_video_path

VIDEO_EXTENSIONS_SHOWN = (".mp4", ".mkv", ".webm", ".avi", ".mov")

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "dev": "val", "testing": "test", "eval": "test"}
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
def load_dataset(source, multilabel: bool | None = None) -> list[VideoItem]:
    """Read a dataset folder (one sub-folder per class), a manifest file, or a Label Studio / CVAT export.

    Exports are recognised by their content (see :mod:`vidtune.data.external`); their media are looked
    up under the export's folder, or under ``$VIDTUNE_MEDIA_ROOT`` when it is set.

    An empty label is an error unless the manifest is multi-label (a row with ``|``, or
    ``multilabel=True``), where it means "no positive label".
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"dataset not found: {source}. Pass a folder with one sub-folder per class, "
                           "or a .csv/.jsonl manifest with path,label columns.")
    notes = _Notes()
    from vidtune.data.exports import items_from_export
    from vidtune.data.external import sniff_format

    if source.is_dir():
        items = _from_folder(source)
    elif sniff_format(source) is not None:  # a Label Studio or CVAT export, recognised by its content
        items = items_from_export(source, media_root=os.environ.get("VIDTUNE_MEDIA_ROOT") or None)
        notes.multi = is_multilabel(items)
    elif source.suffix.lower() in MANIFEST_SUFFIXES:
        items = _from_jsonl(source, notes) if source.suffix.lower() != ".csv" else _from_csv(source, notes)
    else:
        raise DatasetError(f"{source}: not a folder or a manifest (.csv, .jsonl). "
                           "To classify single videos use `vidtune predict`.")
    if not items:
        raise DatasetError(f"{source}: no videos found. Expected one sub-folder per class holding video files "
                           f"({', '.join(sorted({'.mp4', '.mkv', '.webm', '.avi', '.mov'}))}, ...), or manifest rows.")
    if notes.empty and not multilabel and not notes.multi:
        raise DatasetError(f"{notes.empty[0]}: empty label. Give every row a label (an empty label means \"no label\" "
                           f"only in a multi-label manifest, whose label cells hold labels separated by |)")
    return _dedupe(items, source)


def _dedupe(items: list[VideoItem], source: Path) -> list[VideoItem]:
    seen: dict[tuple, VideoItem] = {}
    for it in items:
        prev = seen.get(it.key())
        if prev is None:
            seen[it.key()] = it
        elif prev.label != it.label and set(parse_labels(prev.label)) != set(parse_labels(it.label)):
            raise DatasetError(f"{source}: {it.path} appears with two labels ({prev.label!r} and {it.label!r})")
        else:
            log.warning("%s: duplicate row for %s ignored", source, it.path)
    return list(seen.values())


def walk_videos(folder: Path) -> list[Path]:
    """Video files under ``folder``, following symlinks but never looping."""
    found = []
    visited = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and is_video_path(f):
                found.append(Path(root) / f)
    return found


def _from_folder(folder: Path) -> list[VideoItem]:
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{folder}: no class sub-folders. Put each class's videos in its own sub-folder, "
                           f"e.g. {folder}/cat/a.mp4, {folder}/dog/b.mp4")
    items = []
    for d in classes:
        vids = walk_videos(d)
        if not vids:
            raise DatasetError(f"{d}: class folder has no video files ({', '.join(sorted(VIDEO_EXTENSIONS_SHOWN))}, ...); "
                               "add videos or remove the folder")
        items.extend(VideoItem(path=p, label=d.name) for p in vids)
    return _one_label_per_file(items)


def _one_label_per_file(items: list[VideoItem]) -> list[VideoItem]:
    """Symlinks can make one file appear under two class folders: that would train it under two labels
    (refused), or twice under one (the second copy dropped with a warning)."""
    first: dict[str, VideoItem] = {}
    kept = []
    for it in items:
        real = os.path.realpath(it.path)
        prev = first.setdefault(real, it)
        if prev is it:
            kept.append(it)
        elif prev.label != it.label:
            raise DatasetError(f"{prev.path} (class {prev.label!r}) and {it.path} (class {it.label!r}) are the same "
                               f"file ({real}, reached through a symlink): one file cannot have two labels. Remove "
                               "the link from the wrong class folder (or use a manifest with |-separated labels "
                               "for a multi-label task)")
        else:
            log.warning("%s is the same file as %s (a symlink); counted once", it.path, prev.path)
    return kept


@dataclass
class _Notes:
    """What a manifest reader saw besides its items."""

    empty: list[str] = field(default_factory=list)  # file:line of rows with no label
    multi: bool = False  # some row's label cell is a list or holds a |


def _parse_row(row: dict, where: str, base: Path, notes: _Notes) -> VideoItem:
    path = row.get("path")
    if path is not None and not isinstance(path, str):
        raise DatasetError(f"{where}: path must be a string, got {path!r}")
    path = (path or "").strip()
    label = row.get("label")
    if isinstance(label, list):  # JSONL: a list of labels
        notes.multi = True
        label = LABEL_SEP.join(str(x) for x in label)
    label = "" if label is None else str(label)
    notes.multi = notes.multi or LABEL_SEP in label
    label = canonical_label(label)
    if not path:
        raise DatasetError(f"{where}: empty path")
    if not label:
        notes.empty.append(where)
    split = (row.get("split") or "")
    split = str(split).strip().lower() or None
    if split is not None:
        split = _SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise DatasetError(f"{where}: split must be one of {', '.join(SPLITS)}, got {row.get('split')!r}")
    times = {}
    for k in ("start", "end"):
        v = row.get(k)
        if v is None or (isinstance(v, str) and not v.strip()):
            times[k] = None
            continue
        try:
            times[k] = float(v)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: {k} must be a number of seconds, got {v!r}") from None
        if not math.isfinite(times[k]):
            raise DatasetError(f"{where}: {k} must be a finite number of seconds, got {v!r}")
        if times[k] < 0:
            raise DatasetError(f"{where}: {k} must be >= 0, got {v!r}")
    if times["start"] is not None and times["end"] is not None and times["end"] <= times["start"]:
        raise DatasetError(f"{where}: end ({times['end']}) must be after start ({times['start']})")
    group = row.get("group")
    group = None if group is None or not str(group).strip() else str(group).strip()
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = base / p
    return VideoItem(path=p, label=label, split=split, start=times["start"], end=times["end"], group=group)


def _read_text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None


def _from_csv(path: Path, notes: _Notes, required: tuple[str, ...] = ("path", "label")) -> list[VideoItem]:
    reader = csv.DictReader(_read_text_lines(path))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    missing = [c for c in required if c not in cols]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; found {cols or 'no header'}. "
                           "The first line must be a header such as: path,label,split,start,end")
    reader.fieldnames = cols
    items = []
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        items.append(_parse_row(row, f"{path}:{reader.line_num}", path.parent, notes))
    return items


def _from_jsonl(path: Path, notes: _Notes, required: tuple[str, ...] = ("path", "label")) -> list[VideoItem]:
    items = []
    for i, line in enumerate(_read_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{i}: invalid JSON ({exc.msg}); each line must be one object") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{i}: each line must be a JSON object with " + " and ".join(required))
        missing = [c for c in required if c not in row]
        if missing:
            raise DatasetError(f"{path}:{i}: missing key(s) {', '.join(missing)}")
        items.append(_parse_row(row, f"{path}:{i}", path.parent, notes))
    return items


def load_unlabelled(source) -> list[VideoItem]:
    """The rows of a manifest whose ``label`` column is optional (a pool of clips to label): ``path``
    required, ``start``/``end``/``split``/``group`` honoured as in :func:`load_dataset`, labels kept as
    given (empty when absent). A Label Studio or CVAT export is read as its labelled rows. Repeated rows
    (same path and span) are kept once."""
    from vidtune.data.exports import items_from_export
    from vidtune.data.external import sniff_format

    source = Path(source)
    if source.is_file() and sniff_format(source) is not None:
        items = items_from_export(source, media_root=os.environ.get("VIDTUNE_MEDIA_ROOT") or None)
    else:
        if not source.is_file() or source.suffix.lower() not in MANIFEST_SUFFIXES:
            raise DatasetError(f"{source}: not a manifest file (.csv, .jsonl)")
        notes = _Notes()
        reader = _from_csv if source.suffix.lower() == ".csv" else _from_jsonl
        items = reader(source, notes, required=("path",))
    seen: dict[tuple, VideoItem] = {}
    for it in items:
        seen.setdefault(it.key(), it)
    return list(seen.values())


def label_counts(items: list[VideoItem]) -> Counter:
    return Counter(it.label for it in items)


def median_clip_seconds(items: list[VideoItem], sample: int = 32) -> float | None:
    """Median length in seconds of up to ``sample`` evenly spread clips (their start/end, else the
    video's duration from its header); None when none can be measured. A run's clip length, and the
    default window ``vidtune tag`` slides over long videos."""
    from statistics import median

    from vidtune.errors import VidtuneError
    from vidtune.io import probe

    lengths = []
    for it in items[:: max(1, len(items) // sample)][:sample]:
        start = float(it.start or 0.0)
        if it.end is not None:
            end = float(it.end)
        else:
            try:
                end = float(probe(it.path, scan_packets=False).duration)
            except VidtuneError:
                continue
        if end - start > 0:
            lengths.append(end - start)
    return round(float(median(lengths)), 3) if lengths else None


def expand_video_args(videos) -> list[Path]:
    """Video paths from arguments: files as given (even with odd extensions), folders searched recursively."""
    paths: list[Path] = []
    for v in videos:
        p = Path(v)
        if p.is_dir():
            found = walk_videos(p)
            if not found:
                raise DatasetError(f"{p}: folder holds no video files")
            paths.extend(found)
        else:
            paths.append(p)
    return paths
