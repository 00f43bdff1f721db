"""A crash-safe record of labelling: an append-only journal mirrored into a vidtune manifest.

Why a journal of JSON lines rather than SQLite: every acknowledged action is one line written with
``O_APPEND`` and ``fsync``'d before the caller is told it is saved, so a ``kill -9`` (or a power cut)
can at worst tear the one line that was never acknowledged; that torn tail is detected (each line
carries a CRC-32 of its content) and cut off when the journal is opened again. The file is plain text
a person can read, diff and back up, needs no schema migration, and one fsync per label costs about as
much as an SQLite commit. Undo is an action too (never an edit in place), so the history stays
complete.

The manifest (``path,label,start,end``, readable by ``vidtune train``) is derived from the journal
and rewritten atomically (temporary file, fsync, rename) after every action and when the journal is
opened, so a crash between the journal write and the rename is repaired at the next start: the
journal is the source of truth. A manifest edited by hand since the journal last wrote it is never
overwritten silently (:class:`JournalError`).

One process at a time: the journal is locked (``fcntl.flock``) while open.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from vidtune.errors import JournalError, LabelConflictError, VidtuneError  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

FORMAT = "vidtune-label-journal"
VERSION = 1
OPS = ("label", "skip", "undo")


@dataclass(frozen=True)
class Clip:
    """A span of a video: what a label is attached to. ``key`` is its stable id (see :func:`clip_key`)."""

    key: str
    path: str  # absolute
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Entry:
    """An action in force: ``op`` is ``label`` (with ``label``) or ``skip``; ``seq`` orders them."""

    seq: int
    op: str
    clip: Clip
    label: str | None
    time: float


def clip_key(path, start: float | None, end: float | None) -> str:
    """A short id of a clip that is the same in every process (a hash of its absolute path and span)."""
    import hashlib

    text = f"{os.path.abspath(os.fspath(path))}\0{_num(start)}\0{_num(end)}"
    return "l" + hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _num(x) -> str:
    return "" if x is None else repr(round(float(x), 6))


def _crc(record: dict) -> int:
    body = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return zlib.crc32(body.encode("utf-8", "surrogateescape"))


def _line(record: dict) -> bytes:
    rec = dict(record)
    rec["crc"] = _crc(record)
    return (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def journal_path(manifest) -> Path:
    """Where the journal of a manifest lives: beside it, ``labels.csv`` -> ``labels.csv.journal``."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name + ".journal")


class LabelJournal:
    """Labels and skips of clips, kept in ``path`` (append-only) and mirrored into ``manifest``.

    Thread-safe: one lock orders the appends and the manifest rewrites, so the manifest always shows
    the state after the latest acknowledged action. ``classes`` (when given) is the closed set of labels
    this journal accepts; a journal or manifest holding other labels is refused at open.
    """

    def __init__(self, path, manifest=None, classes=None):
        from vidtune.utils import hold_lock

        self.path = Path(path)
        self.manifest = Path(manifest) if manifest is not None else None
        self.classes = tuple(classes) if classes is not None else None
        self._lock = threading.Lock()
        self._active: dict[str, Entry] = {}  # clip key -> the action in force
        self._seq = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the folder of {self.path} ({exc.strerror or exc})") from None
        self._lockfile = hold_lock(self.path.with_name(self.path.name + ".lock"), f"the label journal {self.path}",
                                   "vidtune serve --label-out")
        try:
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            if fresh:
                imported = self._read_existing_manifest()
                self._create()
                for clip, label in imported:
                    self._append({"op": "label", "key": clip.key, "path": clip.path, "start": clip.start,
                                  "end": clip.end, "label": label})
                if imported:
                    log.info("imported %d label(s) from %s into %s", len(imported), self.manifest, self.path)
            else:
                self._replay()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            self._check_classes()
            self._sync_manifest(at_open=True)
        except BaseException:
            self._lockfile.close()
            raise

    # -- reading ---------------------------------------------------------------------------------------
    def _create(self) -> None:
        header = {"format": FORMAT, "version": VERSION, "created": time.time()}
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            os.write(fd, _line(header))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.path.parent)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def _replay(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: empty, or a line torn by a crash
        good_end = len(data) - len(tail)
        records = []
        for i, raw in enumerate(lines, start=1):
            rec = self._parse(raw)
            if rec is None:
                if i == len(lines) and not tail:  # the last line, complete but damaged: a torn write
                    good_end -= len(raw) + 1
                    tail = raw
                    break
                raise JournalError(f"{self.path}:{i}: damaged line (bad JSON or checksum) in the middle of the label "
                                   "journal; restore the file from a backup, or move it away to start over (the "
                                   "manifest next to it keeps the labels as of the last save)")
            records.append((i, rec))
        if tail:
            log.warning("%s: dropped an incomplete last line (%d bytes) left by a crash; it was never acknowledged",
                        self.path, len(tail))
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                os.fsync(fh.fileno())
        if not records or records[0][1].get("format") != FORMAT:
            raise JournalError(f"{self.path} is not a vidtune label journal; choose another --label-out, or move "
                               "the file away")
        if records[0][1].get("version") != VERSION:
            raise JournalError(f"{self.path}: journal version {records[0][1].get('version')!r} is not supported "
                               f"(this vidtune reads version {VERSION})")
        for i, rec in records[1:]:
            self._apply(rec, f"{self.path}:{i}")

    @staticmethod
    def _parse(raw: bytes) -> dict | None:
        try:
            rec = json.loads(raw.decode("utf-8", "surrogateescape"))
        except ValueError:
            return None
        if not isinstance(rec, dict) or "crc" not in rec:
            return None
        crc = rec.pop("crc")
        return rec if crc == _crc(rec) else None

    def _apply(self, rec: dict, where: str) -> None:
        op, seq = rec.get("op"), rec.get("seq")
        if op not in OPS or not isinstance(seq, int) or seq <= self._seq:
            raise JournalError(f"{where}: not a journal action this vidtune understands ({op!r}, seq {seq!r})")
        self._seq = seq
        if op == "undo":
            target = rec.get("target")
            for k, e in list(self._active.items()):
                if e.seq == target:
                    del self._active[k]
                    break
            return
        clip = Clip(str(rec["key"]), str(rec["path"]), rec.get("start"), rec.get("end"))
        self._active[clip.key] = Entry(seq, op, clip, rec.get("label") if op == "label" else None,
                                       float(rec.get("time", 0.0)))

    def _read_existing_manifest(self) -> list[tuple[Clip, str]]:
        """Rows of a manifest that exists before its journal does: labels made elsewhere, kept."""
        if self.manifest is None or not self.manifest.exists():
            return []
        from vidtune.data.manifest import load_dataset

        try:
            items = load_dataset(self.manifest)
        except VidtuneError as exc:
            raise JournalError(f"{self.manifest} exists but is not a manifest vidtune reads ({exc}); choose another "
                               "--label-out, or move the file away") from None
        return [(Clip(clip_key(it.path, it.start, it.end), os.path.abspath(it.path), it.start, it.end), it.label)
                for it in items]

    def _check_classes(self) -> None:
        if self.classes is None:
            return
        extra = sorted({e.label for e in self._active.values() if e.op == "label"} - set(self.classes))
        if extra:
            where = self.path if self.manifest is None else f"{self.manifest} (journal {self.path})"
            raise JournalError(f"{where} holds label(s) {', '.join(extra)} that are not among the classes "
                               f"{', '.join(self.classes)}; add them to --classes, or choose another --label-out")

    # -- writing ---------------------------------------------------------------------------------------
    def _append(self, record: dict) -> dict:
        rec = {**record, "seq": self._seq + 1, "time": round(time.time(), 3)}
        data = _line(rec)
        try:
            n = os.write(self._fd, data)
            if n != len(data):
                raise OSError(f"short write ({n} of {len(data)} bytes)")
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot save to the label journal {self.path} ({getattr(exc, 'strerror', None) or exc})"
                               "; the action was not saved") from None
        self._apply(rec, str(self.path))
        return rec

    def label(self, clip: Clip, label: str) -> Entry:
        """Record ``label`` for ``clip`` (on disk when this returns). The same label again is a no-op (a
        retried request); a different one while a label stands is a :class:`LabelConflictError`."""
        label = str(label)
        if self.classes is not None and label not in self.classes:
            from vidtune.errors import ConfigError

            raise ConfigError("label", f"must be one of {', '.join(self.classes)}, got {label!r}")
        with self._lock:
            cur = self._active.get(clip.key)
            if cur is not None and cur.op == "label":
                if cur.label == label:
                    return cur
                raise LabelConflictError(f"clip {clip.key} is already labelled {cur.label!r} (by another request or "
                                         "tab); undo that label first to change it")
            self._append({"op": "label", "key": clip.key, "path": clip.path, "start": clip.start, "end": clip.end,
                          "label": label})
            self._sync_manifest()
            return self._active[clip.key]

    def skip(self, clip: Clip) -> Entry:
        """Record that ``clip`` was passed over (it leaves the queue; undo brings it back)."""
        with self._lock:
            cur = self._active.get(clip.key)
            if cur is not None:
                if cur.op == "skip":
                    return cur
                raise LabelConflictError(f"clip {clip.key} is already labelled {cur.label!r}; undo that label "
                                         "first")
            self._append({"op": "skip", "key": clip.key, "path": clip.path, "start": clip.start, "end": clip.end})
            return self._active[clip.key]

    def undo(self, key: str | None = None) -> Entry:
        """Take back the latest action in force, or the one on clip ``key``; returns what was undone."""
        with self._lock:
            if key is None:
                if not self._active:
                    raise LabelConflictError("nothing to undo: no label or skip stands")
                target = max(self._active.values(), key=lambda e: e.seq)
            else:
                target = self._active.get(key)
                if target is None:
                    raise LabelConflictError(f"nothing to undo on clip {key}: it has no label or skip")
            self._append({"op": "undo", "target": target.seq, "key": target.clip.key})
            if target.op == "label":
                self._sync_manifest()
            return target

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._lockfile.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- state -----------------------------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Actions in force (labels and skips), oldest first."""
        with self._lock:
            return sorted(self._active.values(), key=lambda e: e.seq)

    def labels(self) -> list[Entry]:
        return [e for e in self.entries() if e.op == "label"]

    def done(self) -> set[str]:
        """Keys of clips that are labelled or skipped (they leave the queue)."""
        with self._lock:
            return set(self._active)

    def get(self, key: str) -> Entry | None:
        with self._lock:
            return self._active.get(key)

    def per_class(self) -> dict[str, int]:
        counts = Counter(e.label for e in self.labels())
        names = list(self.classes) if self.classes is not None else sorted(counts)
        return {c: counts.get(c, 0) for c in names} | {c: n for c, n in counts.items() if c not in names}

    # -- the manifest ----------------------------------------------------------------------------------
    def manifest_text(self) -> str:
        """The manifest of the labels in force: ``path,label,start,end``, one row per labelled clip."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "label", "start", "end"])
        base = self.manifest.parent.resolve() if self.manifest is not None else None
        for e in sorted(self._active.values(), key=lambda e: e.seq):
            if e.op != "label":
                continue
            w.writerow([_manifest_path(e.clip.path, base), e.label, _cell(e.clip.start), _cell(e.clip.end)])
        return buf.getvalue()

    def _sync_manifest(self, at_open: bool = False) -> None:
        if self.manifest is None:
            return
        from vidtune.utils import atomic_write_text

        text = self.manifest_text()
        if at_open:
            try:
                current = self.manifest.read_text(encoding="utf-8", errors="surrogateescape")
            except FileNotFoundError:
                current = None
            except OSError as exc:
                raise JournalError(f"cannot read {self.manifest} ({exc.strerror or exc})") from None
            if current == text:
                return
            if current is not None and self.manifest.stat().st_mtime > self.path.stat().st_mtime + 1e-3:
                raise JournalError(f"{self.manifest} was changed after its label journal {self.path} last wrote it; "
                                   "the journal is the record of the labels. Move the edited manifest away (it is then "
                                   "rewritten from the journal), or move the journal away to import the edited "
                                   "manifest as the labels")
            if current is not None:
                log.warning("%s was behind its journal (a crash before the rename?); rewritten from %s",
                            self.manifest, self.path)
        atomic_write_text(self.manifest, text)


def _cell(x) -> str:
    if x is None:
        return ""
    x = float(x)
    return repr(round(x, 6)) if math.isfinite(x) else ""


def _manifest_path(path: str, base: Path | None) -> str:
    """Relative to the manifest's folder when the video is inside it (a movable dataset), else absolute."""
    p = Path(path)
    if base is not None:
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            pass
    return str(p)
