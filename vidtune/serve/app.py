"""The web app of ``vidtune serve``: server-rendered pages, a JSON API with the CLI's shapes, and media.

Pages: ``/search``, ``/runs``, ``/runs/{id}``, ``/timeline``. API: ``POST /api/search`` (multipart
``file``, or JSON ``{"text"}`` / ``{"video", "start", "end"}``, each with optional ``k``),
``GET /api/index``, ``GET /api/dedupe``, ``GET /api/runs``, ``GET /api/runs/{id}``,
``GET /api/runs/{id}/confusion``, ``POST /api/tag``, ``GET /api/tag/export``. Media:
``/media/{key}`` (HTTP range requests), ``/sprite/{key}``, ``/runs/{id}/files/{name}``.
This module needs the ``web`` extra; :func:`vidtune.serve.create_app` imports it on first use.
Errors are JSON ``{"error": ...}``: 400 bad input, 401 no/wrong token, 403 read-only, 404 anything not
served, 411/413/415/503 uploads (:mod:`vidtune.serve.validation` answers them all; request bodies are
validated there, by pydantic models). With a ``token``, :class:`vidtune.serve.auth.TokenGuard` stands in
front of every route.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, RedirectResponse, Response

from vidtune.errors import ConfigError, NotServedError, UploadRejectedError, VidtuneError
from vidtune.serve import uploads, validation
from vidtune.serve.actions import TAG_FORMATS, Workbench, index_modalities
from vidtune.serve.catalog import Catalog, Media, identity
from vidtune.serve.thumbs import MAX_FRAMES, MAX_HEIGHT, ThumbCache
from vidtune.serve.validation import SearchRequest, TagRequest

HERE = Path(__file__).resolve().parent
MAX_K = 100
Seconds = Annotated[float | None, Query(ge=0.0, le=1e7, allow_inf_nan=False)]


def upload_suffixes() -> frozenset[str]:
    from vidtune.index.embed import IMAGE_EXTENSIONS
    from vidtune.io import VIDEO_EXTENSIONS

    return frozenset(VIDEO_EXTENSIONS) | frozenset(IMAGE_EXTENSIONS)


def _json(obj, status: int = 200):
    from vidtune.utils import json_text

    return Response(json_text(obj, indent=None), status_code=status, media_type="application/json")


class VerifiedFile(FileResponse):
    """A :class:`FileResponse` of the file :meth:`Catalog.media` checked, and nothing else: the real path is
    opened without following symlinks, and the file opened must be the one whose digest was checked
    (same device, inode, size, mtime and ctime); it is sent through that open descriptor."""

    def __init__(self, m: Media, **kwargs):
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(m.path, flags)
        except OSError:
            raise NotServedError(f"video {m.key!r} is not available") from None
        st = os.fstat(fd)
        if identity(st) != identity(m.stat):
            os.close(fd)
            raise NotServedError(f"video {m.key!r} changed while it was being checked; try again")
        self.fd = fd
        path = f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else str(m.path)
        super().__init__(path, stat_result=st, **kwargs)

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            os.close(self.fd)


def create_app(catalog: Catalog, device: str = "auto", token: str | None = None, label=None):
    """The FastAPI application serving ``catalog`` (see the module docstring for its routes); with ``token``,
    every request must carry it, without one only requests addressed to localhost are answered
    (:mod:`vidtune.serve.auth`); ``label``: a :class:`~vidtune.serve.labeling.LabelSetup` adds the Label page
    (:mod:`vidtune.serve.labeling`)."""
    bench = Workbench(catalog, device=device)
    desk = None
    if label is not None:
        from vidtune.serve.labeling import LabelDesk

        desk = LabelDesk(label, catalog, device=device)
    thumbs = ThumbCache(None if catalog.read_only else catalog.cache_dir / "thumbs")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    suffixes = upload_suffixes()

    @asynccontextmanager
    async def lifespan(app):
        yield
        bench.close()
        if desk is not None:
            desk.close()
        catalog.close()

    app = FastAPI(title="vidtune", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.catalog, app.state.bench = catalog, bench
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    validation.install(app)
    from vidtune.serve.auth import LocalHostGuard, TokenGuard

    if token is not None:
        app.add_middleware(TokenGuard, token=token)
    else:  # no token: only requests addressed to this machine (no DNS rebinding)
        app.add_middleware(LocalHostGuard)

    async def work(fn, *args, **kwargs):
        """Model work on the workbench's one thread."""
        return await asyncio.get_running_loop().run_in_executor(bench.pool, lambda: fn(*args, **kwargs))

    def page(request: Request, name: str, **context):
        ctx = {"index": catalog.index_dir is not None, "runs": list(catalog.runs), "read_only": catalog.read_only,
               "label": desk is not None, **context}
        return templates.TemplateResponse(request, name, ctx)

    # -- pages ---------------------------------------------------------------------------------------------
    if desk is not None:
        from vidtune.serve.labeling import add_label_routes

        add_label_routes(app, desk, page, _json)

    @app.get("/")
    async def home():
        first = "/label" if desk is not None else "/search" if catalog.index_dir is not None else "/runs"
        return RedirectResponse(first, status_code=307)

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
        m = await run_in_threadpool(catalog.media, key)
        kind = mimetypes.guess_type(m.path.name)[0] or "application/octet-stream"
        return VerifiedFile(m, media_type=kind, content_disposition_type="inline")

    @app.get("/sprite/{key:path}")
    async def sprite(key: str, start: Seconds = None, end: Seconds = None,
                     n: Annotated[int, Query(ge=1, le=MAX_FRAMES)] = 6,
                     h: Annotated[int, Query(ge=16, le=MAX_HEIGHT)] = 72):
        m = await run_in_threadpool(catalog.media, key)
        start = start or 0.0
        end = start + 1e-3 if end is None else end
        data = await run_in_threadpool(thumbs.sprite, m.path, start, max(end, start), n, h)
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

    def upload(request: Request):
        """The multipart ``file`` of ``request``, deleted when the ``async with`` ends (see :mod:`.uploads`)."""
        if catalog.uploads is None:
            raise UploadRejectedError("this server is read-only (--read-only): uploads are off; pick a "
                                              "segment of an indexed video instead", 403)
        return uploads.receive(request, catalog.uploads, catalog.max_upload_bytes, suffixes)

    def is_multipart(request: Request) -> bool:
        return request.headers.get("content-type", "").lower().startswith("multipart/form-data")

    @app.post("/api/search")
    async def api_search(request: Request):
        if is_multipart(request):
            async with upload(request) as up:
                q = validation.form_model(SearchRequest, up.fields)
                if q.text is not None or q.video is not None:
                    raise validation.BadRequest("body needs one query: a file, a text or a video, not several")
                try:
                    result = await work(bench.search_file, up.path, k=q.k, start=q.start, end=q.end)
                except VidtuneError as exc:  # name the file as the user knows it, not by its place in the cache
                    raise VidtuneError(str(exc).replace(str(up.path), up.name)) from None
                result["query"] = up.name
                return _json(result)
        q = await validation.json_body(request, SearchRequest)
        if q.text is not None and q.video is not None:
            raise validation.BadRequest("body needs one query: a text or a video, not both")
        if q.text is not None:
            result = await work(bench.search_text, q.text, k=q.k)
        elif q.video is not None:
            result = await work(bench.search_indexed, q.video, k=q.k, start=q.start, end=q.end)
        else:
            raise ConfigError("body", "needs one query: a multipart `file`, {\"text\": ...} or {\"video\": ID}")
        return _json(result)

    @app.get("/api/dedupe")
    async def api_dedupe(threshold: Annotated[float, Query(ge=-1.0, le=1.0, allow_inf_nan=False)] = 0.8):
        return _json(await work(bench.dedupe, threshold))

    @app.get("/api/runs")
    async def api_runs():
        return _json({"runs": [await work(bench.run_summary, rid) for rid in catalog.runs]})

    @app.get("/api/runs/{run_id}")
    async def api_run(run_id: str):
        return _json(await work(bench.run_summary, run_id))

    @app.get("/api/runs/{run_id}/confusion")
    async def api_confusion(run_id: str):
        return _json(await work(bench.confusion_clips, run_id))

    def _pick_run(run_id: str | None) -> str:
        if run_id:
            catalog.run_dir(run_id)
            return run_id
        if not catalog.runs:
            raise NotServedError("this server has no run to tag with (start it with --run RUN_DIR)")
        return next(iter(catalog.runs))

    @app.post("/api/tag")
    async def api_tag(request: Request):
        if is_multipart(request):
            async with upload(request) as up:
                q = validation.form_model(TagRequest, up.fields)
                if q.video is not None:
                    raise validation.BadRequest("body needs one video: an uploaded file or a video id, not both")
                run_id = _pick_run(q.run)
                key = "u" + up.path.stem[:32]
                result = await work(bench.tag, run_id, key, (up.path, up.name))
                return _json({**result, "run": run_id, "video": key})
        q = await validation.json_body(request, TagRequest)
        run_id = _pick_run(q.run)
        if not q.video:
            raise ConfigError("video", "is missing: give {\"video\": ID} of an indexed video, or upload `file`")
        result = await work(bench.tag, run_id, q.video)
        return _json({**result, "run": run_id, "video": q.video})

    @app.get("/api/tag/export")
    async def api_tag_export(video: Annotated[str, Query(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$")],
                             run: Annotated[str | None, Query(max_length=80)] = None, format: str = "json"):
        run_id = _pick_run(run)
        if format not in TAG_FORMATS:
            raise ConfigError("format", f"must be one of {', '.join(TAG_FORMATS)}, got {format[:20]!r}")
        text, name = await work(bench.tag_export, run_id, video, format)
        stem = Path(name).stem or video
        return Response(text, media_type=TAG_FORMATS[format] + "; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{_ascii(stem)}.{format}"'})

    return app


def _ascii(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)[:100] or "tags"
