"""The web app of ``vidtune serve``: server-rendered pages, a JSON API with the CLI's shapes, and media.

Pages: ``/search``, ``/runs``, ``/runs/{id}``, ``/timeline``. API: ``POST /api/search`` (multipart
``file``, or JSON ``{"text"}`` / ``{"video", "start", "end"}``, each with optional ``k``),
``GET /api/index``, ``GET /api/dedupe``, ``GET /api/runs``, ``GET /api/runs/{id}``,
``GET /api/runs/{id}/confusion``, ``POST /api/tag``, ``GET /api/tag/export``. Media:
``/media/{key}`` (HTTP range requests), ``/sprite/{key}``, ``/runs/{id}/files/{name}``.
This module needs the ``web`` extra; :func:`vidtune.serve.create_app` imports it on first use.
Errors are JSON ``{"error": ...}``: 400 bad input, 403 read-only, 404 anything not served, 411/413/415
uploads.
"""

from __future__ import annotations

import asyncio
import math
import mimetypes
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.responses import FileResponse, RedirectResponse, Response

from vidtune.errors import ConfigError, NotServedError, UploadRejectedError, VidtuneError
from vidtune.serve.actions import TAG_FORMATS, Workbench, index_modalities
from vidtune.serve.catalog import Catalog
from vidtune.serve.thumbs import ThumbCache

HERE = Path(__file__).resolve().parent
MAX_K = 100
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and small fields around the uploaded file


def upload_suffixes() -> frozenset[str]:
    from vidtune.index.embed import IMAGE_EXTENSIONS
    from vidtune.io import VIDEO_EXTENSIONS

    return frozenset(VIDEO_EXTENSIONS) | frozenset(IMAGE_EXTENSIONS)


def _json(obj, status: int = 200):
    from vidtune.utils import json_text

    return Response(json_text(obj, indent=None), status_code=status, media_type="application/json")


def _number(value, field: str, default=None, lo=None, hi=None, integer: bool = False):
    if value is None or value == "":
        return default
    try:
        v = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a {'whole ' if integer else ''}number, got {value!r}") from None
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(field, f"must be between {lo} and {hi}, got {value!r}")
    return v


def create_app(catalog: Catalog, device: str = "auto"):
    """The FastAPI application serving ``catalog`` (see the module docstring for its routes)."""
    bench = Workbench(catalog, device=device)
    thumbs = ThumbCache(None if catalog.read_only else catalog.cache_dir / "thumbs")
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    @asynccontextmanager
    async def lifespan(app):
        yield
        bench.close()

    app = FastAPI(title="vidtune", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.catalog, app.state.bench = catalog, bench
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    async def work(fn, *args, **kwargs):
        """Model work on the workbench's one thread."""
        return await asyncio.get_running_loop().run_in_executor(bench.pool, lambda: fn(*args, **kwargs))

    @app.exception_handler(VidtuneError)
    async def vidtune_error(request: Request, exc: VidtuneError):
        status = 404 if isinstance(exc, NotServedError) else getattr(exc, "status", 400)
        return _json({"error": str(exc)}, status)

    def page(request: Request, name: str, **context):
        ctx = {"index": catalog.index_dir is not None, "runs": list(catalog.runs), "read_only": catalog.read_only,
               **context}
        return templates.TemplateResponse(request, name, ctx)

    # -- pages ---------------------------------------------------------------------------------------------
    @app.get("/")
    async def home():
        return RedirectResponse("/search" if catalog.index_dir is not None else "/runs", status_code=307)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():  # browsers that ask before reading the page's <link rel="icon">
        return RedirectResponse("/static/favicon.svg", status_code=301)

    @app.get("/search")
    async def search_page(request: Request):
        return page(request, "search.html", title="Search")

    @app.get("/runs")
    async def runs_page(request: Request):
        rows = [await work(bench.run_summary, rid) for rid in catalog.runs]
        return page(request, "runs.html", title="Runs", rows=rows)

    @app.get("/runs/{run_id}")
    async def run_page(request: Request, run_id: str):
        summary = await work(bench.run_summary, run_id)
        return page(request, "run.html", title=f"Run {run_id}", run=summary)

    @app.get("/timeline")
    async def timeline_page(request: Request):
        return page(request, "timeline.html", title="Timelines")

    # -- files ------------------------------------------------------------------------------------------------
    @app.get("/media/{key:path}")
    async def media(key: str):
        m = catalog.media(key)
        kind = mimetypes.guess_type(m.path.name)[0] or "application/octet-stream"
        return FileResponse(m.path, media_type=kind, content_disposition_type="inline")

    @app.get("/sprite/{key:path}")
    async def sprite(key: str, start: float = 0.0, end: float | None = None, n: int = 6, h: int = 72):
        from starlette.concurrency import run_in_threadpool

        m = catalog.media(key)
        start = _number(start, "start", 0.0, lo=0.0)
        end = _number(end, "end", start + 1e-3, lo=0.0)
        data = await run_in_threadpool(thumbs.sprite, m.path, start, max(end, start), int(n), int(h))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/runs/{run_id}/files/{name:path}")
    async def run_file(run_id: str, name: str):
        return FileResponse(catalog.run_file(run_id, name))

    # -- JSON API --------------------------------------------------------------------------------------------
    @app.get("/api/index")
    async def api_index():
        if catalog.index_dir is None:
            raise NotServedError("this server has no index (start it with --index INDEX_DIR)")
        videos = await work(catalog.refresh_index)
        return _json({"index": str(catalog.index_dir), "videos": videos, "read_only": catalog.read_only,
                      **await work(index_modalities, catalog.index_dir)})

    async def _receive_upload(request: Request, limit: int) -> tuple[str, Path, str, dict]:
        """Stream the multipart body into the cache's uploads folder (never the system's temporary folder)."""
        from python_multipart import FormParser
        from python_multipart.multipart import parse_options_header

        _, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary")
        if not boundary:
            raise ConfigError("body", "is multipart without a boundary; send a normal multipart/form-data upload")
        fields: dict[str, str] = {}
        files: list = []
        folder = catalog.cache_dir / "uploads"
        parser = FormParser("multipart/form-data", lambda f: fields.__setitem__(
            (f.field_name or b"").decode("utf-8", "replace"), (f.value or b"").decode("utf-8", "replace")),
            files.append, boundary=boundary,
            config={"UPLOAD_DIR": str(folder), "UPLOAD_DELETE_TMP": False, "MAX_MEMORY_FILE_SIZE": 1 << 20})
        done = 0
        try:
            async for chunk in request.stream():
                done += len(chunk)
                if done > limit + MULTIPART_OVERHEAD:
                    raise UploadRejectedError(f"upload is over the limit of {limit} bytes (--max-upload-mb)", 413)
                parser.write(chunk)
            parser.finalize()
            mine = [f for f in files if f.field_name == b"file"]
            if not mine:
                raise ConfigError("file", "is missing: send the clip or image as the multipart field `file`")
            f = mine[0]
            name = (f.file_name or b"").decode("utf-8", "replace")
            if f.size > limit:
                raise UploadRejectedError(f"upload of {f.size} bytes is over the limit of {limit} bytes "
                                          "(--max-upload-mb)", 413)
            key, path = catalog.new_upload(name, upload_suffixes())
            f.flush_to_disk()
            f.file_object.close()
            os.replace(os.fsdecode(f.actual_file_name), path)
            files.remove(f)
        finally:
            for other in files:  # refused or extra files leave nothing behind
                try:
                    other.file_object.close()
                    if not other.in_memory and other.actual_file_name:
                        Path(os.fsdecode(other.actual_file_name)).unlink(missing_ok=True)
                except (OSError, AttributeError):
                    pass
        catalog.register(key, path, name or key)
        return key, path, name or key, fields

    async def save_upload(request: Request) -> tuple[str, Path, str, dict]:
        """The multipart ``file`` saved under the cache's uploads: (key, path, client's name, other fields)."""
        if catalog.read_only:
            raise UploadRejectedError("this server is read-only (--read-only): uploads are off; pick a segment of "
                                      "an indexed video instead", 403)
        length = request.headers.get("content-length")
        if length is None:
            raise UploadRejectedError("uploads need a Content-Length header", 411)
        limit = catalog.max_upload_bytes
        if not length.isdigit():
            raise UploadRejectedError(f"Content-Length {length!r} is not a number", 400)
        if int(length) > limit + MULTIPART_OVERHEAD:
            raise UploadRejectedError(f"upload of {int(length)} bytes is over the limit of {limit} bytes "
                                      "(--max-upload-mb)", 413)
        return await _receive_upload(request, limit)

    async def body(request: Request) -> tuple[dict, tuple | None]:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            key, path, name, fields = await save_upload(request)
            return fields, (key, path, name)
        try:
            data = await request.json()
        except ValueError:
            raise ConfigError("body", "must be JSON ({\"text\": ...} or {\"video\": ...}) or a multipart upload "
                                      "in the field `file`") from None
        if not isinstance(data, dict):
            raise ConfigError("body", "must be a JSON object")
        return data, None

    @app.post("/api/search")
    async def api_search(request: Request):
        data, upload = await body(request)
        k = _number(data.get("k"), "k", 10, lo=1, hi=MAX_K, integer=True)
        start = _number(data.get("start"), "start", None, lo=0.0)
        end = _number(data.get("end"), "end", None, lo=0.0)
        if upload is not None:
            key, path, name = upload
            try:
                result = await work(bench.search_file, path, k=k, start=start, end=end)
            except VidtuneError as exc:  # name the file as the user knows it, not by its place in the cache
                raise VidtuneError(str(exc).replace(str(path), name)) from None
            result["query"] = name
        elif data.get("text") is not None:
            result = await work(bench.search_text, str(data["text"]), k=k)
        elif data.get("video") is not None:
            result = await work(bench.search_indexed, str(data["video"]), k=k, start=start, end=end)
        else:
            raise ConfigError("body", "needs one query: a multipart `file`, {\"text\": ...} or {\"video\": ID}")
        return _json(result)

    @app.get("/api/dedupe")
    async def api_dedupe(threshold: str = "0.8"):
        t = _number(threshold, "threshold", 0.8, lo=-1.0, hi=1.0)
        return _json(await work(bench.dedupe, t))

    @app.get("/api/runs")
    async def api_runs():
        return _json({"runs": [await work(bench.run_summary, rid) for rid in catalog.runs]})

    @app.get("/api/runs/{run_id}")
    async def api_run(run_id: str):
        return _json(await work(bench.run_summary, run_id))

    @app.get("/api/runs/{run_id}/confusion")
    async def api_confusion(run_id: str):
        return _json(await work(bench.confusion_clips, run_id))

    def _pick_run(run_id) -> str:
        if run_id:
            catalog.run_dir(str(run_id))
            return str(run_id)
        if not catalog.runs:
            raise NotServedError("this server has no run to tag with (start it with --run RUN_DIR)")
        return next(iter(catalog.runs))

    @app.post("/api/tag")
    async def api_tag(request: Request):
        data, upload = await body(request)
        run_id = _pick_run(data.get("run"))
        key = upload[0] if upload is not None else data.get("video")
        if not key:
            raise ConfigError("video", "is missing: give {\"video\": ID} of an indexed video, or upload `file`")
        result = await work(bench.tag, run_id, str(key))
        return _json({**result, "run": run_id, "video": key})

    @app.get("/api/tag/export")
    async def api_tag_export(video: str, run: str | None = None, format: str = "json"):
        run_id = _pick_run(run)
        if format not in TAG_FORMATS:
            raise ConfigError("format", f"must be one of {', '.join(TAG_FORMATS)}, got {format!r}")
        text = await work(bench.tag_export, run_id, video, format)
        stem = Path(catalog.media(video).name).stem or video
        return Response(text, media_type=TAG_FORMATS[format] + "; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{_ascii(stem)}.{format}"'})

    return app


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)[:100] or "tags"
