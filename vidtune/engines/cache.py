"""The engine cache: engine files checked against the digest recorded when they were written, the sessions
opened on them (kept for the life of the process), and the locks around both.

Every engine file ``E.onnx`` in ``<feature cache>/engines/`` (a frozen backbone's fp32 graph
``<weights fingerprint>-<input size>.onnx``, its int8 version ``...-int8.onnx``, a run's head
``run-<hash>-head.onnx``) has a record ``E.json`` written right after it: the file's size and BLAKE2b
digest, plus what the writer adds (how an int8 engine was calibrated). An engine is opened only when its
bytes match its record. One that does not (bytes overwritten, truncated, emptied, or no record: written by
an older vidtune) is damaged: :func:`verified` removes it, says so once, and the caller builds it again
from the PyTorch module (:func:`ensure`); the engine-only paths, which have no module to build it from,
step aside to the full path, which rebuilds it.

Writing and repairing an engine hold a lock file beside it (``E.onnx.lock``, ``fcntl.flock``, released
by the kernel if the process dies): two processes never write one engine at once, and a reader that
finds a new engine whose record is not written yet waits for the writer instead of calling it damaged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from vidtune.utils import atomic_write_json

log = logging.getLogger(__name__)

_sessions: dict[tuple, object] = {}
_verified: dict[str, tuple] = {}  # engine path -> (size, mtime_ns, inode, digest) last verified here
_warned: set[str] = set()
_thread_lock = threading.RLock()


def record_path(engine) -> Path:
    """The record beside an engine file: same name, suffix ``.json``."""
    return Path(engine).with_suffix(".json")


def content_digest(path) -> str:
    """BLAKE2b of every byte of the file (engines are read whole anyway: tens of MB, milliseconds)."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_record(engine) -> dict | None:
    """The record of an engine file (whatever its state), or None when there is none or it is unreadable."""
    try:
        record = json.loads(record_path(engine).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def seal(engine, **info) -> dict:
    """Write the record of the engine file just written: its size and digest, plus ``info``."""
    engine = Path(engine)
    st = engine.stat()
    digest = content_digest(engine)
    record = {**info, "bytes": st.st_size, "blake2b": digest}
    atomic_write_json(record_path(engine), record)
    _verified[str(engine)] = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
    _warned.discard(str(engine))  # damaged again later: said again
    return record


def problem(engine) -> str | None:
    """What is wrong with an engine file, or None when its bytes are the ones recorded when it was written."""
    engine = Path(engine)
    try:
        st = engine.stat()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    seen = _verified.get(str(engine))
    if seen is not None and seen[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
        return None
    record = read_record(engine)
    if record is None:
        return "no digest recorded beside it"
    if st.st_size == 0:
        return "empty file"
    try:
        if isinstance(record.get("blake2b"), str):
            if record.get("bytes") != st.st_size:
                return f"{st.st_size} bytes where {record.get('bytes')} were written (truncated or extended)"
            digest = content_digest(engine)
            if digest != record["blake2b"]:
                return "its bytes differ from the digest recorded when it was written"
        elif isinstance(record.get("digest"), str):  # an int8 record from before sizes and full digests
            from vidtune.utils import file_digest

            digest = file_digest(engine)
            if digest != record["digest"]:
                return "its bytes differ from the digest recorded when it was written"
        else:
            return "no digest recorded beside it"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    _verified[str(engine)] = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
    return None


@contextlib.contextmanager
def writing(engine):
    """Hold the engine's lock file (waiting for another process that holds it) for a block."""
    engine = Path(engine)
    with _thread_lock:
        try:
            engine.parent.mkdir(parents=True, exist_ok=True)
            fh = open(engine.with_name(engine.name + ".lock"), "a")  # noqa: SIM115 (closed below)
        except OSError as exc:  # a read-only cache: nothing can be written or repaired, so nothing to guard
            log.debug("engine lock for %s not taken (%s)", engine.name, exc)
            yield
            return
        try:
            try:
                import fcntl

                fcntl.flock(fh, fcntl.LOCK_EX)
            except (ImportError, OSError) as exc:  # no flock (Windows, some network file systems)
                log.debug("engine lock for %s not taken (%s)", engine.name, exc)
            yield
        finally:
            fh.close()


def verified(engine) -> bool:
    """True when the engine file is present and its bytes match its record. A damaged one (see the module
    doc) is removed with its record, and a warning says so once per file; False then, and when missing."""
    engine = Path(engine)
    what = problem(engine)
    if what is None:
        return True
    if what == "missing":
        return False
    with writing(engine):
        what = problem(engine)  # a writer may have been between the file and its record
        if what is None:
            return True
        if what == "missing":
            return False
        if str(engine) not in _warned:
            _warned.add(str(engine))
            if what == "no digest recorded beside it":
                log.info("engine %s has %s (an older vidtune wrote it); building it again", engine, what)
            else:
                log.warning("engine %s is damaged (%s); building it again", engine, what)
        remove(engine)
    return False


def remove(engine) -> None:
    """Delete an engine file and its record (sessions already open on it keep their copy in memory)."""
    engine = Path(engine)
    for p in (engine, record_path(engine)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    _verified.pop(str(engine), None)


def ensure(engine, write: Callable[[Path], None], **info) -> Path:
    """The engine file, written by ``write(path)`` (atomically) and sealed with its record when it is
    missing or damaged; ``info`` goes into the record."""
    engine = Path(engine)
    if verified(engine):
        return engine
    with writing(engine):
        if problem(engine) is not None:  # still absent: not built by another process meanwhile
            write(engine)
            seal(engine, **info)
    return engine


def session(engine, runtime: str, threads: int | None):
    """An :class:`~vidtune.engines.sessions.EngineSession` on a verified engine file, opened once per
    process for each content, runtime and thread count."""
    from vidtune.engines.sessions import EngineSession

    engine = Path(engine)
    seen = _verified.get(str(engine))
    if seen is None:
        raise ValueError(f"engine {engine} was not verified before opening")
    key = (str(engine), seen[3], runtime, threads)
    with _thread_lock:
        opened = _sessions.get(key)
        if opened is None:
            opened = _sessions[key] = EngineSession(engine, runtime, threads)
    return opened


def is_open(engine, runtime: str | None = None) -> bool:
    """A session on this engine file (in ``runtime``, if given) is open in this process."""
    with _thread_lock:
        return any(k[0] == str(engine) and (runtime is None or k[2] == runtime) for k in _sessions)


def close_sessions(where: Callable[[Path], bool] | None = None) -> None:
    """Forget the sessions kept in this process (those on engines ``where(path)`` is true for): the next
    use opens the file again, as a new process would."""
    with _thread_lock:
        for key in [k for k in _sessions if where is None or where(Path(k[0]))]:
            del _sessions[key]
        if where is None:
            _verified.clear()
            _warned.clear()
