"""The on-disk feature cache: per-clip features in safetensors files named by a hash of everything they
depend on (video content, span, backbone weights, transform, sampling, precision, frame changes).

Every entry carries the checksum of its array (dtype, shape, bytes) in its safetensors metadata, checked
at each read: an entry that fails it (bytes overwritten on disk), cannot be parsed (truncated, empty),
holds NaN or infinities, or has no checksum (written before entries had one) is a miss: the clip is
computed again and the entry replaced, with one warning per cache. Non-finite features are never
written (:class:`~vidtune.errors.NonFiniteError`).

No torch at import time: :meth:`FeatureCache.get_array` / :meth:`FeatureCache.put_array` serve the
engine-only path (:mod:`vidtune.runs.lean`); :meth:`FeatureCache.get` / :meth:`FeatureCache.put` give
torch tensors. Both read and write the same files.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import numpy as np

from vidtune.data.manifest import VideoItem
from vidtune.data.preprocess import PretrainedConfig, transform_id
from vidtune.data.sampling import Sampling
from vidtune.errors import ConfigError, OutputWriteError, VidtuneError
from vidtune.utils import (  # noqa: F401 (default_cache_dir: re-exported)
    CHECKSUM,
    all_finite,
    array_checksum,
    atomic_path,
    check_regular_file,
    db_text,
    default_cache_dir,
    file_digest,
    require_finite,
    stable_hash,
)

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_WARNED: set[str] = set()  # cache folders whose damaged entries were already warned about


class FeatureCache:
    """Per-clip features in safetensors files named by a hash of everything they depend on."""

    def __init__(self, root):
        self.root = Path(root)
        self._write_failed = False
        self.damaged = 0  # damaged entries met (and removed) by this process
        self._digests: sqlite3.Connection | None = None

    def digest(self, path) -> str:
        """Content fingerprint of a video, remembered by (path, size, mtime, inode) like git's index.

        A rerun over 10,000 unchanged videos then stats them instead of reading them.
        """
        st = check_regular_file(path)  # a FIFO or device is refused before any lookup or read
        real = db_text(os.path.realpath(path))
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        db = self._digest_db()
        if db is not None:
            row = db.execute("SELECT size, mtime_ns, ino, digest FROM digests WHERE path = ?", (real,)).fetchone()
            if row is not None and tuple(row[:3]) == stamp:
                return row[3]
        digest = file_digest(path)
        if db is not None:
            try:
                with db:
                    db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?)", (real, *stamp, digest))
            except sqlite3.Error as exc:
                log.debug("digest index not updated: %s", exc)
        return digest

    def _digest_db(self) -> sqlite3.Connection | None:
        if self._digests is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.root / "digests.sqlite", timeout=30)
                db.execute("PRAGMA journal_mode=WAL")  # one small write per new video, no fsync storm
                db.execute("PRAGMA synchronous=NORMAL")
                with db:
                    db.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, size INTEGER, "
                               "mtime_ns INTEGER, ino INTEGER, digest TEXT)")
                self._digests = db
            except (sqlite3.Error, OSError) as exc:  # read-only or damaged: hash every time
                log.warning("feature cache digest index unavailable (%s); hashing files every run", exc)
                self._digests = False
        return self._digests or None

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get_array(self, key: str) -> np.ndarray | None:
        """The cached array, or None: absent, or damaged (see the module docstring; it is then removed)."""
        from safetensors import SafetensorError, safe_open

        p = self._path(key)
        if not p.exists():
            return None
        try:
            with safe_open(str(p), "np") as f:
                meta = f.metadata() or {}
                arr = f.get_tensor("features")
        except (SafetensorError, OSError, KeyError, ValueError) as exc:  # truncated, empty, unparsable
            return self._damaged(p, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        if "checksum" not in meta:  # written before entries carried one: cannot be trusted, recompute
            log.debug("feature cache entry %s has no checksum (older vidtune); recomputing it", p)
            return None
        if meta.get("checksum") != array_checksum(arr) or meta.get("algo", CHECKSUM) != CHECKSUM:
            return self._damaged(p, "its checksum does not match its bytes")
        if not all_finite(arr):
            return self._damaged(p, "it holds NaN or infinite values")
        return arr

    def _damaged(self, p: Path, reason: str) -> None:
        """Count a damaged entry (one warning per cache folder and process), remove it; a miss."""
        self.damaged += 1
        if str(self.root) not in _WARNED:
            _WARNED.add(str(self.root))
            log.warning("feature cache entry %s is damaged (%s): recomputing it (further damaged entries in %s "
                        "are recomputed without a warning)", p, reason, self.root)
        else:
            log.info("feature cache entry %s is damaged (%s): recomputing it", p, reason)
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass
        return None

    def put_array(self, key: str, features: np.ndarray) -> None:
        """Store features with their checksum; a full disk or lost permission only costs the cache, never
        the job. Non-finite features are refused (:class:`NonFiniteError`): they are an error, not a result."""
        from safetensors import SafetensorError
        from safetensors.numpy import save_file

        arr = np.ascontiguousarray(features)
        require_finite(arr, "the network")
        try:
            with atomic_path(self._path(key)) as tmp:
                save_file({"features": arr}, str(tmp), metadata={"checksum": array_checksum(arr), "algo": CHECKSUM})
        except (OSError, SafetensorError, OutputWriteError) as exc:
            if not self._write_failed:
                log.warning("feature cache %s is not writable (%s); continuing without caching", self.root, exc)
            self._write_failed = True

    def get(self, key: str):
        """The cached features as a torch tensor, or None."""
        import torch

        arr = self.get_array(key)
        return None if arr is None else torch.from_numpy(arr)

    def put(self, key: str, features) -> None:
        self.put_array(key, features.detach().contiguous().cpu().numpy())


def open_cache(cache_dir, enabled: bool = True) -> FeatureCache | None:
    """The feature cache at ``cache_dir`` (default location when None); checks it is a usable folder."""
    if not enabled:
        return None
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise ConfigError("cache_dir", f"{root} exists and is not a folder; pick a folder or turn the cache off")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VidtuneError(f"cannot create the feature cache {root} ({exc.strerror or exc}); "
                           "pick another --cache-dir or use --no-cache") from None
    return FeatureCache(root)


def cache_key(item: VideoItem, digest: str, encoder_fp: str, cfg: PretrainedConfig, sampling: Sampling,
              precision: str = "fp32", frame_op=None) -> str:
    """``frame_op``: a :class:`vidtune.runs.features.FrameOp` the frames went through, or None."""
    key = {
        "v": CACHE_VERSION, "video": digest, "start": item.start, "end": item.end, "precision": precision,
        "backbone": encoder_fp, "transform": transform_id(cfg), "sampling": sampling.cache_fields(),
    }
    if frame_op is not None:
        key["frame_op"] = frame_op.cache_id
        key["op_clip"] = op_identity(item)  # what seeds the op's draw for this clip
    return stable_hash(key)


def op_identity(item: VideoItem) -> str:
    """What seeds a frame op's random draw for a clip: its file name and segment, so the same clip
    gets the same corruption wherever the dataset lies (and whatever temporary folder a test uses)."""
    return f"{Path(item.path).name}|{item.start}|{item.end}"


def lookup(cache: FeatureCache, item: VideoItem, digest: str, encoder_fp: str, cfg: PretrainedConfig,
           sampling: Sampling, precision: str, frame_op=None, grid_views: int | None = None) -> np.ndarray | None:
    """Cached features ``(frames, views, ...)`` of a clip, or None.

    ``grid_views``: for centre sampling, also look for a cached training grid with that many (odd)
    views, whose middle column holds exactly the centre frames (so evaluating a linear-probe run on its
    own training videos decodes nothing).
    """
    from dataclasses import replace

    views = sampling.views if sampling.mode == "grid" else 1
    hit = cache.get_array(cache_key(item, digest, encoder_fp, cfg, sampling, precision, frame_op))
    if hit is not None and hit.shape[:2] == (sampling.frames, views):
        return hit
    if sampling.mode == "centre" and grid_views and grid_views % 2 == 1 and frame_op is None:
        grid = cache.get_array(cache_key(item, digest, encoder_fp, cfg,
                                         replace(sampling, mode="grid", views=grid_views), precision))
        if grid is not None and grid.shape[:2] == (sampling.frames, grid_views):
            return np.ascontiguousarray(grid[:, grid_views // 2 : grid_views // 2 + 1])
    return None


def split_cached(cache: FeatureCache | None, items: list[VideoItem], encoder_fp: str, cfg: PretrainedConfig,
                 sampling: Sampling, precision: str, frame_op=None, grid_views: int | None = None):
    """A job split by the cache: ``(hits, keys, todo, skipped)``: cached features ``{index: array}``, the
    cache key of every clip still to compute ``{index: key}``, their indices ``todo``, and the files that
    cannot even be read to hash them ``[{"path", "reason"}]`` (a folder, FIFO or device is refused
    unread). Without a cache every clip is to do."""
    from vidtune.errors import VideoDecodeError

    if cache is None:
        return {}, {}, list(range(len(items))), []
    hits: dict[int, np.ndarray] = {}
    keys: dict[int, str] = {}
    todo: list[int] = []
    skipped: list[dict] = []
    for i, item in enumerate(items):
        try:
            digest = cache.digest(item.path)
        except OSError as exc:
            skipped.append({"path": str(item.path), "reason": f"cannot read file ({exc.strerror or exc})"})
            continue
        except VideoDecodeError as exc:
            skipped.append({"path": str(item.path), "reason": exc.reason})
            log.warning("skipping %s: %s", item.path, exc.reason)
            continue
        hit = lookup(cache, item, digest, encoder_fp, cfg, sampling, precision, frame_op, grid_views)
        if hit is not None:
            hits[i] = hit
        else:
            keys[i] = cache_key(item, digest, encoder_fp, cfg, sampling, precision, frame_op)
            todo.append(i)
    return hits, keys, todo, skipped


# -- size and clean-up (``vidtune cache info|clear``) ------------------------------------------------
def _area(rel: Path) -> str:
    first = rel.parts[0] if rel.parts else ""
    if first in ("engines", "words"):
        return first
    if rel.suffix == ".safetensors":
        return "features"
    return "other"


def _files(root: Path):
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            yield p, st


def cache_usage(cache_dir=None) -> dict:
    """What the cache at ``cache_dir`` (default: :func:`default_cache_dir`) holds: files and bytes per area
    (features, words = transcripts and OCR spans, engines, other), and the oldest last use."""
    import time

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    source = "--cache-dir" if cache_dir else ("VIDTUNE_CACHE" if os.environ.get("VIDTUNE_CACHE") else "default")
    areas = {a: {"files": 0, "bytes": 0} for a in ("features", "words", "engines", "other")}
    oldest = None
    if root.is_dir():
        for p, st in _files(root):
            a = areas[_area(p.relative_to(root))]
            a["files"] += 1
            a["bytes"] += st.st_size
            used = max(st.st_atime, st.st_mtime)
            oldest = used if oldest is None else min(oldest, used)
    return {"root": str(root), "source": source, "exists": root.is_dir(), "areas": areas,
            "files": sum(a["files"] for a in areas.values()), "bytes": sum(a["bytes"] for a in areas.values()),
            "oldest_days": None if oldest is None else round((time.time() - oldest) / 86400, 1)}


def clear_cache(cache_dir=None, older_than: float | None = None, dry_run: bool = False) -> dict:
    """Delete cache files last used (read or written) more than ``older_than`` seconds ago (None: all).

    Only files are removed (then empty folders); the cache folder itself stays. Every entry is
    recomputed on demand, so clearing never loses results, only time.
    """
    import time

    root = Path(cache_dir) if cache_dir else default_cache_dir()
    if root.exists() and not root.is_dir():
        raise ConfigError("cache_dir", f"{root} is not a folder")
    cutoff = None if older_than is None else time.time() - older_than
    removed, freed, kept = 0, 0, 0
    if root.is_dir():
        for p, st in list(_files(root)):
            if cutoff is not None and max(st.st_atime, st.st_mtime) >= cutoff:
                kept += 1
                continue
            if not dry_run:
                try:
                    p.unlink()
                except OSError as exc:
                    log.warning("cannot remove %s (%s)", p, exc)
                    kept += 1
                    continue
            removed += 1
            freed += st.st_size
        if not dry_run:
            for dirpath, _, _ in sorted(os.walk(root), key=lambda d: -len(d[0])):
                if Path(dirpath) != root:
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass  # not empty
    return {"root": str(root), "removed": removed, "bytes": freed, "kept": kept, "dry_run": dry_run}
