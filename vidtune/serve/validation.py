"""The one input validation layer of ``vidtune serve``: pydantic models with bounds, and one error shape.

Every JSON body is parsed *and* validated by a pydantic model in one step (:func:`json_body`), with
pydantic-core's JSON parser: nesting deeper than 200 levels, lone surrogates (``"\\ud800"``), numbers
that overflow to infinity (``1e309``) and non-objects are answered as bad input, never as a crash.
Multipart form fields go through the same models (:func:`form_model`). Query parameters are declared
with FastAPI's ``Query(ge=..., le=...)``, which is pydantic too. :func:`install` makes every failure
of any of these, and every other error, answer ``{"error": "..."}`` with a 4xx status (FastAPI's own
``{"detail": ...}`` 422 never reaches a client), so routes added later get the same for free.

Models here are strict: ``k: 5.5``, ``k: true`` and ``{"text": 5}`` are refused, not coerced, and
unknown fields are refused (a typo is an error, not silently ignored). :data:`Text` refuses NUL and
other control characters; :data:`Key` is the shape of the server's own opaque keys.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from vidtune.errors import BadRequestError, NotServedError, UploadRejectedError, VidtuneError

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 1 << 20  # a JSON request body (queries, labels) is small; uploads are multipart
MAX_TEXT = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _clean_text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not hold NUL or other control characters")
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_clean_text)]
"""Words typed by a person: at most 1000 characters, no NUL or control characters."""
Key = Annotated[str, Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")]
"""An id handed out by the server (``v12``, ``r0c1a2b``, a run id)."""
Seconds = Annotated[float, Field(ge=0.0, le=1e7, allow_inf_nan=False)]
TopK = Annotated[int, Field(ge=1, le=100)]


class Strict(BaseModel):
    """Base of every request model: strict types, unknown fields refused, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SearchRequest(Strict):
    """``POST /api/search``: one of ``text`` / ``video`` (or a multipart ``file``), with ``k``, ``start``, ``end``."""

    text: Text | None = None
    video: Key | None = None
    start: Seconds | None = None
    end: Seconds | None = None
    k: TopK = 10


class TagRequest(Strict):
    """``POST /api/tag``: ``video`` (or a multipart ``file``) tagged with ``run`` (default: the first run)."""

    run: Key | None = None
    video: Key | None = None


def _bounds(model, name: str) -> tuple:
    lo = hi = None
    field = getattr(model, "model_fields", {}).get(name) if model is not None else None
    for m in getattr(field, "metadata", ()) or ():
        lo = getattr(m, "ge", lo) if getattr(m, "ge", None) is not None else lo
        hi = getattr(m, "le", hi) if getattr(m, "le", None) is not None else hi
    return lo, hi


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def error_text(errors: list[dict], model=None) -> str:
    """One readable sentence per pydantic error (the first three), each naming the field."""
    out = []
    for e in errors[:3]:
        loc = [str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "body"
        kind = e.get("type", "")
        if kind == "json_invalid":
            why = (e.get("ctx") or {}).get("error", "")
            out.append(f"body is not valid JSON ({why})" if why else "body is not valid JSON")
            continue
        if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            lo, hi = _bounds(model, loc[0] if loc else "")
            if lo is not None and hi is not None:
                out.append(f"{field} must be between {lo:g} and {hi:g}, got {_short(e.get('input'))}")
                continue
        if kind == "extra_forbidden":
            out.append(f"{field} is not a field this request takes")
            continue
        if kind == "missing":
            out.append(f"{field} is missing")
            continue
        if kind == "model_type" and not loc:
            out.append("body must be a JSON object")
            continue
        msg = e.get("msg", "is invalid")
        msg = msg[0].lower() + msg[1:] if msg else msg
        msg = msg.replace("value error, ", "")
        got = "" if kind.startswith("json") or "input" not in e else f", got {_short(e['input'])}"
        out.append(f"{field}: {msg}{got}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(out) + more


BadRequest = BadRequestError  # the short name routes use


def parse(model: type[BaseModel], data) -> BaseModel:
    """``data`` (a dict) validated by ``model``, or :class:`BadRequest`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(error_text(exc.errors(include_url=False), model)) from None


def form_model(model: type[BaseModel], fields: dict[str, str]) -> BaseModel:
    """Multipart form fields (strings) validated by ``model``: ``"5"`` is 5 for an ``int``, ``"5.5"`` is refused."""
    try:
        return model.model_validate_strings(fields)
    except ValidationError as exc:
        raise BadRequest(error_text(exc.errors(include_url=False), model)) from None


async def read_body(request, limit: int = MAX_JSON_BYTES) -> bytes:
    """The raw request body, refused (413) once it passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise UploadRejectedError(f"request body of {int(length)} bytes is over the limit of {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UploadRejectedError(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request, model: type[BaseModel], limit: int = MAX_JSON_BYTES) -> BaseModel:
    """The request's JSON body, parsed and validated by ``model`` in one step (see the module docstring)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        raise BadRequest("body is empty: send a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise BadRequest(error_text(exc.errors(include_url=False), model)) from None


def _json_response(obj: dict, status: int, headers=None):
    from starlette.responses import JSONResponse

    return JSONResponse(obj, status_code=status, headers=headers)


def status_of(exc: VidtuneError) -> int:
    if isinstance(exc, NotServedError):
        return 404
    return int(getattr(exc, "status", 400))


def install(app) -> None:
    """Answer every error of ``app`` as ``{"error": ...}``: vidtune's errors (400/403/404/413/415), request
    validation (400, not FastAPI's 422 ``{"detail"}``), unknown routes and methods (404/405), a client that
    went away mid-body (nothing to answer), and anything unexpected (500, logged once with its traceback)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    @app.exception_handler(VidtuneError)
    async def vidtune_error(request, exc: VidtuneError):
        return _json_response({"error": str(exc)}, status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request, exc: RequestValidationError):
        return _json_response({"error": error_text(list(exc.errors()))}, 400)

    @app.exception_handler(ValidationError)
    async def model_invalid(request, exc: ValidationError):
        return _json_response({"error": error_text(exc.errors(include_url=False))}, 400)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            detail = f"nothing at {request.url.path[:200]!r} on this server"
        return _json_response({"error": detail}, exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def gone(request, exc):
        return _json_response({"error": "the client closed the connection before the body was complete"}, 400)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        log.error("vidtune serve: %s %s failed: %s: %s", request.method, request.url.path[:200],
                  type(exc).__name__, exc, exc_info=exc)
        return _json_response({"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500)
