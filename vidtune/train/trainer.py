"""``train``: data -> split -> model -> strategy (linear or end to end) -> the run folder.

The strategies live in :mod:`vidtune.train.linear` and :mod:`vidtune.train.end_to_end`, the shared
optimisation loop in :mod:`vidtune.train.fitter`, the options in :mod:`vidtune.train.config`;
what a finished run is and how it is served belongs to :mod:`vidtune.runs`.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import uuid
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

import vidtune
from vidtune.data.manifest import VideoItem, load_dataset, median_clip_seconds
from vidtune.data.splits import few_shot, stratified_split
from vidtune.errors import CheckpointError, ConfigError, VidtuneError
from vidtune.progress import NullProgress, Progress
from vidtune.runs.config import RunConfig
from vidtune.runs.device import resolve_device
from vidtune.runs.features import open_cache
from vidtune.runs.leakage import SPLIT_FILE, split_record
from vidtune.runs.metrics import tune_thresholds
from vidtune.runs.store import save_weights
from vidtune.train.build import build
from vidtune.train.config import TrainConfig
from vidtune.train.end_to_end import EndToEndStrategy
from vidtune.train.fitter import Checkpointing
from vidtune.train.linear import LinearStrategy
from vidtune.train.plots import plot_confusion, plot_learning_curves
from vidtune.train.task import Task, task_for
from vidtune.utils import atomic_write_json, atomic_write_text, hold_lock, stable_hash

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "train", "few_shot", "resolve_device"]


def _write_history(history: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0].keys()))
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def train(data, out, cfg: TrainConfig | None = None, progress: Progress | None = None, resume: bool = False,
          overwrite: bool = False) -> dict:
    """Train a video classifier on ``data`` (folder per class or manifest) into the run folder ``out``.

    Returns ``{"run": ..., "val": {...metrics}, "train": {...}, "skipped": [{"path", "reason"}]}``.
    Raises :class:`DatasetError` when no readable video is left or a class ends up empty.
    A resumable checkpoint (``checkpoint.safetensors``) is rewritten at the end of every epoch and
    removed when the run is complete; ``resume=True`` continues from it (same arguments required)
    and, with the same seed, ends with the same weights and metrics as an uninterrupted run.
    A folder that holds a finished run is refused unless ``overwrite`` (or ``resume``). While it runs,
    the run folder's ``.lock`` is held (``fcntl.flock``): a second ``train`` on the same folder fails at
    once with :class:`BusyError` naming the first one, instead of interleaving their files.
    """
    out = Path(out)
    from vidtune.train import distributed

    if distributed.launched() and distributed.current() is None:  # torchrun: one rank of several
        return distributed.train_distributed(lambda p, c: train(data, out, c, p, resume, overwrite), data, out,
                                             cfg or TrainConfig(), progress, resume, overwrite)
    if not _writes():  # ranks > 0 of a distributed run train along but write nothing
        return _train(data, out, cfg, progress, resume)
    _prepare_out(out)
    lock = hold_lock(out / LOCK_FILE, f"the run folder {out}", "vidtune train")
    try:
        if not resume and not overwrite and _is_finished_run(out):
            raise VidtuneError(f"{out} already holds a finished run; pass --overwrite to replace it, or choose "
                               "another --out")
        return _train(data, out, cfg, progress, resume)
    finally:
        lock.close()


LOCK_FILE = ".lock"


def _writes() -> bool:
    """Whether this process writes the run folder: always, except on the ranks > 0 of a torchrun run."""
    from vidtune.train.distributed import current

    d = current()
    return d is None or d.is_main


def _is_finished_run(out: Path) -> bool:
    return (out / "metrics.json").is_file() and (out / "model.safetensors").is_file()


def _train(data, out: Path, cfg: TrainConfig | None, progress: Progress | None, resume: bool) -> dict:
    cfg = cfg or TrainConfig()
    progress = progress or NullProgress()
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    cfg = cfg.resolved(device.type)
    torch.manual_seed(cfg.seed)

    items = load_dataset(data, multilabel=True if cfg.task == "multilabel" else None)
    splits = stratified_split(items, cfg.val_split, cfg.seed)
    train_items, val_items = splits["train"], splits["val"]
    task = task_for(train_items + val_items, cfg, data)
    labels = task.labels
    if cfg.shots is not None:
        train_items = few_shot(train_items, cfg.shots, cfg.seed)
    ckpt = _checkpointing(out, cfg, task, train_items, val_items, device, resume)

    if cfg.unlabeled is not None:
        from vidtune.train.semi import check_pool_config

        check_pool_config(task, bool(val_items))
    auto = None  # --temporal auto: the candidates' scores and the choice
    if cfg.temporal == "auto":
        from vidtune.train.auto import select_head

        cache = open_cache(cfg.cache_dir, cfg.use_cache)
        model, spec, strategy, auto = select_head(cfg, labels, train_items, val_items, task, device, cache, progress,
                                                  ckpt)
        lineage = None
    else:
        model, spec, lineage = build(cfg, labels)
        if getattr(model.encoder, "shift_state", None) is not None and cfg.strategy == "linear":
            raise ConfigError("strategy", f"must be partial or full: the init run's backbone has temporal shifts "
                                          f"({cfg.init}), so its features cannot be cached per frame")
        if cfg.strategy == "linear":
            cache = open_cache(cfg.cache_dir, cfg.use_cache)
            strategy = LinearStrategy(model, train_items, val_items, task, cfg, device, cache, progress, ckpt)
        else:
            strategy = EndToEndStrategy(model, train_items, val_items, task, cfg, device, progress, ckpt)
    encoder = model.encoder
    semi = None  # --unlabeled: which labelling of the pool was kept, and the validation scores
    if cfg.unlabeled is not None:
        from vidtune.train.semi import fit_with_pool

        fit, semi = fit_with_pool(strategy, cfg.unlabeled, cache, progress)
    else:
        fit = strategy.fit()
    history, best_epoch, train_fit, skipped, used = fit.history, fit.best_epoch, fit.train_fit, fit.skipped, fit.used
    val_logits, val_y = fit.val_logits, fit.val_y
    if val_y is None:  # no validation set
        val_logits, val_y = task.empty()
    thresholds = None
    if task.multilabel:  # per-class F1-maximising thresholds on validation; 0.5 without it
        thresholds = tune_thresholds(torch.sigmoid(val_logits), val_y) if len(val_y) else [0.5] * len(labels)
        thresholds = [round(float(t), 6) for t in thresholds]
    val_metrics = task.metrics(val_logits, val_y, thresholds)
    used_counts = Counter(lab for it in used["train"] for lab in task.labels_of(it))
    run_id = uuid.uuid4().hex
    config = RunConfig(
        run_id=run_id, vidtune_version=vidtune.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        task=task.name, labels=labels, model=spec, transform=encoder.cfg,
        sampling={"frames": cfg.frames, "train": "grid" if cfg.strategy == "linear" else "random",
                  "eval": "centre", "views": cfg.views, "clip_seconds": median_clip_seconds(used["train"])},
        train=asdict(cfg),
        data={"source": str(data), "train": dict(sorted(used_counts.items())),
              **({"unlabeled": {"source": str(cfg.unlabeled), "used": len(used.get("unlabeled", [])),
                                "kept": semi["kept"]}} if semi is not None else {}),
              "val": dict(sorted(Counter(lab for it in used["val"] for lab in task.labels_of(it)).items()))},
        thresholds=thresholds, background=cfg.background, lineage=lineage or None,
        modalities=("video", "audio") if spec.audio else ("video",),
    )
    result = {"run": str(out), "val": val_metrics, "train": train_fit, "skipped": skipped,
              "best_epoch": best_epoch, "epochs_run": len(history), "seconds": round(time.perf_counter() - t_start, 2)}
    if "int8" in fit.info:  # --int8: validation with int8 features against fp32 ones
        result["int8"] = fit.info["int8"]
    if auto is not None:
        result["temporal_auto"] = auto
    if semi is not None:
        result["semi"] = semi
    if not _writes():
        return result
    metrics = {
        "val": val_metrics,
        "train": train_fit,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "steps": fit.info.get("steps"),
        "skipped": len(skipped),
        "seconds": round(time.perf_counter() - t_start, 2),
        **({"int8": fit.info["int8"]} if "int8" in fit.info else {}),
        **({"temporal_auto": auto} if auto is not None else {}),
        **({"semi": semi} if semi is not None else {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors", run_id)  # best epoch on validation
    save_weights(fit.last_state, out / "last.safetensors", run_id)
    config.save(out / "config.json")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "skipped.json", skipped)
    atomic_write_json(out / SPLIT_FILE, split_record(used, open_cache(cfg.cache_dir, cfg.use_cache)))
    _write_history(history, out / "history.csv")
    plot_learning_curves(history, out / "learning_curves.png")
    if len(val_y) and not task.multilabel:
        plot_confusion(val_metrics["confusion"], labels, out / "confusion_matrix.png", "Validation confusion matrix")
    else:  # a rerun without validation must not leave an earlier run's matrix behind
        (out / "confusion_matrix.png").unlink(missing_ok=True)
    ckpt.path.unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return {**result, "seconds": metrics["seconds"]}


# Settings that do not change the numbers a run computes: a resume may change them.
_RESUME_FREE = ("workers", "cache_dir", "use_cache", "device")


def _checkpointing(out: Path, cfg: TrainConfig, task: Task, train_items: list[VideoItem],
                   val_items: list[VideoItem], device: torch.device, resume: bool) -> Checkpointing:
    """Where checkpoints go, what they must match, and (``resume``) the one to continue from."""
    from vidtune.train.resume import CHECKPOINT, load_state, mismatch

    fingerprint = {k: v for k, v in asdict(cfg).items() if k not in _RESUME_FREE}
    fingerprint.update(task=task.name, labels=task.labels, data=stable_hash(
        [[str(it.path), it.start, it.end, it.label, it.split] for it in train_items + val_items]))
    ckpt = Checkpointing(out / CHECKPOINT, fingerprint, str(device), write=_writes())
    if not resume:
        if ckpt.path.exists():
            log.info("%s: starting over (use --resume to continue the interrupted run)", ckpt.path)
        return ckpt
    if not ckpt.path.exists():
        if _is_finished_run(out):
            raise VidtuneError(f"nothing to resume: {out} holds a finished run (no {CHECKPOINT}); "
                               "use --overwrite instead of --resume to train it again, or choose another --out")
        log.warning("no %s in %s: starting from the first epoch", CHECKPOINT, out)
        return ckpt
    tensors, state = load_state(ckpt.path)
    saved = state.get("fingerprint")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{ckpt.path}: damaged training state (no run fingerprint)")
    diff = mismatch(saved, fingerprint)
    if diff:
        shown = [d if not d.startswith("data:") else "data: the train/validation videos or labels differ"
                 for d in diff]
        raise CheckpointError(f"{ckpt.path} was written by a run with other arguments or data "
                              f"({'; '.join(shown[:6])}); --resume needs the same ones. Rerun with the "
                              f"original arguments, or drop --resume to start over")
    ckpt.loaded = (tensors, state)
    return ckpt


def _prepare_out(out: Path) -> None:
    """Fail before hours of work, not after: the run folder must be creatable and writable."""
    if out.exists() and not out.is_dir():
        raise ConfigError("out", f"{out} exists and is not a folder; choose a folder path for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vidtune-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VidtuneError(f"cannot write the run folder {out} ({exc.strerror or exc})") from None


