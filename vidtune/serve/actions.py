"""What the pages and the JSON API do, without HTTP: search, dedupe, tag, run summaries.

One :class:`Workbench` per server. Its model work (the index's embedder, loaded runs) runs on one
worker thread, so the SQLite connection and the models are only ever used by the thread that made
them and two requests never fight over the CPU. Results have the shapes of the CLI's ``--json``.
"""

from __future__ import annotations

import csv
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vidtune.errors import ConfigError, NotServedError, VidtuneError
from vidtune.serve.catalog import Catalog, identity
from vidtune.serve.results import Bounded, ResultStore

TAG_FORMATS = {"json": "application/json", "csv": "text/csv", "vtt": "text/vtt", "srt": "application/x-subrip"}


def text_search(searcher, text: str, k: int = 10) -> dict:
    """Spans matching words: ``vidtune search INDEX --text``'s object.

    An index built without ``--modalities ...,speech,text`` answers with :class:`MissingModalityError`
    (HTTP 400), which says how to get one. This is the only place the server calls for words.
    """
    from vidtune.index.text_search import search_text

    if not text or not text.strip():
        raise ConfigError("text", "is empty; type some words to search for")
    return search_text(searcher.ix.root, text, k=k)


def index_modalities(index_dir) -> dict:
    """What an index can be searched with: ``{"modalities": ["visual", "speech", "text"], "frames": bool}``
    (``frames``: text-to-frame search with CLIP weights), for the page's hints."""
    from vidtune.index.clip_text import has_frame_index
    from vidtune.index.text_search import text_index_info

    words = text_index_info(index_dir) if index_dir is not None else None
    return {"modalities": ["visual"] + (words["modalities"] if words else []),
            "frames": index_dir is not None and has_frame_index(index_dir)}


def read_history(path: Path) -> list[dict]:
    """history.csv as rows of numbers (empty cells: None)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out = {}
            for k, v in row.items():
                if v in ("", None):
                    out[k] = None
                    continue
                try:
                    out[k] = int(v) if k == "epoch" else float(v)
                except ValueError:
                    out[k] = v
            rows.append(out)
    return rows


class ConfusionClip(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    path: str
    start: Annotated[float, Field(allow_inf_nan=False)] | None = None
    end: Annotated[float, Field(allow_inf_nan=False)] | None = None
    score: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    digest: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class ConfusionResult(BaseModel):
    """The schema a stored confusion result must have to be used again."""

    model_config = ConfigDict(extra="forbid", strict=True)
    labels: list[str]
    confusion: list[list[Annotated[int, Field(ge=0)]]]
    cells: dict[str, list[ConfusionClip]]
    skipped: list[Any]

    @model_validator(mode="after")
    def _shape(self):
        n = len(self.labels)
        if len(self.confusion) != n or any(len(row) != n for row in self.confusion):
            raise ValueError("confusion is not a square matrix over the labels")
        for cell, clips in self.cells.items():
            t, _, p = cell.partition(",")
            if not (t.isdigit() and p.isdigit() and int(t) < n and int(p) < n):
                raise ValueError(f"cell {cell!r} is not a cell of the matrix")
            if len(clips) > self.confusion[int(t)][int(p)]:
                raise ValueError(f"cell {cell!r} lists more clips than it counts")
        return self


RUN_IDENTITY_FILES = ("model.safetensors", "config.json", "split.json")


class Workbench:
    """The server's state beside the catalog: a searcher, loaded runs, and results worth keeping."""

    def __init__(self, catalog: Catalog, device: str = "auto"):
        self.catalog = catalog
        self.device = device
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidtune-serve")
        self._searcher = None
        self._runs: dict[str, tuple] = {}  # one per served run (a fixed set)
        self._tags = Bounded(64)  # (run id, video key) -> tag result
        self._dedupe = Bounded(8)  # threshold -> pairs and groups
        self._confusion = Bounded(32)  # (run id, identities of its files) -> result
        self.results = ResultStore(None if catalog.read_only else catalog.cache_dir / "results")
        self._lock = threading.Lock()

    def close(self) -> None:
        def _close():
            if self._searcher is not None:
                self._searcher.close()
                self._searcher = None

        self.pool.submit(_close).result()
        self.pool.shutdown(wait=True)

    @property
    def feature_cache(self) -> dict:
        c = self.catalog
        return {"cache_dir": None if c.read_only else c.cache_dir / "features", "use_cache": not c.read_only}

    # -- search (worker thread only) -------------------------------------------------------------------
    def searcher(self):
        if self.catalog.index_dir is None:
            raise NotServedError("this server has no index (start it with --index INDEX_DIR)")
        if self._searcher is None:
            from vidtune.index.search import Searcher

            self._searcher = Searcher(self.catalog.index_dir, device=self.device, **self.feature_cache)
        return self._searcher

    def search_file(self, path: Path, k: int = 10, start=None, end=None) -> dict:
        """An uploaded file as the query. Its features are not cached: the upload is deleted when the
        request ends, and its features would only pile up."""
        searcher = self.searcher()
        embedder = searcher.embedder
        kept, embedder.cache = embedder.cache, None
        try:
            return searcher.search(path, k=k, start=start, end=end)
        finally:
            embedder.cache = kept

    def search_indexed(self, key: str, k: int = 10, start=None, end=None) -> dict:
        """A segment of an indexed video as the query (the query names the video as indexed)."""
        m = self.catalog.media(key)
        if not key.startswith("v"):
            raise NotServedError(f"{key!r} is not a video of the index")
        result = self.searcher().search(m.path, k=k, start=start, end=end)
        result["query"] = m.name
        return result

    def search_text(self, text: str, k: int = 10) -> dict:
        return text_search(self.searcher(), text, k)

    def dedupe(self, threshold: float = 0.8) -> dict:
        """``vidtune dedupe INDEX --json``'s object (kept per threshold: the index does not change under us)."""
        from vidtune.index.dedupe import duplicates_in

        found = self._dedupe.get(threshold)
        if found is None:
            found = {"index": str(self.catalog.index_dir), **duplicates_in(self.searcher(), threshold)}
            self._dedupe.put(threshold, found)
        return found

    # -- runs ----------------------------------------------------------------------------------------------
    def loaded_run(self, run_id: str):
        if run_id not in self._runs:
            from vidtune.runs.store import load_run

            self._runs[run_id] = load_run(self.catalog.run_dir(run_id))
        return self._runs[run_id]

    def run_summary(self, run_id: str) -> dict:
        """``GET /api/runs/{id}``: metrics.json with the run's id, labels, task, history and lineage."""
        from vidtune.runs.config import RunConfig

        c = self.catalog
        run_dir = c.run_dir(run_id)
        config = RunConfig.read(run_dir)
        metrics = c.run_json(run_id, "metrics.json", default={})
        try:
            history = read_history(c.run_file(run_id, "history.csv"))
        except NotServedError:
            history = []
        files = {}
        for name in ("learning_curves.png", "confusion_matrix.png", "robustness.png"):
            try:
                c.run_file(run_id, name)
                files[name] = f"/runs/{run_id}/files/{name}"
            except NotServedError:
                pass
        return {**metrics, "id": run_id, "run": str(run_dir), "run_id": config.run_id, "task": config.task,
                "labels": list(config.labels), "backbone": config.model.backbone, "temporal": config.model.temporal,
                "created": config.created, "history": history, "lineage": self.lineage(config), "files": files}

    def lineage(self, config) -> list[dict]:
        """The ``--init`` chain, nearest first: ``[{"init", "run_id", "backbone", "carried", "id"}]``; ``id``
        is the served run with that run_id, if any."""
        from vidtune.runs.config import RunConfig

        served = {}
        for rid, d in self.catalog.runs.items():
            try:
                served.setdefault(RunConfig.read(d).run_id, rid)
            except Exception:  # noqa: BLE001 - a broken sibling run must not break this page
                continue
        chain, node = [], config.lineage
        while node:
            chain.append({"init": node.get("init"), "run_id": node.get("run_id"), "backbone": node.get("backbone"),
                          "temporal": node.get("temporal"), "carried": node.get("carried", []),
                          "id": served.get(node.get("run_id"))})
            ancestors = node.get("ancestors") or []
            node = ancestors[0] if ancestors else None
        return chain

    def run_identity(self, run_id: str) -> tuple[tuple, dict]:
        """What a run's results depend on: cheap stat identities (for the memory cache) and the full
        identity the result file is named by (real folder path, content digests of its files)."""
        from vidtune.utils import file_digest

        root = self.catalog.run_dir(run_id).resolve()
        stats, digests = [str(root)], {}
        for name in RUN_IDENTITY_FILES:
            try:
                st = os.stat(root / name)
                stats.append(identity(st))
            except OSError:
                stats.append(None)
        quick = tuple(stats)
        for name, st in zip(RUN_IDENTITY_FILES, quick[1:]):
            try:
                digests[name] = file_digest(root / name) if st is not None else None
            except (OSError, VidtuneError):
                digests[name] = None
        return quick, {"v": 1, "run": str(root), "files": digests}

    def confusion_clips(self, run_id: str) -> dict:
        """The validation clips behind each cell of the run's confusion matrix (from split.json).

        ``{"labels", "confusion", "cells": {"<true>,<pred>": [{"id", "path", "start", "end", "score"}]},
        "skipped"}``. Computed once with the run's model; kept in memory and in the cache folder under a
        name derived from the run's real path and file digests (never from its fields), and read back
        only when its digest and schema check out (:mod:`vidtune.serve.results`).
        """
        self.catalog.run_dir(run_id)
        quick, ident = self.run_identity(run_id)
        result = self._confusion.get((run_id, quick))
        if result is None:
            result = self.results.get("confusion", ident, ConfusionResult)
            if result is None:
                result = self._compute_confusion(run_id)
                self.results.put("confusion", ident, result, ConfusionResult)
            self._confusion.put((run_id, quick), result)
        out = {**result, "cells": {}}
        for cell, clips in result["cells"].items():  # keys are handed out per server process
            out["cells"][cell] = [{**{k: v for k, v in clip.items() if k != "digest"},
                                   "id": self._clip_key(run_id, clip["path"], clip["digest"])} for clip in clips]
        return out

    def _compute_confusion(self, run_id: str) -> dict:
        import torch

        from vidtune.data.manifest import VideoItem
        from vidtune.runs.device import resolve_device
        from vidtune.runs.inference import run_clips
        from vidtune.utils import file_digest

        c = self.catalog
        model, config = self.loaded_run(run_id)
        if config.multilabel:
            raise ConfigError("run", "is multi-label: it has no confusion matrix (see its per-label AP)")
        split = c.run_json(run_id, "split.json", default={}) or {}
        val = split.get("val", []) if isinstance(split, dict) else []
        rows = [r for r in val if isinstance(r, dict) and isinstance(r.get("path"), str)
                and r.get("label") in config.labels]
        items = [VideoItem(path=Path(r["path"]), label=r["label"], start=_seconds(r.get("start")),
                           end=_seconds(r.get("end"))) for r in rows]
        # workers=0: decoding worker processes would be forked from this server thread, copying a
        # multi-threaded process (uvicorn, engine threads) whose workers' exits then reach whatever
        # SIGCHLD handler the main thread has (PyTorch's DataLoader one raises there); a few validation
        # clips decode fine in this thread, once (the result is kept)
        out, skipped = run_clips(model, config, items, device=resolve_device(self.device), workers=0,
                                 **self.feature_cache)
        n = len(config.labels)
        confusion = [[0] * n for _ in range(n)]
        cells: dict[str, list[dict]] = {}
        for i, it in enumerate(items):
            if i not in out:
                continue
            probs = torch.softmax(out[i].float(), -1)
            if not bool(torch.isfinite(probs).all()):
                continue
            t, p = config.labels.index(it.label), int(probs.argmax())
            confusion[t][p] += 1
            try:
                digest = file_digest(it.path)  # what /media will check before sending the clip
            except (OSError, VidtuneError):
                continue
            cells.setdefault(f"{t},{p}", []).append({"path": str(it.path), "start": it.start, "end": it.end,
                                                     "score": round(float(probs[p]), 4), "digest": digest})
        return {"labels": list(config.labels), "confusion": confusion, "cells": cells,
                "skipped": [{k: str(v) for k, v in s.items()} if isinstance(s, dict) else str(s) for s in skipped]}

    def _clip_key(self, run_id: str, path: str, digest: str) -> str:
        import hashlib

        key = f"r{list(self.catalog.runs).index(run_id)}c" + hashlib.blake2b(
            f"{path}\0{digest}".encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()
        self.catalog.register(key, path, path, digest)
        return key

    # -- tagging -----------------------------------------------------------------------------------------
    def tag(self, run_id: str, key: str, upload=None) -> dict:
        """``vidtune tag RUN VIDEO --json``'s object for one served video (``key``), or for an upload
        (``upload``: ``(path, name)``; its result is kept, in a bounded memory cache, for the exports)."""
        from vidtune.tag.tagger import tag_videos

        cache_key = (run_id, key)
        if upload is None:
            found = self._tags.get(cache_key)
            if found is not None and not key.startswith("u"):
                self.catalog.media(key)  # still the file it was (not moved, changed or swapped)
            if found is not None:
                return found
            m = self.catalog.media(key)
            path, name = m.path, m.name
        else:
            path, name = upload
        results, errors = tag_videos(self.loaded_run(run_id), [path], device=self.device)
        dicts = [r.to_dict() for r in results]
        for d in dicts + errors:
            d["path"] = name
        found = {"results": dicts + errors}
        self._tags.put(cache_key, found)
        return found

    def tag_export(self, run_id: str, key: str, fmt: str) -> tuple[str, str]:
        """The tags of a served video or a recent upload in ``fmt``, and the name to save them under."""
        from vidtune.tag.exports import render

        if fmt not in TAG_FORMATS:
            raise ConfigError("format", f"must be one of {', '.join(TAG_FORMATS)}, got {fmt!r}")
        if key.startswith("u") and (run_id, key) not in self._tags:
            raise NotServedError(f"no tags for the upload {key!r} any more (uploads are not kept): tag the file again")
        results = self.tag(run_id, key)["results"]
        ok = [r for r in results if "error" not in r]
        name = str(results[0]["path"]) if results else key
        return render(fmt, results if fmt == "json" else ok), name


def _seconds(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None
