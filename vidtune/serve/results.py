"""Results ``vidtune serve`` keeps: in memory with a size bound, and on disk under names it derives itself.

A result file is named ``<kind>-<hash>.json``, where ``kind`` is one of the server's own words and
``hash`` is a BLAKE2b of the result's identity (for a run's confusion clips: the run folder's real
path and the digests of its weights, config and split), never a field read from a run. So no run can
choose where a file is written (``run_id: "x/../../../../tmp/pwn"`` is just data that is hashed),
and two runs with the same folder name or no ``run_id`` never share a result.

Each file carries its identity and a keyed digest (BLAKE2b with a random key kept beside the results,
readable by this user only) of identity + result. Reading one back checks the digest and then the
result's schema (a pydantic model); a file that fails either is damaged: a warning is logged once and
the result is computed again (and rewritten). A file written by anything but this server, or edited,
is never trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

FORMAT = "vidtune-serve-result"
VERSION = 1
MAX_RESULT_BYTES = 64 << 20
KIND = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class Bounded:
    """A dict that keeps its ``size`` most recently used items (thread-safe)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def identity_hash(ident) -> str:
    text = json.dumps(ident, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class ResultStore:
    """Result files under ``folder`` (None: read-only server, nothing is read or written)."""

    def __init__(self, folder: Path | None):
        self.folder = Path(folder) if folder is not None else None
        self._key: bytes | None = None
        self._warned: set[str] = set()

    def path(self, kind: str, ident) -> Path | None:
        if not KIND.match(kind):
            raise ValueError(f"bad result kind {kind!r}")
        if self.folder is None:
            return None
        return self.folder / f"{kind}-{identity_hash(ident)}.json"

    def key(self) -> bytes:
        """The digest key: 32 random bytes in ``<folder>/.key`` (mode 0600), made once, atomically."""
        if self._key is not None:
            return self._key
        file = self.folder / ".key"
        for _ in range(3):
            try:
                fd = os.open(file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                with os.fdopen(fd, "rb") as fh:
                    data = fh.read(64)
                if len(data) == 32:
                    self._key = data
                    return data
                log.warning("%s is damaged; making a new key (results kept so far will be computed again)", file)
                file.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            tmp = self.folder / f".key-{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
            try:
                os.link(tmp, file)  # atomic, never replaces: two servers starting together agree on one key
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        raise OSError(f"cannot make a stable key in {self.folder}")

    def _mac(self, ident, result_text: str) -> str:
        ident_text = json.dumps(ident, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hmac.new(self.key(), f"{ident_text}\n{result_text}".encode(), hashlib.blake2b).hexdigest()

    def get(self, kind: str, ident, model: type[BaseModel]):
        """The stored result for ``ident`` validated by ``model`` (a dict), or None (absent or damaged)."""
        path = self.path(kind, ident)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._damaged(path, f"cannot be opened ({exc.strerror or exc})")
        try:
            with os.fdopen(fd, "rb") as fh:
                import stat

                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RESULT_BYTES:
                    return self._damaged(path, "is not a regular file of a sensible size")
                raw = fh.read()
            envelope = json.loads(raw)
            if not isinstance(envelope, dict) or envelope.get("format") != FORMAT or envelope.get("version") != VERSION:
                return self._damaged(path, "is not a result file of this version")
            text = envelope.get("result")
            if not isinstance(text, str) or not isinstance(envelope.get("digest"), str):
                return self._damaged(path, "has no result or digest")
            if not hmac.compare_digest(envelope["digest"], self._mac(ident, text)):
                return self._damaged(path, "does not match its digest (edited, damaged or not written by this server)")
            return model.model_validate_json(text).model_dump(mode="json")
        except (OSError, ValueError, ValidationError, RecursionError) as exc:
            return self._damaged(path, f"is unreadable ({type(exc).__name__})")

    def put(self, kind: str, ident, result: dict, model: type[BaseModel]) -> None:
        """Store ``result`` (validated by ``model`` first: only what could be read back is written)."""
        path = self.path(kind, ident)
        if path is None:
            return
        from vidtune.utils import atomic_write_text

        text = model.model_validate(result).model_dump_json()
        envelope = {"format": FORMAT, "version": VERSION, "ident": ident, "digest": self._mac(ident, text),
                    "result": text}
        try:
            atomic_write_text(path, json.dumps(envelope))
        except (OSError, ValueError) as exc:  # a full disk loses a cached result, not the answer
            log.warning("could not keep the result %s (%s)", path, exc)

    def _damaged(self, path: Path, why: str):
        if str(path) not in self._warned:
            self._warned.add(str(path))
            log.warning("vidtune serve: %s %s; computing it again", path, why)
        return None
