"""Training across processes: ``torchrun --nproc-per-node N -m vidtune train ...`` (DDP), and the
sharded feature extraction behind ``vidtune train --shard I/N``.

torchrun (or any launcher) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`vidtune.train.trainer.train` sees ``WORLD_SIZE > 1`` and hands over to
:func:`train_distributed`:

* The process group forms within ``VIDTUNE_DIST_TIMEOUT`` seconds (default 120) or every process
  ends with :class:`DistributedError` naming the missing peers' address: no silent hang. Later
  collectives time out after ``VIDTUNE_DIST_WORK_TIMEOUT`` seconds (default 1800).
* ``linear``: every rank extracts the features of its shard of the videos (content-hash split, the
  same one as ``--shard``) into the feature cache, all wait for each other, then rank 0 trains the
  head on the cached features exactly as a single process would (same result); the other ranks end.
  The cache must be shared (one machine, or ``--cache-dir`` on a shared filesystem).
* ``partial``/``full``: DistributedDataParallel over gloo (CPU) or NCCL (CUDA, one GPU per
  ``LOCAL_RANK``). Every rank computes the same (class-balanced) epoch order and takes an
  interleaved part of each global batch of ``--batch-size`` clips; each rank's loss is weighted by its
  share of the batch, so the averaged gradient is the gradient of the whole batch's mean loss (the
  single-process update). Decode failures, training loss/top-1 and validation logits are gathered
  from all ranks, so every rank takes the same early-stopping decision. Only rank 0 takes the run
  folder's lock and writes checkpoints and the run; ``--resume`` loads the checkpoint on every rank
  (multi-node: the run folder must be on a shared filesystem) and checks that all ranks agree.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from vidtune.errors import ConfigError, DistributedError
from vidtune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

TIMEOUT_ENV = "VIDTUNE_DIST_TIMEOUT"  # seconds for the process group to form
WORK_TIMEOUT_ENV = "VIDTUNE_DIST_WORK_TIMEOUT"  # seconds a collective may wait for a slow peer

_current: Dist | None = None


def current() -> Dist | None:
    """The process group this process trains in (None: a single process)."""
    return _current


def launched() -> bool:
    """Started by torchrun (or another launcher) as one of several processes."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(name, f"must be a number of seconds, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(name, f"must be a positive number of seconds, got {text!r}")
    return v


@dataclass
class Dist:
    """This process's place in the group and the collectives training needs."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    group: object = None  # the group with the long (work) timeout

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.group)

    def all_sum(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.group)  # gloo group: CPU tensors whatever the training device
        return t.tolist()

    def gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (small Python objects: lists of paths, logits)."""
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def check_same(self, what: str, value) -> None:
        """Every rank must hold the same ``value`` (e.g. the epoch a resume starts from)."""
        values = self.gather(value)
        if any(v != values[0] for v in values):
            raise DistributedError(f"the ranks disagree on {what}: {values}; with several machines the run folder "
                                   "(checkpoint) and the data must be on a shared filesystem")

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        import warnings

        from torch.nn.parallel import DistributedDataParallel

        # channels_last convolution weights on CPU: a speed note from the reducer, not a problem
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def init_group(device_name: str) -> Dist:
    """Join the process group described by the launcher's environment (gloo on CPU, NCCL on CUDA)."""
    import torch.distributed as dist

    from vidtune.runs.device import resolve_device

    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        raise DistributedError("WORLD_SIZE > 1 but RANK is missing or not a number: start the processes with "
                               "`torchrun --nproc-per-node N -m vidtune train ...`") from None
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise DistributedError(f"{name} is not set: start the processes with torchrun (it sets it), or set "
                                   "MASTER_ADDR/MASTER_PORT to rank 0's address")
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    form = _env_seconds(TIMEOUT_ENV, 120.0)
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=form))
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=_env_seconds(WORK_TIMEOUT_ENV, 1800.0)))
        dist.barrier(group=group)  # every rank is really there before any work starts
    except (RuntimeError, ValueError, OSError) as exc:  # DistStoreError, DistNetworkError derive from these
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise DistributedError(
            f"rank {rank} of {world}: the process group did not form within {form:g} s at {where} ({first}). "
            f"Check that all {world} processes were started (torchrun --nnodes/--nproc-per-node), that rank 0's "
            f"address and port are reachable from every node, and raise {TIMEOUT_ENV} for slow starts") from None
    return Dist(rank, world, local_rank, device, group)


@contextlib.contextmanager
def process_group(device_name: str):
    """Form the group, make it :func:`current`, and always leave it (no process waits on a dead group)."""
    import torch.distributed as dist

    global _current
    d = init_group(device_name)
    _current = d
    try:
        yield d
    finally:
        _current = None
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


# -- sharded feature extraction -----------------------------------------------------------------------
def extract_shard(data, cfg, shard, progress: Progress | None = None) -> dict:
    """Put the features of ``shard``'s videos of ``data`` into the feature cache, as the linear strategy
    will read them (training grid, validation centre clips, ``--augment robust`` copies), and stop.

    N processes with ``--shard 0/N`` ... ``N-1/N`` (and the same training arguments) fill a shared
    cache; the ``train`` that follows decodes nothing. A rerun skips what is already cached.
    """
    from vidtune.data.manifest import load_dataset
    from vidtune.data.splits import few_shot, stratified_split
    from vidtune.runs.device import resolve_device
    from vidtune.runs.features import extract_features, open_cache, sampling_for
    from vidtune.scale.shards import select_shard
    from vidtune.train.build import build
    from vidtune.train.linear import corrupted_views
    from vidtune.train.task import task_for

    progress = progress or NullProgress()
    device = resolve_device(cfg.device)
    cfg = cfg.resolved(device.type)
    if cfg.strategy != "linear":
        raise ConfigError("shard", f"splits the feature extraction of the linear strategy (--strategy {cfg.strategy} "
                                   "decodes fresh clips every epoch); train end to end on several processes with "
                                   "torchrun instead")
    cache = open_cache(cfg.cache_dir, cfg.use_cache)
    if cache is None:
        raise ConfigError("use_cache", "cannot be off with --shard: the shards hand their features to training "
                                       "through the feature cache")
    items = load_dataset(data, multilabel=True if cfg.task == "multilabel" else None)
    splits = stratified_split(items, cfg.val_split, cfg.seed)
    train_items, val_items = splits["train"], splits["val"]
    task = task_for(train_items + val_items, cfg, data)
    if cfg.shots is not None:
        train_items = few_shot(train_items, cfg.shots, cfg.seed)
    torch.manual_seed(cfg.seed)  # as train() does: a random-init backbone is then the very same model
    model, _, _ = build(cfg, task.labels)
    encoder = model.encoder
    flow = model.head.flow > 0
    mine_tr = select_shard(train_items, shard, digest=cache.digest, path_of=lambda it: it.path)
    mine_va = select_shard(val_items, shard, digest=cache.digest, path_of=lambda it: it.path)
    common = dict(device=device, cache=cache, workers=cfg.workers, progress=progress)
    tr, tr_skip = extract_features(encoder, mine_tr, sampling_for(encoder, cfg.frames, "grid", cfg.views, flow=flow),
                                   description=f"train features, shard {shard}", **common)
    va_skip = []
    if mine_va:
        _, va_skip = extract_features(encoder, mine_va, sampling_for(encoder, cfg.frames, "centre", flow=flow),
                                      description=f"val features, shard {shard}", grid_views=cfg.views, **common)
    readable = [mine_tr[i] for i in sorted(tr)]
    corrupted_views(encoder, readable, cfg, device, cache, progress, flow=flow)
    return {"shard": str(shard), "train": len(mine_tr), "val": len(mine_va), "skipped": tr_skip + va_skip,
            "cache": str(cache.root)}


# -- the distributed run --------------------------------------------------------------------------------
def train_distributed(run_single, data, out, cfg, progress: Progress | None, resume: bool, overwrite: bool) -> dict:
    """One rank's part of a torchrun training (see the module docstring).

    ``run_single(progress, cfg)`` is the single-process training (:func:`vidtune.train.trainer.train`):
    rank 0 runs it for the linear strategy, every rank runs it (inside DDP) end to end, each on its
    own device (``cuda:LOCAL_RANK`` with GPUs).
    """
    from dataclasses import replace

    from vidtune.runs.device import resolve_device
    from vidtune.scale.shards import Shard

    with process_group(cfg.device) as d:
        if d.device.type == "cuda":
            cfg = replace(cfg, device=str(d.device))
        quiet = progress if d.is_main else NullProgress()
        strategy = cfg.resolved(resolve_device(cfg.device).type).strategy
        if strategy == "linear":
            info = extract_shard(data, cfg, Shard(d.rank, d.world), quiet)
            d.barrier()  # every shard's features are in the cache
            if not d.is_main:
                return {"run": str(out), "rank": d.rank, "world": d.world, "role": "features", "features": info}
            result = run_single(quiet, cfg)
        else:
            result = run_single(quiet, cfg)
            if not d.is_main:
                return {"run": str(out), "rank": d.rank, "world": d.world, "role": "worker"}
        result["distributed"] = {"world": d.world, "backend": "nccl" if d.device.type == "cuda" else "gloo",
                                 "strategy": strategy}
        return result


# -- DDP pieces the end-to-end strategy calls -------------------------------------------------------------
def rank_batches(draws: list[int], batch_size: int, rank: int, world: int) -> list[list[int]]:
    """This rank's part of every global batch of ``batch_size`` draws (interleaved; may be empty)."""
    return [draws[s : s + batch_size][rank::world] for s in range(0, len(draws), batch_size)]


def train_epoch(s, epoch: int) -> tuple[float, float]:
    """:meth:`EndToEndStrategy.train_epoch` under DDP: the same global batches as one process."""
    from torch.utils.data import DataLoader

    from vidtune.runs.decoding import as_list, init_worker
    from vidtune.runs.device import autocast
    from vidtune.train.fitter import freeze_norm_stats

    d: Dist = s.dist
    model, task, cfg, fitter = s.model, s.task, s.cfg, s.fitter
    s.train_ds.epoch = epoch
    model.train()
    if cfg.freeze_bn:
        freeze_norm_stats(model.encoder)
    ds = s.train_ds
    n = len(ds)
    order = task.epoch_order(s.y_all, cfg.balance, s.gen)  # the same on every rank (same generator state)
    keep = [int(i) for i in order if str(ds.items[int(i)].path) not in s.failed]
    draws = [pos * n + i for pos, i in enumerate(keep)]
    mine = rank_batches(draws, cfg.batch_size, d.rank, d.world)
    real = [bool(b) for b in mine]
    sampler = [b if b else draws[:1] for b in mine]  # a rank with no clip in a batch still takes part
    kwargs = {}
    if cfg.workers > 0:
        kwargs = {"num_workers": cfg.workers, "prefetch_factor": 4, "worker_init_fn": init_worker}
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=as_list, pin_memory=s.device.type == "cuda", **kwargs)
    size = s.model.encoder.cfg.input_size
    template = torch.zeros((1, ds.sampling.per_clip, size, size, 3), dtype=torch.uint8)
    new_failed: list[dict] = []
    for step, batch in enumerate(loader):
        good = []
        for sample in batch:
            it = ds.items[sample["index"]]
            if sample["error"] is not None:
                if str(it.path) not in s.failed:
                    s.failed.add(str(it.path))
                    new_failed.append({"path": str(it.path), "reason": sample["error"]})
                    log.warning("skipping %s: %s", it.path, sample["error"])
                continue
            good.append((sample["frames"], task.target(it)))
        count = len(good) if real[step] else 0
        total = d.all_sum([count])[0]
        if good:
            x = torch.stack([f for f, _ in good])
            y = torch.tensor([t for _, t in good])
        else:  # every clip of this rank's part failed: a zero-weight pass keeps the ranks in step
            x = template
            y = torch.tensor([task.target(ds.items[sampler[step][0] % n])])
        x = s.norm(x.to(s.device, non_blocking=True))
        y = y.to(s.device)
        rev = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.seed, epoch, step, d.rank])
                                                .generate_state(1)[0]))
        x, y = task.time_reverse(x, y, rev)  # per-rank draws: the shared generator stays in step
        with autocast(s.device):
            logits = s.net(x)
            loss = task.train_loss(logits.float(), y)
        weight = count * d.world / total if total else 0.0
        fitter.learn(loss, logits, y, task, grad_scale=weight, count=bool(count))
    _sync_failed(s, new_failed)
    seen = d.all_sum([float(v) for v in fitter._seen])
    fitter._seen = [seen[0], int(seen[1]), int(seen[2]), int(seen[3])]
    return fitter.epoch_stats()


def _sync_failed(s, new_failed: list[dict]) -> None:
    """Files that failed on any rank are skipped by all from now on (the next epoch order agrees)."""
    for part in s.dist.gather(new_failed):
        for f in part:
            if f["path"] not in {x["path"] for x in s.skipped}:
                s.skipped.append(f)
            s.failed.add(f["path"])


@torch.no_grad()
def predict_all(s) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation logits under DDP: each rank predicts every world-th clip, all ranks gather all."""
    from vidtune.runs.device import autocast

    d: Dist = s.dist
    s.model.eval()
    outs, ys = [], []
    before = len(s.skipped)
    for x, y in s._batches(s.val_ds, range(d.rank, len(s.val_ds), d.world)):
        with autocast(s.device):
            outs.append(s.model(x).float().cpu())
        ys.append(y.cpu())
    _sync_failed(s, s.skipped[before:])
    parts = d.gather((torch.cat(outs) if outs else None, torch.cat(ys) if ys else None))
    logits = [p[0] for p in parts if p[0] is not None]
    if not logits:
        return s.task.empty()
    return torch.cat(logits), torch.cat([p[1] for p in parts if p[1] is not None])
