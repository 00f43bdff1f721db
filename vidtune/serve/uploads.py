"""Uploads of ``vidtune serve``: streamed to a file that lives exactly as long as its request.

:func:`receive` parses a ``multipart/form-data`` body as it arrives (python-multipart's streaming
parser, no spooling anywhere else), writes the one ``file`` part to a fresh file in this process's
own upload folder, and deletes that file when the request ends: after the answer, on an error, on a
refused upload, and when the client goes away mid-body. Nothing piles up.

Each server process owns one folder ``<cache>/uploads/<pid>-<random>/``, held with an exclusive
``flock`` for the process's life; at start-up, folders whose lock is free (their server died, even
by ``kill -9``) are removed, so a crash leaves nothing behind for long either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vidtune.errors import UploadRejectedError, VidtuneError
from vidtune.serve.validation import BadRequest

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and the small fields around the file
MAX_FIELDS = 16
MAX_FIELD_BYTES = 8 * 1024
MAX_CONCURRENT = 4


@dataclass
class Upload:
    """A received upload: where its bytes are (until the request ends), its name as sent, the other fields."""

    path: Path
    name: str
    fields: dict[str, str] = field(default_factory=dict)


class UploadFolder:
    """This process's upload folder (see the module docstring); ``None`` folder: uploads are off."""

    def __init__(self, root: Path | None):
        self.root = root
        self.folder: Path | None = None
        self._lock = None
        self.busy = asyncio.Semaphore(MAX_CONCURRENT) if root is not None else None
        if root is not None:
            self._open(Path(root))

    def _open(self, root: Path) -> None:
        import fcntl

        root.mkdir(parents=True, exist_ok=True)
        self._sweep(root)
        folder = root / f"{os.getpid()}-{secrets.token_hex(4)}"
        folder.mkdir(mode=0o700)
        fh = open(folder / ".lock", "a+")  # noqa: SIM115 - held for the life of the server
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a file system without locks: the folder is still ours, only the sweep cannot tell
        self.folder, self._lock = folder, fh

    @staticmethod
    def _sweep(root: Path) -> None:
        """Remove what dead servers left: their folders (lock free), and loose files of older versions."""
        import fcntl

        for p in root.iterdir():
            try:
                if p.is_symlink() or p.is_file():
                    p.unlink()
                    continue
                if not p.is_dir():
                    continue
                lock = p / ".lock"
                if lock.is_file() and not lock.is_symlink():
                    with open(lock, "a+") as fh:
                        try:
                            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:
                            continue  # a live server's folder
                shutil.rmtree(p, ignore_errors=True)
            except OSError as exc:
                log.warning("could not clean %s (%s)", p, exc)

    def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _options(value: bytes) -> tuple[bytes, dict]:
    from python_multipart.multipart import parse_options_header

    return parse_options_header(value)


class _Receiver:
    """Callbacks of python-multipart's streaming parser: fields in memory, the ``file`` part to ``out``."""

    def __init__(self, folder: Path, limit: int, suffixes):
        self.folder, self.limit, self.suffixes = folder, limit, suffixes
        self.fields: dict[str, str] = {}
        self.path: Path | None = None
        self.name = ""
        self.size = 0
        self.ended = False
        self._out = None
        self._headers: dict[str, bytes] = {}
        self._hname = b""
        self._hvalue = b""
        self._part: str | None = None  # "file", "field" or "skip"
        self._fname = ""
        self._fvalue = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self):
        self._headers, self._hname, self._hvalue, self._part = {}, b"", b"", None

    def header_field(self, data, start, end):
        self._hname += data[start:end]

    def header_value(self, data, start, end):
        self._hvalue += data[start:end]

    def header_end(self):
        self._headers[self._hname.decode("latin-1").lower()] = self._hvalue
        self._hname, self._hvalue = b"", b""

    def headers_finished(self):
        _, params = _options(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params:
            filename = params[b"filename"].decode("utf-8", "replace")
            if name != "file":
                raise BadRequest(f"unexpected file in the field {name[:40]!r}: send the clip or image as the "
                                 "multipart field `file`")
            if self.path is not None:
                raise BadRequest("send one file per request (the multipart field `file`, once)")
            suffix = Path(filename.replace("\\", "/")).suffix.lower()
            if suffix not in self.suffixes:
                raise UploadRejectedError(
                    f"{filename!r} is not a video or image file vidtune reads (accepted: "
                    f"{' '.join(sorted(self.suffixes))})", 415)
            self.name = Path(filename.replace("\\", "/")).name or f"upload{suffix}"
            self.path = self.folder / f"{secrets.token_hex(16)}{suffix}"
            self._out = open(self.path, "xb")  # noqa: SIM115 - closed in part_end / close()
            self._part = "file"
        else:
            if len(self.fields) >= MAX_FIELDS:
                raise BadRequest(f"too many form fields (at most {MAX_FIELDS})")
            self._fname, self._fvalue, self._part = name, bytearray(), "field"

    def part_data(self, data, start, end):
        if self._part == "file":
            self.size += end - start
            if self.size > self.limit:
                raise UploadRejectedError(f"upload is over the limit of {self.limit} bytes (--max-upload-mb)", 413)
            self._out.write(data[start:end])
        elif self._part == "field":
            self._fvalue += data[start:end]
            if len(self._fvalue) > MAX_FIELD_BYTES:
                raise BadRequest(f"form field {self._fname[:40]!r} is over {MAX_FIELD_BYTES} bytes")

    def part_end(self):
        if self._part == "file":
            self._out.close()
        elif self._part == "field":
            try:
                self.fields[self._fname] = self._fvalue.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"form field {self._fname[:40]!r} is not UTF-8 text") from None
        self._part = None

    def end(self):
        self.ended = True

    def close(self):
        if self._out is not None and not self._out.closed:
            self._out.close()


@contextlib.asynccontextmanager
async def receive(request, uploads: UploadFolder, limit: int, suffixes):
    """Stream the multipart body of ``request`` into a temporary file; yields an :class:`Upload`.

    The file is deleted when the ``async with`` block ends, however it ends. Refusals: 403 read-only,
    411 no Content-Length, 413 over ``limit``, 415 not a video/image, 503 too many uploads at once,
    400 a malformed body (bad or missing boundary, cut short, no ``file`` field)."""
    from python_multipart.multipart import MultipartParseError, MultipartParser

    if uploads.folder is None:
        raise UploadRejectedError("this server is read-only (--read-only): uploads are off; pick a segment of "
                                  "an indexed video instead", 403)
    length = request.headers.get("content-length")
    if length is None:
        raise UploadRejectedError("uploads need a Content-Length header", 411)
    if not length.isdigit():
        raise UploadRejectedError(f"Content-Length {length[:40]!r} is not a number", 400)
    if int(length) > limit + MULTIPART_OVERHEAD:
        raise UploadRejectedError(f"upload of {int(length)} bytes is over the limit of {limit} bytes "
                                  "(--max-upload-mb)", 413)
    try:
        _, params = _options(request.headers.get("content-type", "").encode("latin-1", "replace"))
    except Exception:  # noqa: BLE001 - a header python-multipart cannot read is a bad request
        params = {}
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise BadRequest("body is multipart without a usable boundary; send a normal multipart/form-data upload")
    if uploads.busy.locked():
        raise UploadRejectedError(f"{MAX_CONCURRENT} uploads are already being processed; try again shortly", 503)
    async with uploads.busy:
        rx = _Receiver(uploads.folder, limit, suffixes)
        try:
            try:
                parser = MultipartParser(boundary, rx.callbacks())
                done = 0
                async for chunk in request.stream():
                    done += len(chunk)
                    if done > limit + MULTIPART_OVERHEAD:
                        raise UploadRejectedError(f"upload is over the limit of {limit} bytes (--max-upload-mb)",
                                                  413)
                    parser.write(chunk)
                parser.finalize()
            except MultipartParseError as exc:
                raise BadRequest(f"body is not a well-formed multipart upload ({exc})") from None
            except (ValueError, TypeError, LookupError) as exc:
                if isinstance(exc, VidtuneError):
                    raise
                raise BadRequest(f"body is not a well-formed multipart upload ({type(exc).__name__})") from None
            if not rx.ended:
                raise BadRequest("body is incomplete: the multipart upload ends before its closing boundary")
            if rx.path is None:
                raise BadRequest("file is missing: send the clip or image as the multipart field `file`")
            yield Upload(rx.path, rx.name, rx.fields)
        finally:
            rx.close()
            if rx.path is not None:
                try:
                    rx.path.unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("could not delete the upload %s (%s)", rx.path, exc)
