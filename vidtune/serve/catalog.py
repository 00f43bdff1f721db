"""What a ``vidtune serve`` process may show: its index, its runs and their files.

Every file the server sends is found through this catalog by an opaque key (``v12``: video 12 of
the index; ``r0c3``: a clip behind run 0's confusion matrix) or, for a run's own files, by a name
from a fixed list, resolved and checked to stay inside the run folder. No request path is ever
joined to a folder, so ``..``, absolute paths, symlinks that lead out of a run folder, and unknown
keys all end as :class:`~vidtune.errors.NotServedError` (HTTP 404).

A video is sent only as the file that was indexed (:meth:`Catalog.media`): its path is resolved to
the real file; a symlink at that path that leads out of the folder it was indexed in is refused; the
real file must be a regular file whose content digest (:func:`vidtune.utils.file_digest`, the
fingerprint the index recorded when it embedded the video) still matches. A digest is checked once
per (device, inode, size, mtime, ctime) of the real file: any change to the file, even one that
restores the mtime, changes its ctime and is checked again. The route then opens the real file
without following symlinks and sends it only if the file opened is the one checked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from vidtune.errors import NotServedError, VidtuneError
from vidtune.serve.results import Bounded

log = logging.getLogger(__name__)

# Files of a run folder the pages show (everything else in it is never served).
RUN_FILES = ("metrics.json", "config.json", "history.csv", "skipped.json", "split.json", "learning_curves.png",
             "confusion_matrix.png", "robustness.png")


@dataclass(frozen=True)
class Media:
    """A video (or image) the server may send: where it is, what it is called on the page, and the
    content digest recorded when it was indexed (or listed in a result). From :meth:`Catalog.media`,
    ``path`` is the verified real file and ``stat`` its ``os.stat``."""

    key: str
    path: Path
    name: str
    digest: str | None = None
    stat: os.stat_result | None = None


def identity(st: os.stat_result) -> tuple:
    """What changes when a file is replaced or written to: device, inode, size, mtime and ctime."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


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
        self._verified = Bounded(4096)  # (real path, identity) -> digest checked
        self._warned: set[str] = set()
        self.uploads = None
        if not read_only:
            from vidtune.serve.uploads import UploadFolder

            try:
                for sub in ("thumbs", "uploads", "features", "results"):
                    (self.cache_dir / sub).mkdir(parents=True, exist_ok=True)
                self.uploads = UploadFolder(self.cache_dir / "uploads")
            except OSError as exc:
                raise VidtuneError(f"cannot use the cache folder {self.cache_dir} ({exc.strerror or exc}); "
                                   "give another with --cache-dir, or --read-only") from None
        self.refresh_index()

    def close(self) -> None:
        """Remove this server's upload folder."""
        if self.uploads is not None:
            self.uploads.close()

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
                self._media[key] = Media(key, Path(os.path.abspath(r.path)), r.path, r.digest)
                out.append({"id": key, "path": r.path, "duration": r.duration, "segments": r.segments})
        return out

    def register(self, key: str, path, name: str, digest: str) -> Media:
        """Let ``key`` name ``path`` (a file listed in one of the server's own results), with the content
        digest recorded when that result was made."""
        m = Media(key, Path(os.path.abspath(path)), name, digest)
        with self._lock:
            self._media[key] = m
        return m

    def media(self, key: str) -> Media:
        """The verified file behind ``key`` (see the module docstring); anything else is :class:`NotServedError`.

        May read the file once to check its digest: call it from a worker thread, not the event loop."""
        with self._lock:
            m = self._media.get(key) if isinstance(key, str) else None
        if m is None:
            raise NotServedError(f"no video {str(key)[:80]!r} on this server")
        return self.verify(m)

    def verify(self, m: Media) -> Media:
        from vidtune.utils import file_digest

        gone = NotServedError(f"video {m.key!r} ({m.name}) is not available: it was moved, deleted or changed "
                              "since it was indexed")
        try:
            lst = os.lstat(m.path)
            real = Path(os.path.realpath(m.path))
            if stat.S_ISLNK(lst.st_mode):
                home = Path(os.path.realpath(m.path.parent))
                if not real.is_relative_to(home):
                    self._warn(m, f"{m.path} is a symlink that leads out of its folder (to {real}); refused")
                    raise gone
            st = os.stat(real)
        except OSError:
            raise gone from None
        if not stat.S_ISREG(st.st_mode) or m.digest is None:
            raise gone
        ident = (str(real), *identity(st))
        if self._verified.get(ident) != m.digest:
            try:
                digest = file_digest(real)
            except (OSError, VidtuneError):
                raise gone from None
            if digest != m.digest:
                self._warn(m, f"{real} no longer has the content it was indexed with; refused")
                raise gone
            self._verified.put(ident, m.digest)
        return replace(m, path=real, stat=st)

    def _warn(self, m: Media, text: str) -> None:
        if m.key not in self._warned:
            self._warned.add(m.key)
            log.warning("vidtune serve: %s", text)

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
