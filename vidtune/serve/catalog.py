"""What a ``vidtune serve`` process may show: its index, its runs, their files, and uploads.

Every file the server sends is found through this catalog by an opaque key (``v12``: video 12 of
the index; ``r0c3``: clip 3 behind run 0's confusion matrix; ``u<hex>``: an upload) or, for a run's
own files, by a name from a fixed list, resolved and checked to stay inside the run folder. No
request path is ever joined to a folder, so ``..``, absolute paths, symlinks that lead out of a run
folder, and unknown keys all end as :class:`~vidtune.errors.NotServedError` (HTTP 404).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from vidtune.errors import NotServedError, UploadRejectedError, VidtuneError

# Files of a run folder the pages show (everything else in it is never served).
RUN_FILES = ("metrics.json", "config.json", "history.csv", "skipped.json", "split.json", "learning_curves.png",
             "confusion_matrix.png", "robustness.png")
UPLOAD_KEY = re.compile(r"^u[0-9a-f]{32}$")


@dataclass(frozen=True)
class Media:
    """A video (or image) the server may send: where it is and what it is called on the page."""

    key: str
    path: Path  # resolved
    name: str  # as the index / run / uploader named it


def serve_cache_dir() -> Path:
    """Default cache of ``vidtune serve``: thumbnails, sprites, uploads and its feature cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidtune" / "serve"


def run_ids(run_dirs) -> dict[str, Path]:
    """URL-safe ids for run folders: the folder name (``run``, ``run-2`` when two share a name)."""
    ids: dict[str, Path] = {}
    for d in run_dirs:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(d).resolve().name).strip("-.") or "run"
        rid, n = base, 2
        while rid in ids:
            rid, n = f"{base}-{n}", n + 1
        ids[rid] = Path(d)
    return ids


class Catalog:
    """The index, runs and uploads a server was given, and the keys that name their files."""

    def __init__(self, index_dir=None, run_dirs=(), cache_dir=None, read_only: bool = False,
                 max_upload_bytes: int = 200 * 1024 * 1024):
        from vidtune.runs.config import RunConfig

        self.index_dir = Path(index_dir) if index_dir is not None else None
        if self.index_dir is not None:
            from vidtune.index.store import VideoIndex

            VideoIndex.open(self.index_dir).close()  # a missing or damaged index fails now, not on a page
        self.runs: dict[str, Path] = run_ids(run_dirs)
        for d in self.runs.values():
            RunConfig.read(d)  # a folder without a readable run fails now
        self.cache_dir = Path(cache_dir) if cache_dir is not None else serve_cache_dir()
        self.read_only = read_only
        self.max_upload_bytes = int(max_upload_bytes)
        self._media: dict[str, Media] = {}
        self._lock = threading.Lock()
        if not read_only:
            try:
                for sub in ("thumbs", "uploads", "features", "results"):
                    (self.cache_dir / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise VidtuneError(f"cannot use the cache folder {self.cache_dir} ({exc.strerror or exc}); "
                                   "give another with --cache-dir, or --read-only") from None
        self.refresh_index()

    # -- the index's videos ----------------------------------------------------------------------
    def refresh_index(self) -> list[dict]:
        """(Re)read the index's video list; returns ``[{"id", "path", "duration", "segments"}]``."""
        if self.index_dir is None:
            return []
        from vidtune.index.store import VideoIndex

        with VideoIndex.open(self.index_dir) as ix:
            rows = ix.videos()
        out = []
        with self._lock:
            for key in [k for k in self._media if k.startswith("v")]:
                del self._media[key]
            for r in rows:
                key = f"v{r.id}"
                self._media[key] = Media(key, Path(os.path.abspath(r.path)), r.path)
                out.append({"id": key, "path": r.path, "duration": r.duration, "segments": r.segments})
        return out

    def key_for_path(self, path: str) -> str | None:
        """The key of an indexed video by the path it was indexed under."""
        with self._lock:
            for m in self._media.values():
                if m.key.startswith("v") and m.name == path:
                    return m.key
        return None

    def register(self, key: str, path, name: str) -> Media:
        m = Media(key, Path(os.path.abspath(path)), name)
        with self._lock:
            self._media[key] = m
        return m

    def media(self, key: str) -> Media:
        """The file behind ``key``; unknown keys and files that are gone are :class:`NotServedError`."""
        with self._lock:
            m = self._media.get(key)
        if m is None and UPLOAD_KEY.match(key or ""):
            m = self._upload(key)
        if m is None or not m.path.is_file():
            raise NotServedError(f"no video {key!r} on this server")
        return m

    # -- runs ------------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        d = self.runs.get(run_id)
        if d is None:
            raise NotServedError(f"no run {run_id!r} on this server (runs: {', '.join(self.runs) or 'none'})")
        return d

    def run_file(self, run_id: str, name: str) -> Path:
        """A file of a run folder by name: one of :data:`RUN_FILES`, really inside the folder."""
        root = self.run_dir(run_id).resolve()
        if name not in RUN_FILES:
            raise NotServedError(f"{name!r} is not a file this server shows")
        path = (root / name).resolve()  # follows symlinks: one that leads out of the folder is refused
        if path.parent != root or not path.is_file():
            raise NotServedError(f"run {run_id!r} has no {name}")
        return path

    def run_json(self, run_id: str, name: str, default=None):
        try:
            return json.loads(self.run_file(run_id, name).read_text(encoding="utf-8"))
        except NotServedError:
            return default
        except (OSError, ValueError) as exc:
            raise VidtuneError(f"run {run_id!r}: {name} is unreadable ({exc})") from None

    # -- uploads -----------------------------------------------------------------------------------
    def new_upload(self, filename: str, allowed_suffixes) -> tuple[str, Path]:
        """A fresh upload key and the cache path its bytes go to (refused in read-only mode)."""
        if self.read_only:
            raise UploadRejectedError("this server is read-only (--read-only): uploads are off; pick a segment of "
                                      "an indexed video instead", 403)
        suffix = Path(filename or "").suffix.lower()
        if suffix not in allowed_suffixes:
            raise UploadRejectedError(
                f"{filename!r} is not a video or image file vidtune reads (accepted: "
                f"{' '.join(sorted(allowed_suffixes))})", 415)
        key = "u" + secrets.token_hex(16)
        return key, self.cache_dir / "uploads" / f"{key}{suffix}"

    def _upload(self, key: str) -> Media | None:
        folder = self.cache_dir / "uploads"
        if not folder.is_dir():
            return None
        for p in folder.glob(f"{key}.*"):
            if p.is_file() and not p.is_symlink():
                return self.register(key, p, p.name)
        return None
