"""``--engine ray``: embed, index and tag on a Ray cluster (the optional extra ``vidtune[ray]``).

The driver lists the files and builds a Ray Dataset of paths (``ray.data.from_items``); a pool of
actors (``map_batches`` with :class:`ray.data.ActorPoolStrategy`, CPU or GPU) each builds the model
once and processes one video per call with vidtune's own PyAV reader and seeking sampler (not
``ray.data.read_videos``, which decodes every frame, with decord). Results stream back to the driver,
which merges them into the outputs exactly as the local path does (one atomic index commit; an
unreadable video is skipped and reported, never fatal). Each worker keeps its own feature cache
(``--cache-dir`` on a shared filesystem shares it), so a rerun after a crash embeds only what no
worker finished.

Every worker needs vidtune with the same version and weights installed, and the videos at the same
paths (a shared filesystem or the same mount on every node).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vidtune.errors import ConfigError, MissingExtraError, ModelMismatchError, VidtuneError
from vidtune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingExtraError("--engine ray", "ray", "ray") from None
    return ray


def _quiet(ray) -> None:
    """The CLI draws its own progress bar: no Ray Data progress bars or per-10-s status logs."""
    ctx = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "print_on_execution_start"):
        if hasattr(ctx, name):
            setattr(ctx, name, False)
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        if logging.getLogger(name).getEffectiveLevel() < logging.WARNING:
            logging.getLogger(name).setLevel(logging.WARNING)


def connect(address: str | None = None, workers: int | None = None):
    """The Ray cluster to use: the one this process is already connected to, the one at ``address``
    (``ray://host:10001``, ``host:6379`` or ``auto``), or a new local one with ``workers`` CPUs."""
    ray = _ray()
    _quiet(ray)
    if ray.is_initialized():
        return ray
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise VidtuneError(f"cannot connect to {where} ({str(exc).splitlines()[0][:200]}); start the cluster with "
                           "`ray start --head` (or give --address of a running one)") from None
    return ray


class _Worker:
    """A Ray actor: builds the per-video function once, then maps path batches to results."""

    def __init__(self, make: Callable[[], Callable[[str], object]]):
        self.fn = make()

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        values, errors = [], []
        for p in paths:
            try:
                values.append(self.fn(p))
                errors.append("")
            except VidtuneError as exc:
                values.append(None)
                errors.append(getattr(exc, "reason", None) or str(exc))
            except OSError as exc:
                values.append(None)
                errors.append(f"cannot read file ({exc.strerror or exc})")
        return {"path": np.array(paths, dtype=object), "value": np.array(values, dtype=object),
                "error": np.array(errors, dtype=object)}


def default_workers(ray, gpus_per_worker: float) -> int:
    """One worker per GPU (``gpus_per_worker`` > 0) or per CPU of the cluster."""
    res = ray.cluster_resources()
    if gpus_per_worker:
        return max(1, int(res.get("GPU", 0) / gpus_per_worker))
    return max(1, int(res.get("CPU", 1)))


def run_per_video(make: Callable[[], Callable[[str], object]], paths: Sequence, *, address: str | None = None,
                  workers: int | None = None, gpus_per_worker: float = 0.0, progress: Progress | None = None,
                  description: str = "ray") -> tuple[dict[str, object], list[dict]]:
    """``make()`` (run once per actor) returns a function of one video path; apply it to every path on
    the cluster. Returns ``({path: value}, skipped)``, skipped as ``{"path", "reason"}``."""
    if workers is not None and workers < 1:
        raise ConfigError("ray_workers", f"must be at least 1, got {workers}")
    progress = progress or NullProgress()
    paths = [str(p) for p in paths]
    if not paths:
        return {}, []
    ray = connect(address, workers)
    workers = workers or default_workers(ray, gpus_per_worker)
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=min(len(paths), 4 * workers))
    ds = ds.map_batches(_Worker, fn_constructor_args=(make,), batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1,
                        num_gpus=gpus_per_worker or None)
    values: dict[str, object] = {}
    skipped: list[dict] = []
    with progress.task(f"{description} ({len(paths)} videos, {workers} Ray workers)", total=len(paths)) as task:
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy"):
            for p, v, e in zip(batch["path"], batch["value"], batch["error"]):
                if e:
                    log.warning("skipping %s: %s", p, e)
                    skipped.append({"path": str(p), "reason": str(e)})
                else:
                    values[str(p)] = v
                task.advance(1)
    return values, skipped


# -- what the commands run on each worker (module-level, so Ray can ship them by reference) ---------------
class EmbedMaker:
    """Builds an :class:`~vidtune.index.embed.Embedder` on the worker; embeds one video per call."""

    def __init__(self, config: dict, device: str = "auto", cache_dir=None, use_cache: bool = True):
        self.config, self.device, self.cache_dir, self.use_cache = config, device, cache_dir, use_cache

    def __call__(self):
        from vidtune.index.embed import EmbedConfig, Embedder

        emb = Embedder(EmbedConfig.from_dict(self.config), device=self.device, cache_dir=self.cache_dir,
                       use_cache=self.use_cache)
        emb.prepare_many()
        model_id = emb.model_id

        def embed(path: str):
            e = emb.embed_video(path)
            e.extra["model_id"] = model_id
            return e

        return embed


def embed_on_ray(embedder, paths, *, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float = 0.0, progress: Progress | None = None, description: str = "embedding"):
    """:func:`vidtune.index.embed.embed_videos` on Ray: ``(embeddings in input order, skipped)``.

    ``embedder`` is the driver's (its config, device and cache settings are rebuilt on every worker;
    its model id is checked against each result's, so a worker with other weights is refused)."""
    cache_dir = str(embedder.cache.root) if embedder.cache is not None else None
    make = EmbedMaker(embedder.config.to_dict(), str(embedder.device) if gpus_per_worker == 0 else "auto",
                      cache_dir, embedder.cache is not None)
    values, skipped = run_per_video(make, paths, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                                    progress=progress, description=description)
    for v in values.values():
        if v.extra.pop("model_id", None) != embedder.model_id:
            raise ModelMismatchError(f"a Ray worker built another model than this process ({embedder.model_id}): "
                                     "install the same vidtune version and weights on every worker")
    return [values[str(p)] for p in paths if str(p) in values], skipped


class TagMaker:
    """Loads a run on the worker; tags one video per call."""

    def __init__(self, run: str, options, device: str = "auto"):
        self.run, self.options, self.device = run, options, device

    def __call__(self):
        from vidtune.runs.device import resolve_device
        from vidtune.runs.store import load_run
        from vidtune.tag.tagger import tag_video

        model, config = load_run(self.run)
        dev = resolve_device(self.device)
        return lambda p: tag_video(model, config, Path(p), self.options, device=dev)


def tag_on_ray(run, videos, options, *, device: str = "auto", address: str | None = None, workers: int | None = None,
               gpus_per_worker: float = 0.0, progress: Progress | None = None):
    """:func:`vidtune.tag.tagger.tag_videos` on Ray: ``(results in input order, errors)``."""
    from vidtune.runs.inference import expand_video_args

    paths = expand_video_args(videos)
    values, skipped = run_per_video(TagMaker(str(Path(run).resolve()), options, device), paths, address=address,
                                    workers=workers, gpus_per_worker=gpus_per_worker, progress=progress,
                                    description="tagging")
    results = [values[str(p)] for p in paths if str(p) in values]
    return results, [{"path": s["path"], "error": s["reason"]} for s in skipped]
