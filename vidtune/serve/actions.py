"""What the pages and the JSON API do, without HTTP: search, dedupe, tag, run summaries.

One :class:`Workbench` per server. Its model work (the index's embedder, loaded runs) runs on one
worker thread, so the SQLite connection and the models are only ever used by the thread that made
them and two requests never fight over the CPU. Results have the shapes of the CLI's ``--json``.
"""

from __future__ import annotations

import csv
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vidtune.errors import ConfigError, NotServedError
from vidtune.serve.catalog import Catalog

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


class Workbench:
    """The server's state beside the catalog: a searcher, loaded runs, and results worth keeping."""

    def __init__(self, catalog: Catalog, device: str = "auto"):
        self.catalog = catalog
        self.device = device
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidtune-serve")
        self._searcher = None
        self._runs: dict[str, tuple] = {}
        self._tags: dict[tuple, dict] = {}
        self._dedupe: dict[float, dict] = {}
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
        return self.searcher().search(path, k=k, start=start, end=end)

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

        if threshold not in self._dedupe:
            self._dedupe[threshold] = {"index": str(self.catalog.index_dir),
                                       **duplicates_in(self.searcher(), threshold)}
        return self._dedupe[threshold]

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

    def confusion_clips(self, run_id: str) -> dict:
        """The validation clips behind each cell of the run's confusion matrix (from split.json).

        ``{"labels", "confusion", "cells": {"<true>,<pred>": [{"id", "path", "start", "end", "score"}]},
        "skipped"}``. Computed once with the run's model and kept in the cache folder.
        """
        import torch

        from vidtune.data.manifest import VideoItem
        from vidtune.runs.device import resolve_device
        from vidtune.runs.inference import run_clips

        c = self.catalog
        model, config = self.loaded_run(run_id)
        saved = c.cache_dir / "results" / f"confusion-{config.run_id or run_id}.json"
        if saved.is_file():
            result = json.loads(saved.read_text(encoding="utf-8"))
        else:
            split = c.run_json(run_id, "split.json", default={}) or {}
            rows = [r for r in split.get("val", []) if r.get("label") in config.labels]
            if config.multilabel:
                raise ConfigError("run", "is multi-label: it has no confusion matrix (see its per-label AP)")
            items = [VideoItem(path=Path(r["path"]), label=r["label"], start=r.get("start"), end=r.get("end"))
                     for r in rows]
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
                t, p = config.labels.index(it.label), int(probs.argmax())
                confusion[t][p] += 1
                cells.setdefault(f"{t},{p}", []).append({"path": str(it.path), "start": it.start, "end": it.end,
                                                         "score": round(float(probs[p]), 4)})
            result = {"labels": list(config.labels), "confusion": confusion, "cells": cells, "skipped": skipped}
            if not c.read_only:
                from vidtune.utils import atomic_write_json

                atomic_write_json(saved, result)
        for clips in result["cells"].values():  # keys are handed out per server process
            for clip in clips:
                clip["id"] = self._clip_key(run_id, clip["path"])
        return result

    def _clip_key(self, run_id: str, path: str) -> str:
        import hashlib

        key = f"r{list(self.catalog.runs).index(run_id)}c" + hashlib.blake2b(path.encode("utf-8", "surrogateescape"),
                                                                           digest_size=6).hexdigest()
        self.catalog.register(key, path, path)
        return key

    # -- tagging -----------------------------------------------------------------------------------------
    def tag(self, run_id: str, key: str) -> dict:
        """``vidtune tag RUN VIDEO --json``'s object for one served video."""
        from vidtune.tag.tagger import tag_videos

        m = self.catalog.media(key)
        cache_key = (run_id, key)
        if cache_key not in self._tags:
            results, errors = tag_videos(self.loaded_run(run_id), [m.path], device=self.device)
            dicts = [r.to_dict() for r in results]
            for d in dicts:
                d["path"] = m.name
            for e in errors:
                e["path"] = m.name
            self._tags[cache_key] = {"results": dicts + errors}
        return self._tags[cache_key]

    def tag_export(self, run_id: str, key: str, fmt: str) -> str:
        from vidtune.tag.exports import render

        if fmt not in TAG_FORMATS:
            raise ConfigError("format", f"must be one of {', '.join(TAG_FORMATS)}, got {fmt!r}")
        results = self.tag(run_id, key)["results"]
        ok = [r for r in results if "error" not in r]
        return render(fmt, results if fmt == "json" else ok)

