"""Small shared helpers: atomic file writes, content hashing, JSON, file-type and text safety."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path

from vidtune.errors import BusyError, NonFiniteError, OutputWriteError, SpecialFileError, VideoDecodeError

_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(mode: int) -> str | None:
    """``"a FIFO (named pipe)"``, ``"a character device"``, ... for a non-regular, non-folder mode; else None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, name in _SPECIAL_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def check_regular_file(path, st: os.stat_result | None = None) -> os.stat_result:
    """``os.stat`` + ``S_ISREG``: refuse FIFOs, devices and sockets *by type*, before anything reads them
    (reading ``/dev/zero`` never ends, a FIFO blocks until a writer comes). Raises :class:`SpecialFileError`
    (a :class:`VideoDecodeError`) for those, ``VideoDecodeError`` for a folder, ``OSError`` when the path
    cannot be stat'ed (missing file, no permission)."""
    st = os.stat(path) if st is None else st
    if stat.S_ISDIR(st.st_mode):
        raise VideoDecodeError(path, "is a directory, not a video file")
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise SpecialFileError(path, f"is {kind}, not a regular file: it is refused unread (reading it could "
                                     "block or never end); give the path of a video file (save a stream to a "
                                     "file first)")
    return st


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide outputs from others


def output_target(path) -> str:
    """What writing ``path`` means, checked before anything is written: ``"file"`` (absent, or a regular
    file: a temporary file beside it is renamed over it) or ``"device"`` (a character device such as
    ``/dev/null`` or a terminal: written through, never replaced). Raises :class:`OutputWriteError` for a
    folder, a FIFO, a socket or a block device (vidtune never replaces one nor writes into it), and for a
    path that cannot be looked at (a parent that is a file, no permission)."""
    try:
        st = os.stat(path)  # follows a symlink: /dev/stdout -> /dev/pts/0 is the terminal
    except FileNotFoundError:
        return "file"  # absent (or a dangling symlink, which the rename replaces)
    except OSError as exc:
        raise output_error(path, exc) from None
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISCHR(st.st_mode):
        return "device"
    if stat.S_ISDIR(st.st_mode):
        raise output_error(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)))
    raise OutputWriteError(path, f"it is {special_kind(st.st_mode)}, which vidtune neither replaces nor writes "
                                 "into", "give the path of a regular file (or a character device such as /dev/null)")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path; on success its content lands at ``path``.

    The target is checked first (:func:`output_target`): a regular file or a new name is replaced
    atomically by a rename of the temporary file beside it, so a crash or exception leaves any previous
    ``path`` untouched; a character device (``/dev/null``, a terminal) is written through (the finished
    temporary file, kept in the system's temporary folder, is copied into it), never replaced by a
    regular file; anything else (a folder, FIFO, socket, block device) is refused with an
    :class:`OutputWriteError` before the work. The temporary file is removed in every case, and its name
    keeps the suffix, so writers that infer a format from it still work. An ``OSError`` (disk full,
    read-only, a parent that is a file) or a writer library's I/O error while writing becomes an
    :class:`OutputWriteError` naming ``path``.
    """
    path = Path(path)
    device = output_target(path) == "device"
    try:
        if device:
            fd, tmp = tempfile.mkstemp(prefix=".vidtune-out.", suffix=f".tmp{path.suffix}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    os.close(fd)
    try:
        yield Path(tmp)
        if device:
            _copy_into_device(tmp, path)
        else:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(tmp, _FILE_MODE)
            if output_target(path) != "file":  # something else appeared there meanwhile: leave it alone
                raise OutputWriteError(path, "it changed into a device while vidtune wrote it; nothing was replaced")
            os.replace(tmp, path)
    except BaseException as exc:
        if isinstance(exc, OSError) and not isinstance(exc, OutputWriteError) or is_io_error(exc):
            raise output_error(path, exc) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _copy_into_device(src, device: Path) -> None:
    """Write the bytes of ``src`` into the character device ``device`` (opened without creating or
    truncating anything, and checked again once open)."""
    fd = os.open(device, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISCHR(os.fstat(fd).st_mode):
            raise OutputWriteError(device, "it is no longer a character device; nothing was written")
        with open(src, "rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def is_io_error(exc: BaseException) -> bool:
    """An exception of a writer library (safetensors, FAISS, SQLite, matplotlib) that reports a failed write."""
    text = str(exc)
    return (type(exc).__name__ in ("SafetensorError", "RuntimeError", "OperationalError")
            and any(s in text for s in ("IoError", "No space", "StorageFull", "disk is full", "fwrite",
                                        "Read-only", "ReadOnly", "Permission denied", "PermissionDenied")))


_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space or write somewhere else",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EACCES: "permission denied; write somewhere you may write",
    errno.EPERM: "permission denied; write somewhere you may write",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "a part of the path is a file, not a folder; choose another path",
}


def output_error(path, exc: BaseException) -> OutputWriteError:
    """A clear :class:`OutputWriteError` for a failed write of ``path``."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code is None and any(s in text for s in ("No space", "StorageFull", "disk is full")):
        code = errno.ENOSPC
    reason = _HINTS.get(code) or getattr(exc, "strerror", None) or (text.splitlines() or [type(exc).__name__])[0][:200]
    return OutputWriteError(path, reason)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8", errors="surrogateescape")  # a file name as its own bytes


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json_text(obj) + "\n")


def finite(obj):
    """``obj`` with every NaN or infinite float (nested in dicts, lists, tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def all_finite(x) -> bool:
    """Whether every number of ``x`` (a NumPy array, a torch tensor, a number) is finite."""
    if type(x).__module__.startswith("torch"):  # a tensor (on any device): no copy to NumPy
        return bool(x.isfinite().all())
    import numpy as np

    a = np.asarray(x)
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())


def require_finite(x, what: str) -> None:
    """Raise :class:`NonFiniteError` when ``x`` holds NaN or infinities. ``what`` completes "... gave NaN
    or infinite numbers", e.g. ``"the backbone, for clip.mp4,"``."""
    if not all_finite(x):
        raise NonFiniteError(f"{what} gave NaN or infinite numbers, which are never cached or reported as a "
                             "result: the model's weights (--weights, a run's model.safetensors) or its engine are "
                             "damaged; restore or retrain them (--runtime torch bypasses the engines)")


def _json_default(obj):
    if isinstance(obj, Path):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):
        return finite(obj.tolist())
    if hasattr(obj, "item"):
        return finite(obj.item())
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _json_default_str(obj):
    try:
        return _json_default(obj)
    except TypeError:
        return str(obj)


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(obj, indent: int | None = 2, strict: bool = True) -> str:
    """JSON that is always valid, UTF-8-encodable JSON.

    NaN and infinities become ``null``. File names that are not UTF-8 reach Python as ``os.fsdecode``
    strings, whose undecodable bytes are lone surrogates (``b"\\xff"`` -> ``"\\udcff"``, PEP 383); they
    are written as ``\\udcXX`` escapes, so the text stays valid UTF-8 and ``os.fsencode(json.loads(...))``
    gives back the exact bytes. ``strict=False``: objects JSON does not know become their ``str``.
    """
    text = json.dumps(finite(obj), indent=indent, ensure_ascii=False, allow_nan=False,
                      default=_json_default if strict else _json_default_str)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def db_text(text: str) -> str:
    """``text`` as a string SQLite can store (valid UTF-8): undecodable file-name bytes become ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match) -> str:
    ch = m.group()
    o = ord(ch)
    if ch in _NAMED:
        return _NAMED[ch]
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable file-name byte (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def printable(text: str) -> str:
    """``text`` with every control character (``\\r``, ``\\n``, ``\\t``, other C0/C1 codes, U+2028/9)
    escaped as ``\\r``, ``\\n``, ``\\t``, ``\\xNN`` or ``\\uNNNN``, and every undecodable file-name byte
    as ``\\xNN``: one line of valid UTF-8 that cannot start a new line, cue or record."""
    text = str(text)
    return _CONTROL.sub(_escape_char, text) if _CONTROL.search(text) else text


_CHUNK = 1 << 20


def file_digest(path) -> str:
    """Content fingerprint of a file: BLAKE2b of its size and bytes.

    Files up to 16 MiB are hashed whole; larger ones by their first and last MiB and 14 evenly
    spaced 64 KiB chunks (like imohash), so fingerprinting a 10 GB video costs ~3 MB of reads.
    Renaming or touching a file keeps its fingerprint; re-encoding or editing changes it.
    A FIFO, device or socket is refused by type (:class:`SpecialFileError`) before it is opened, and
    the file is opened without blocking and checked again, so nothing here can wait forever.
    """
    path = Path(path)
    check_regular_file(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        size = check_regular_file(path, os.fstat(fd)).st_size  # the file opened is the one checked
    except BaseException:
        os.close(fd)
        raise
    h = hashlib.blake2b(digest_size=16)
    h.update(str(size).encode())
    with os.fdopen(fd, "rb") as fh:
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


CHECKSUM = "blake2b-128"  # the name recorded beside every checksum below


def file_checksum(path) -> str:
    """Checksum of every byte of a file vidtune wrote and reads back (index vectors, engines): BLAKE2b-128
    in hex. Unlike :func:`file_digest` nothing is sampled, so one overwritten byte anywhere changes it."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def array_checksum(arr) -> str:
    """Checksum of a NumPy array's dtype, shape and bytes (BLAKE2b-128, hex)."""
    import numpy as np

    arr = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def stable_hash(obj) -> str:
    """Short hash of a JSON-serialisable object, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def stable_int(text: str) -> int:
    """A 32-bit integer from ``text`` that is the same in every process and Python version (seeds)."""
    return int(stable_hash(text)[:8], 16)


def hold_lock(lock_path: Path, what: str, holder: str):
    """Take ``lock_path`` exclusively without waiting (``fcntl.flock``), and write who holds it into it.

    Returns the open file (close it to release; the kernel releases it when the process dies, so a
    killed writer never leaves a stale lock). Raises :class:`BusyError` naming the holder when another
    process has it.
    """
    import fcntl
    import socket
    import time

    try:
        fh = open(lock_path, "a+", encoding="utf-8", errors="replace")  # noqa: SIM115 (held by the caller)
    except OSError as exc:
        raise output_error(lock_path, exc) from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        who = fh.read(300).strip() or "another process"
        fh.close()
        raise BusyError(f"{what} is in use: {who} holds {lock_path}. Wait for it to finish (or stop it), "
                        "or choose another folder") from None
    except OSError as exc:  # a file system without locks: go on unlocked
        import logging

        logging.getLogger(__name__).warning("cannot lock %s (%s); concurrent writers are not detected", lock_path, exc)
        return fh
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} ({holder}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        fh.flush()
    except OSError:
        pass
    return fh


def default_cache_dir() -> Path:
    """The feature cache's folder (engines live in its ``engines/``): ``$VIDTUNE_CACHE``, else
    ``$XDG_CACHE_HOME/vidtune/features`` (``~/.cache/vidtune/features``)."""
    env = os.environ.get("VIDTUNE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vidtune" / "features"


def default_workers() -> int:
    """Decoding worker processes: one per core, at most 4. They run at a lower priority
    (:func:`lower_priority`), so the network in the main process takes the cores it can use and the
    decoders fill the rest: on 2 cores, 2 workers beside a 2-thread engine fed 113-124 frames/s of short
    H.264 clips and 62-68 of long real videos, against 104-106 and 48-55 with 1 worker
    (``bench/pipeline.py``)."""
    return max(1, min(4, os.cpu_count() or 2))


DECODER_NICE = 5  # how much lower decoding workers run than the network (POSIX nice increment)
DECODER_NICE_ENV = "VIDTUNE_DECODER_NICE"


def lower_priority(increment: int | None = None) -> None:
    """Run this (worker) process at a lower priority (``increment``, default ``$VIDTUNE_DECODER_NICE`` or
    :data:`DECODER_NICE`), so the network gets the cores it asks for and the decoders fill what it
    leaves; a no-op where processes have no nice value."""
    if increment is None:
        text = os.environ.get(DECODER_NICE_ENV, "").strip()
        increment = int(text) if text.lstrip("-").isdigit() else DECODER_NICE
    if increment > 0 and hasattr(os, "nice"):
        try:
            os.nice(increment)
        except OSError:
            pass
