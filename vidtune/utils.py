"""Small shared helpers: atomic file writes, content hashing, JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide outputs from others


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    A crash or exception leaves any previous ``path`` untouched and removes the temporary file.
    The temporary name keeps the suffix, so writers that infer a format from it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


_CHUNK = 1 << 20


def file_digest(path) -> str:
    """Content fingerprint of a file: BLAKE2b of its size and bytes.

    Files up to 16 MiB are hashed whole; larger ones by their first and last MiB and 14 evenly
    spaced 64 KiB chunks (like imohash), so fingerprinting a 10 GB video costs ~3 MB of reads.
    Renaming or touching a file keeps its fingerprint; re-encoding or editing changes it.
    """
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if size <= 16 * _CHUNK:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
        else:
            h.update(fh.read(_CHUNK))
            for i in range(1, 15):
                fh.seek(size * i // 15)
                h.update(fh.read(64 * 1024))
            fh.seek(size - _CHUNK)
            h.update(fh.read(_CHUNK))
    return h.hexdigest()


def stable_hash(obj) -> str:
    """Short hash of a JSON-serialisable object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def stable_int(text: str) -> int:
    """A 32-bit integer from ``text`` that is the same in every process and Python version (seeds)."""
    return int(stable_hash(text)[:8], 16)
