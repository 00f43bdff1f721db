"""The Label page of ``vidtune serve --label-pool POOL --label-out MANIFEST --classes a,b,c [--run RUN]``.

:class:`LabelDesk` holds the state without HTTP: the pool's clips (served by opaque ids through the
catalog, like every other video), the queue ranked by :func:`vidtune.labels.suggest.suggest`, the
crash-safe :class:`~vidtune.labels.journal.LabelJournal`, and retraining. :func:`add_label_routes`
adds the page and its JSON API to the app:

- ``GET /api/label/queue?k=N`` -> ``{"items": [{"id", "path", "start", "end", "predicted", "score",
  "confidence"}]}``: the best unlabelled clips, best first (labelled and skipped clips never come back);
- ``POST /api/label`` ``{"id", "label"}``: 200 once the label is fsync'd to the journal and the manifest
  is rewritten; the same label again is 200 (a retry), another label on a labelled clip is 409;
- ``POST /api/label/skip`` ``{"id"}`` and ``POST /api/label/undo`` ``{"id"?}`` (the latest action, or
  that clip's);
- ``POST /api/label/retrain``: 202, trains a head on the cached features of the labelled clips in the
  background (``vidtune train``'s linear strategy), then re-ranks the queue with the new run; 409 while
  one runs;
- ``GET /api/label/status`` -> ``{"labels", "per_class", "running", "run", "metrics", ...}``.

Ranking and training run on the desk's own worker thread, so labelling (journal writes) never waits
for them, and search or tagging on the workbench's thread do not either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request  # at module level: the routes' annotations are resolved here

from vidtune.errors import ConfigError, NotServedError, RetrainConflictError, VidtuneError
from vidtune.labels.journal import Clip, LabelConflictError, LabelJournal, clip_key, journal_path

log = logging.getLogger(__name__)

RANK_DEPTH = 200  # clips ranked at a time; the queue is ranked again when they are used up
MAX_QUEUE = 100
# keys of the page: skip, undo, replay are fixed; classes take digits, then the letters left
SKIP_KEY, UNDO_KEY, REPLAY_KEY = "s", "u", "r"
CLASS_KEYS = "1234567890" + "".join(c for c in "qwertyuiopadfghjklzxcvbnm" if c not in (SKIP_KEY, UNDO_KEY,
                                                                                       REPLAY_KEY))


def parse_classes(text) -> tuple[str, ...]:
    """``"a,b,c"`` (or a list) -> the class names, checked: 2 or more, unique, no ``|``."""
    names = [str(x).strip() for x in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if len(names) < 2:
        raise ConfigError("classes", f"needs at least two class names separated by commas, got {text!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("classes", f"names {', '.join(dupes)} twice")
    bad = [n for n in names if "|" in n]
    if bad:
        raise ConfigError("classes", f"class names cannot hold | (it separates labels in a manifest): {bad[0]!r}")
    if len(names) > len(CLASS_KEYS):
        raise ConfigError("classes", f"at most {len(CLASS_KEYS)} classes have a key each, got {len(names)}")
    return tuple(names)


def class_keys(classes) -> dict[str, str]:
    """The keyboard key of each class: 1..9, 0, then letters (never s, u, r: skip, undo, replay)."""
    return dict(zip(classes, CLASS_KEYS))


@dataclass(frozen=True)
class LabelSetup:
    """What ``vidtune serve`` was told to label: a pool, where labels go, the classes, a first run."""

    pool: tuple[Path, ...]
    out: Path
    classes: tuple[str, ...]
    run: Path | None = None


class _Stopped(Exception):
    pass


class _PhaseTask:
    def __init__(self, desk: LabelDesk, description: str, total: float | None, unit: str = ""):
        self.desk, self.description, self.total, self.unit, self.done = desk, description, total, unit, 0
        desk.phase = description

    def _show(self) -> None:
        if self.total:
            unit = f" {self.unit}" if self.unit and self.unit != "videos" else ""
            self.desk.phase = f"{self.description} {self.done:g}/{self.total:g}{unit}"

    def advance(self, n: float = 1) -> None:
        if self.desk.closing:  # the server is stopping: end a long ranking or training at its next step
            raise _Stopped()
        self.done += n
        self._show()

    def update(self, **fields) -> None:
        if self.desk.closing:
            raise _Stopped()
        if "completed" in fields:
            self.done = fields["completed"]
            self._show()


class _Phase:
    """A :class:`~vidtune.progress.Progress` that keeps the current step as text for the status."""

    def __init__(self, desk: LabelDesk):
        self.desk = desk

    @contextmanager
    def task(self, description: str, total: float | None, unit: str = "videos"):
        yield _PhaseTask(self.desk, description, total, unit)


class LabelDesk:
    """The labelling state of one server (see the module docstring)."""

    def __init__(self, setup: LabelSetup, catalog, device: str = "auto"):
        from vidtune.labels.pool import load_pool

        if catalog.read_only:
            raise ConfigError("label_out", "cannot be written by a read-only server; leave out --read-only to label")
        self.setup = setup
        self.catalog = catalog
        self.device = device
        self.classes = parse_classes(setup.classes)
        self.keys = class_keys(self.classes)
        self.pool_skipped: list[dict] = []
        clip_seconds = None
        if setup.run is not None:
            from vidtune.runs.config import RunConfig

            clip_seconds = RunConfig.read(setup.run).training_clip_seconds()
        pool = load_pool([Path(p) for p in setup.pool], clip_seconds, skipped=self.pool_skipped)
        self.clips: dict[str, Clip] = {}
        self._pool_items: dict[str, object] = {}
        for it in pool:
            path = str(Path(it.path).absolute())
            key = clip_key(path, it.start, it.end)
            self.clips[key] = Clip(key, path, it.start, it.end)
            self._pool_items[key] = it
        self._registered = False
        self.journal = LabelJournal(journal_path(setup.out), setup.out, self.classes)
        self.runs_root = setup.out.with_name(setup.out.stem + "-runs")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidtune-label")
        self._lock = threading.Lock()
        self.run_dir: Path | None = Path(setup.run) if setup.run is not None else None
        self.metrics: dict = self._run_metrics(self.run_dir) if self.run_dir is not None else {}
        self.ranked: list[dict] = []
        self.unreadable: set[str] = set()  # clips of files the ranking could not decode
        self.queue_version = 0
        self.running = False
        self.ranking = False
        self.phase = ""
        self.error: str | None = None
        self.round = 0
        self.closing = False
        latest = self._latest_round()
        if latest is not None:  # a restart goes on from the last model trained on these labels
            self.round, self.run_dir = latest
            self.metrics = self._run_metrics(self.run_dir)
            self._add_run(self.run_dir)
        self._rank_future: Future = self.executor.submit(self._rank)  # the first ranking starts now

    def close(self) -> None:
        self.closing = True
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.journal.close()

    def _latest_round(self) -> tuple[int, Path] | None:
        """The newest finished retrain of these labels (``MANIFEST-runs/round-NNN``), if any."""
        import re

        found = []
        if self.runs_root.is_dir():
            for d in self.runs_root.iterdir():
                m = re.fullmatch(r"round-(\d{3,})", d.name)
                if m and (d / "model.safetensors").is_file() and (d / "metrics.json").is_file():
                    found.append((int(m.group(1)), d))
        return max(found) if found else None

    # -- the queue ---------------------------------------------------------------------------------------
    def _rank(self) -> None:
        """Rank the unlabelled pool with the current run (worker thread)."""
        from vidtune.labels.suggest import suggest

        self.ranking = True
        self.phase = "ranking the pool"
        try:
            if not self._registered:
                self._register_media()
            done = self.journal.done()
            todo = [self._pool_items[k] for k in self.clips if k not in done and k not in self.unreadable]
            held = [self._pool_items[k] for k in self.clips if k in done]
            labelled = [e for e in self.journal.entries() if e.clip.key not in self.clips]
            from vidtune.labels.pool import PoolItem

            held += [PoolItem(e.clip.path, e.clip.start, e.clip.end) for e in labelled]
            ranked, unreadable = [], []
            if todo:
                # workers=0: decoding processes are not forked from a server thread (see Workbench.confusion_clips)
                found = suggest(todo, min(RANK_DEPTH, len(todo)), run=self.run_dir, labeled=held or None,
                                cache_dir=self.catalog.cache_dir / "features", progress=_Phase(self),
                                device=self.device, workers=0, skipped=unreadable)
                for s in found:
                    key = clip_key(str(Path(s.path).absolute()), s.start, s.end)
                    if key not in self.clips:
                        log.warning("suggest returned a clip that is not in the pool: %s", s.path)
                        continue
                    ranked.append({"id": key, "path": s.path, "start": s.start, "end": s.end,
                                   "predicted": s.predicted, "score": _finite(s.score),
                                   "confidence": _finite(s.confidence)})
            bad = {str(Path(u["path"]).absolute()) for u in unreadable}
            with self._lock:
                self.ranked = ranked
                self.unreadable |= {k for k, c in self.clips.items() if c.path in bad}
                self.pool_skipped.extend(u for u in unreadable if u not in self.pool_skipped)
                self.queue_version += 1
            self.error = None
        except VidtuneError as exc:
            self.error = f"ranking the pool failed: {exc}"
            log.warning("%s", self.error)
        except _Stopped:
            pass
        finally:
            self.ranking = False
            self.phase = ""

    def _register_media(self) -> None:
        """Let the catalog serve the pool's videos by their clip ids (with each file's content digest, so a
        file changed on disk after the server read the pool is not sent as if it were the same)."""
        from vidtune.utils import file_digest

        digests: dict[str, str | None | bool] = {}
        with _Phase(self).task("reading the pool's files", len(self.clips)) as task:
            for key, clip in self.clips.items():
                task.advance()
                if clip.path not in digests:
                    try:
                        digests[clip.path] = file_digest(clip.path)
                    except (OSError, VidtuneError) as exc:
                        log.warning("the label pool's %s cannot be read (%s); it is not served", clip.path, exc)
                        digests[clip.path] = False
                if digests[clip.path] is False:
                    self.unreadable.add(key)
                    continue
                name = self._pool_items[key].path
                self.catalog.register(key, clip.path, name, digests[clip.path])
        self._registered = True

    async def queue(self, k: int) -> list[dict]:
        """The ``k`` best clips not labelled or skipped (ranks again when the ranked ones are used up)."""
        for _ in range(2):
            fut = self._rank_future
            await asyncio.wrap_future(fut)
            done = self.journal.done()
            with self._lock:
                items = [dict(r) for r in self.ranked if r["id"] not in done]
                left = sum(1 for c in self.clips if c not in done and c not in self.unreadable)
                enough = len(items) >= min(k, left) or self.error or self.running
                if not enough and self._rank_future is fut:  # the ranked clips are used up: rank the rest
                    self._rank_future = self.executor.submit(self._rank)
            if enough:
                break
        if self.error and not items:
            raise VidtuneError(self.error)
        return items[:k]

    def item(self, key: str) -> dict:
        """A clip of the pool as a queue item (its latest ranking when it has one)."""
        clip = self.clip(key)
        with self._lock:
            for r in self.ranked:
                if r["id"] == key:
                    return dict(r)
        return {"id": key, "path": clip.path, "start": clip.start, "end": clip.end, "predicted": None,
                "score": None, "confidence": None}

    def clip(self, key) -> Clip:
        if not isinstance(key, str) or not key:
            raise ConfigError("id", f"must be the id of a clip from the queue (a string), got {key!r}")
        c = self.clips.get(key)
        if c is None:
            raise NotServedError(f"no clip {key!r} in the label pool (ids come from GET /api/label/queue)")
        return c

    # -- labels --------------------------------------------------------------------------------------------
    def label(self, key, label) -> dict:
        clip = self.clip(key)
        if not isinstance(label, str) or label not in self.classes:
            raise ConfigError("label", f"must be one of {', '.join(self.classes)}, got {label!r}")
        e = self.journal.label(clip, label)
        return {"id": clip.key, "label": e.label, **self.counts()}

    def skip(self, key) -> dict:
        clip = self.clip(key)
        self.journal.skip(clip)
        return {"id": clip.key, "skipped": True, **self.counts()}

    def undo(self, key=None) -> dict:
        if key is not None:
            self.clip(key)
        e = self.journal.undo(key)
        out = {"undone": {"id": e.clip.key, "op": e.op, "label": e.label}, **self.counts()}
        if e.clip.key in self.clips:
            out["item"] = self.item(e.clip.key)
        return out

    def counts(self) -> dict:
        per_class = self.journal.per_class()
        return {"labels": sum(per_class.values()), "per_class": per_class}

    # -- retraining ------------------------------------------------------------------------------------------
    def start_retrain(self) -> dict:
        per_class = self.journal.per_class()
        have = [c for c, n in per_class.items() if n > 0]
        if len(have) < 2:
            raise VidtuneError(f"label at least one clip of two classes before training (have: "
                               f"{', '.join(f'{c} {n}' for c, n in per_class.items())})")
        with self._lock:
            if self.running:
                raise RetrainConflictError("a retrain is already running; wait for it (GET /api/label/status)")
            self.running = True
            self.error = None
            self.round = self._next_round()
            n = self.round
        self.phase = "waiting for the ranking to finish"
        self.executor.submit(self._retrain, n)  # the queue keeps serving the current ranking meanwhile
        return {"running": True, "round": n, "run": str(self.runs_root / f"round-{n:03d}")}

    def _next_round(self) -> int:
        n = self.round + 1
        while (self.runs_root / f"round-{n:03d}").exists():
            n += 1
        return n

    def _retrain(self, n: int) -> None:
        """Train a head on the labels so far, then rank the queue with it (worker thread)."""
        from vidtune.train.trainer import train

        out = self.runs_root / f"round-{n:03d}"
        try:
            self.phase = "training"
            result = train(self.setup.out, out, self.train_config(), progress=_Phase(self))
            self.run_dir = out
            self.metrics = _metrics(result.get("val") or {})
            self.metrics["train_clips"] = len(self.journal.labels())
            self._add_run(out)
            self._rank()
        except VidtuneError as exc:
            self.error = f"retraining failed: {exc}"
            log.warning("%s", self.error)
        except _Stopped:
            log.info("retraining stopped: the server is shutting down")
        except Exception as exc:  # noqa: BLE001 - a bug must show on the page, not kill the worker silently
            log.exception("retraining failed")
            self.error = f"retraining failed: {type(exc).__name__}: {exc}"
        finally:
            self.running = False
            self.phase = ""

    def train_config(self):
        """``vidtune train``'s defaults on frozen, cached features, with the first run's backbone if any."""
        from vidtune.train.config import TrainConfig

        base: dict = {}
        if self.setup.run is not None:
            from vidtune.runs.config import RunConfig

            rc = RunConfig.read(self.setup.run)
            t = rc.train or {}
            base = {"backbone": t.get("backbone") or rc.model.backbone, "frames": rc.frames}
            for k in ("pretrained", "weights"):
                if t.get(k) is not None:
                    base[k] = t[k]
        return TrainConfig(**base, strategy="linear", device=self.device, workers=0,
                           cache_dir=str(self.catalog.cache_dir / "features"))

    def _add_run(self, out: Path) -> None:
        """Show the new run on the Runs page too (a new dict: readers never see one mid-change)."""
        from vidtune.serve.catalog import run_ids

        if any(Path(d).resolve() == out.resolve() for d in self.catalog.runs.values()):
            return
        dirs = [*self.catalog.runs.values(), out]
        self.catalog.runs = run_ids(dirs)

    @staticmethod
    def _run_metrics(run_dir: Path) -> dict:
        try:
            m = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return _metrics(m.get("val") or {})

    # -- status ----------------------------------------------------------------------------------------------
    def status(self) -> dict:
        done = self.journal.done()
        per_class = self.journal.per_class()
        return {"labels": sum(per_class.values()), "per_class": per_class, "running": self.running,
                "run": str(self.run_dir) if self.run_dir is not None else None, "metrics": self.metrics,
                "round": self.round, "ranking": self.ranking, "phase": self.phase, "error": self.error,
                "queue_version": self.queue_version, "pool": len(self.clips),
                "skipped": sum(1 for e in self.journal.entries() if e.op == "skip"),
                "remaining": sum(1 for c in self.clips if c not in done and c not in self.unreadable), "classes": list(self.classes),
                "keys": self.keys, "manifest": str(self.setup.out), "unreadable": self.pool_skipped}


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def _metrics(val: dict) -> dict:
    keep = ("n", "top1", "mean_class_accuracy", "f1_macro", "loss")
    return {k: val[k] for k in keep if k in val}


# -- HTTP -------------------------------------------------------------------------------------------------------
def add_label_routes(app, desk: LabelDesk, page, as_json) -> None:
    """The Label page and ``/api/label/*`` on ``app``; ``page(request, template, **context)`` renders,
    ``as_json(obj, status)`` answers JSON."""
    from starlette.concurrency import run_in_threadpool

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise ConfigError("body", "must be a JSON object such as {\"id\": ..., \"label\": ...}") from None
        if not isinstance(data, dict):
            raise ConfigError("body", "must be a JSON object")
        return data

    @app.get("/label")
    async def label_page(request: Request):
        return page(request, "label.html", title="Label", classes=list(desk.classes), keys=desk.keys,
                    skip_key=SKIP_KEY, undo_key=UNDO_KEY, replay_key=REPLAY_KEY, manifest=str(desk.setup.out))

    @app.get("/api/label/queue")
    async def api_queue(k: str = "10"):
        try:
            n = int(k)
        except ValueError:
            raise ConfigError("k", f"must be a whole number, got {k!r}") from None
        if not 1 <= n <= MAX_QUEUE:
            raise ConfigError("k", f"must be between 1 and {MAX_QUEUE}, got {k!r}")
        return as_json({"items": await desk.queue(n)})

    @app.post("/api/label")
    async def api_label(request: Request):
        data = await body(request)
        return as_json(await run_in_threadpool(desk.label, data.get("id"), data.get("label")))

    @app.post("/api/label/skip")
    async def api_skip(request: Request):
        data = await body(request)
        return as_json(await run_in_threadpool(desk.skip, data.get("id")))

    @app.post("/api/label/undo")
    async def api_undo(request: Request):
        data = await body(request) if await request.body() else {}
        return as_json(await run_in_threadpool(desk.undo, data.get("id")))

    @app.post("/api/label/retrain")
    async def api_retrain():
        return as_json(desk.start_retrain(), 202)

    @app.get("/api/label/status")
    async def api_status():
        return as_json(await run_in_threadpool(desk.status))


__all__ = ["LabelDesk", "LabelSetup", "LabelConflictError", "add_label_routes", "class_keys", "parse_classes"]
