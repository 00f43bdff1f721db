"""Training: frozen-backbone heads on cached features (``linear``) or end to end (``partial``/``full``).

The loop is shared: AdamW, warm-up then cosine decay per step, label smoothing, class balancing,
early stopping on validation mean class accuracy, best/last checkpoints, a CSV history and plots.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import logging
import math
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import vidtune
from vidtune.data.manifest import (
    VideoItem,
    is_multilabel,
    item_labels,
    load_dataset,
    median_clip_seconds,
    stratified_split,
)
from vidtune.data.transforms import Normalize
from vidtune.errors import CheckpointError, DatasetError, VidtuneError
from vidtune.models.backbones import DEFAULT_BACKBONE, create_backbone
from vidtune.models.classifier import VideoClassifier
from vidtune.models.heads import TEMPORAL_HEADS
from vidtune.progress import NullProgress, Progress
from vidtune.train.checkpoint import assemble, load_run, save_config, save_weights
from vidtune.train.features import (
    ClipDataset,
    Sampling,
    amp_dtype,
    autocast,
    clip_loader,
    default_workers,
    extract_features,
    open_cache,
    sampling_for,
)
from vidtune.train.metrics import classification_metrics, multilabel_metrics, tune_thresholds
from vidtune.train.plots import plot_confusion, plot_learning_curves
from vidtune.utils import atomic_write_json, atomic_write_text, stable_hash


def stable_int(text: str) -> int:
    return int(stable_hash(text)[:8], 16)

log = logging.getLogger(__name__)

STRATEGIES = ("linear", "partial", "full")
TEMPORALS = (*TEMPORAL_HEADS, "tsm")  # tsm: temporal shift inside the backbone + mean consensus
BALANCE = ("loss", "sampler", "none")
AUGMENTS = ("none", "robust")
AUGMENT_SEVERITIES = (1, 2, 3, 4, 5)  # --augment robust draws every corruption at every severity
TASKS = ("auto", "single_label", "multilabel")


@dataclass
class TrainConfig:
    """Everything a training run depends on (stored in the run's config.json)."""

    backbone: str = DEFAULT_BACKBONE  # registry name, timm name or tv/<torchvision model>
    weights: str | None = None  # local weights file instead of the backbone's pretrained source
    pretrained: bool = True  # False: random initialisation (a baseline for transfer)
    temporal: str | None = None  # mean | attention | transformer | tsm; None: mean, or the --init run's
    frames: int = 8  # TSN segments = frames per clip
    grid: int | None = None  # space-time tokens: g x g cells of the last feature map per frame (1: pooled)
    depth: int = 2  # transformer head: layers
    motion_tokens: bool = True  # attention/transformer: add per-frame motion cues (energy + correlation)
    tsm_fold_div: int = 8  # tsm: 1/fold_div of the channels shift each way
    init: str | None = None  # a vidtune run folder to start from (source -> target transfer)
    shots: int | None = None  # few-shot: train on K videos per class (seeded choice)
    strategy: str = "auto"  # linear (frozen, cached features) | partial | full; auto: linear on CPU
    unfreeze: int = 2  # partial: number of last backbone stages to train
    epochs: int | None = None  # default 40 for linear, 10 end to end
    batch_size: int = 16  # clips per step
    lr: float | None = None  # head learning rate; default 1e-3 (backbone gets lr * backbone_lr_scale)
    backbone_lr_scale: float = 0.1
    layer_decay: float = 0.75  # fine-tuning: each backbone stage below the top gets this factor more
    accumulate: int = 1  # end to end: gradient accumulation steps per optimiser step
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    val_split: float = 0.2  # fraction per class held out when the data has no split column
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    balance: str = "loss"  # loss: class-weighted loss | sampler: class-balanced sampling | none
    patience: int = 10  # early stopping: epochs without validation improvement
    views: int = 3  # linear: cached temporal positions per segment (random offset in training)
    dropout: float = 0.2
    head_dim: int = 256  # attention head width
    freeze_bn: bool = True  # keep BatchNorm statistics frozen when fine-tuning (small batches)
    workers: int | None = None  # decoding processes (default: cores - 1, at least 1)
    cache_dir: str | None = None  # feature cache (default ~/.cache/vidtune/features or $VIDTUNE_CACHE)
    use_cache: bool = True
    flip: bool = True  # end-to-end augmentation: random horizontal flips (off for left/right-dependent labels)
    task: str = "auto"  # single_label | multilabel; auto: multilabel when a manifest row has "a|b" or no label
    background: str | None = None  # "nothing of interest": single-label a class (tagging skips it); multilabel no label
    augment: str = "none"  # robust: random corruptions (vidtune.data.corruptions) on training clips
    augment_views: int = 2  # robust: corrupted copies of the cached training grid (linear); a clip is corrupted
    # with probability augment_views / (augment_views + 1) in both strategies


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise VidtuneError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VidtuneError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return dev


def _check_config(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    cfg = copy.copy(cfg)
    if cfg.temporal is None and not cfg.init:
        cfg.temporal = "mean"
    if cfg.temporal is not None and cfg.temporal not in TEMPORALS:
        raise VidtuneError(f"--temporal must be one of {', '.join(TEMPORALS)}, got {cfg.temporal!r}")
    if cfg.strategy == "auto":
        # tsm changes the backbone itself, so it has no frozen-feature path
        cfg.strategy = "partial" if device.type != "cpu" or cfg.temporal == "tsm" else "linear"
    if cfg.strategy not in STRATEGIES:
        raise VidtuneError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {cfg.strategy!r}")
    if cfg.temporal == "tsm" and cfg.strategy == "linear":
        raise VidtuneError("--temporal tsm shifts channels inside the backbone, so it must be trained end to end: "
                           "use --strategy partial (or full), or a head on frozen features "
                           "(--temporal attention/transformer)")
    if cfg.init and cfg.weights:
        raise VidtuneError("--init RUN_DIR already brings the backbone weights; drop --weights")
    if cfg.shots is not None and cfg.shots < 1:
        raise VidtuneError(f"--shots must be >= 1, got {cfg.shots}")
    if cfg.grid is not None and not 1 <= cfg.grid <= 7:
        raise VidtuneError(f"--grid must be between 1 and 7, got {cfg.grid}")
    if not 0.0 < cfg.layer_decay <= 1.0:
        raise VidtuneError(f"--layer-decay must be in (0, 1], got {cfg.layer_decay}")
    if cfg.balance not in BALANCE:
        raise VidtuneError(f"--balance must be one of {', '.join(BALANCE)}, got {cfg.balance!r}")
    if cfg.augment not in AUGMENTS:
        raise VidtuneError(f"--augment must be one of {', '.join(AUGMENTS)}, got {cfg.augment!r}")
    if cfg.task not in TASKS:
        raise VidtuneError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    if cfg.background is not None and (not cfg.background.strip() or "|" in cfg.background):
        raise VidtuneError(f"--background must be one label name (not empty, no |), got {cfg.background!r}")
    for name, lo in (("frames", 1), ("batch_size", 1), ("views", 1), ("unfreeze", 0), ("patience", 1),
                     ("weight_decay", 0.0), ("warmup_epochs", 0.0), ("dropout", 0.0), ("head_dim", 1),
                     ("depth", 1), ("accumulate", 1), ("tsm_fold_div", 3), ("augment_views", 1)):
        if getattr(cfg, name) < lo:
            raise VidtuneError(f"--{name.replace('_', '-')} must be >= {lo}, got {getattr(cfg, name)}")
    if cfg.workers is not None and cfg.workers < 0:
        raise VidtuneError(f"--workers must be >= 0 (0 decodes in the main process), got {cfg.workers}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise VidtuneError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if not cfg.dropout < 1.0:
        raise VidtuneError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.temporal in ("attention", "transformer") and cfg.head_dim % 4:
        raise VidtuneError(f"head_dim must be a multiple of 4 (the {cfg.temporal} head has 4 heads), got {cfg.head_dim}")
    if cfg.lr is not None and not cfg.lr > 0:
        raise VidtuneError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.epochs is None:
        cfg.epochs = 40 if cfg.strategy == "linear" else 10
    if cfg.epochs < 1:
        raise VidtuneError("--epochs must be >= 1")
    if cfg.lr is None:
        cfg.lr = 1e-3
    if cfg.workers is None:
        cfg.workers = default_workers()
    return cfg


def _lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return 0.01 + 0.99 * step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases, norm scales and embeddings (positions, queries)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.split(".")[-1] in ("pos", "spos", "query", "cls"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "lr": lr, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _class_weights(y: torch.Tensor, k: int) -> torch.Tensor:
    counts = torch.bincount(y, minlength=k).float()
    w = torch.where(counts > 0, counts.sum() / (k * counts.clamp(min=1)), torch.zeros_like(counts))
    return w


def _epoch_order(y: torch.Tensor, balance: str, gen: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch; ``sampler`` draws classes uniformly (with replacement)."""
    if balance != "sampler":
        return torch.randperm(len(y), generator=gen)
    counts = torch.bincount(y).float()
    p = 1.0 / counts[y]
    return torch.multinomial(p, len(y), replacement=True, generator=gen)


class _Task:
    """What the labels mean: one class per clip (softmax, cross-entropy) or a set of labels per clip
    (sigmoid, binary cross-entropy with per-class ``pos_weight``, thresholds tuned on validation)."""

    def __init__(self, multilabel: bool, labels: list[str], background: str | None, label_smoothing: float):
        self.multilabel = multilabel
        self.labels = labels
        self.index = {lab: i for i, lab in enumerate(labels)}
        self.background = background
        self.label_smoothing = label_smoothing

    @property
    def name(self) -> str:
        return "multilabel" if self.multilabel else "single_label"

    def labels_of(self, item: VideoItem) -> tuple[str, ...]:
        return item_labels(item, self.background) if self.multilabel else (item.label,)

    def target(self, item: VideoItem):
        """A class index, or a multi-hot row."""
        if not self.multilabel:
            return self.index[item.label]
        row = [0.0] * len(self.labels)
        for lab in self.labels_of(item):
            row[self.index[lab]] = 1.0
        return row

    def targets(self, items: list[VideoItem]) -> torch.Tensor:
        """``(N,)`` class indices or ``(N, K)`` multi-hot floats."""
        ys = [self.target(it) for it in items]
        if self.multilabel:
            return torch.tensor(ys, dtype=torch.float32).reshape(len(ys), len(self.labels))
        return torch.tensor(ys, dtype=torch.long)

    def weights(self, y: torch.Tensor) -> torch.Tensor:
        """Class weights for the loss: inverse frequency, or ``pos_weight = negatives / positives``."""
        if not self.multilabel:
            return _class_weights(y, len(self.labels))
        pos = y.sum(0)
        return torch.where(pos > 0, (len(y) - pos) / pos.clamp(min=1), torch.ones_like(pos)).clamp(max=100.0)

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=weights)
        return F.cross_entropy(logits, y, weight=weights, label_smoothing=self.label_smoothing)

    def hits(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int]:
        """(right, counted) for the top-1 column: the argmax is the class / one of the clip's labels
        (multi-label: clips with at least one label)."""
        top = logits.argmax(1)
        if not self.multilabel:
            return int((top == y).sum()), len(y)
        has = y.sum(1) > 0
        return int(y.gather(1, top[:, None])[:, 0][has].sum()), int(has.sum())

    def metrics(self, logits: torch.Tensor, y: torch.Tensor, thresholds: list[float] | None = None) -> dict:
        if self.multilabel:
            return multilabel_metrics(logits, y, self.labels, thresholds)
        return classification_metrics(logits, y, self.labels)

    def empty(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = len(self.labels)
        return torch.zeros(0, k), (torch.zeros(0, k) if self.multilabel else torch.zeros(0, dtype=torch.long))

    def key(self, m: dict) -> tuple:
        """Early stopping: validation mAP (multi-label) or mean class accuracy, then loss."""
        score = m["mAP"] if self.multilabel else m["mean_class_accuracy"]
        return (-1.0 if score is None else score, -m["loss"])

    def history_fields(self, m: dict | None) -> dict:
        row = {"val_loss": None if m is None else m["loss"], "val_top1": None if m is None else m["top1"],
               "val_mean_class_accuracy": None if m is None or self.multilabel else m["mean_class_accuracy"]}
        if self.multilabel:
            row["val_map"] = None if m is None else m["mAP"]
        return row

    def epoch_order(self, y: torch.Tensor, balance: str, gen: torch.Generator) -> torch.Tensor:
        if not self.multilabel:
            return _epoch_order(y, balance, gen)
        if balance != "sampler":
            return torch.randperm(len(y), generator=gen)
        # a clip is drawn as often as its rarest label needs; clips with no label form one more group
        groups = torch.cat([y, (y.sum(1, keepdim=True) == 0).float()], dim=1)
        inv = 1.0 / groups.sum(0).clamp(min=1)
        p = (groups * inv).max(dim=1).values
        return torch.multinomial(p, len(y), replacement=True, generator=gen)

    def require(self, train_items: list[VideoItem], skipped: list[dict]) -> None:
        """Every class needs readable training examples (multi-label: positives)."""
        if not train_items:
            raise DatasetError(f"no readable training videos left ({len(skipped)} skipped; see skipped.json or --json)")
        present = {lab for it in train_items for lab in self.labels_of(it)}
        empty = [lab for lab in self.labels if lab not in present]
        if empty:
            what = "positive training videos" if self.multilabel else "readable training videos"
            raise DatasetError(
                f"{'label' if self.multilabel else 'class'}(es) {', '.join(map(repr, empty))} have no {what} "
                f"(after skipping {len(skipped)} file(s)); add videos or remove the label"
            )


def _task_for(items: list[VideoItem], cfg: TrainConfig, data) -> _Task:
    """Single- or multi-label, and the label list, from the data and ``--task``/``--background``."""
    multi = is_multilabel(items)
    if cfg.task == "single_label" and multi:
        raise DatasetError(f"{data}: --task single_label, but some rows have several labels (a|b) or none; "
                           "use --task multilabel (or auto)")
    multilabel = cfg.task == "multilabel" or (cfg.task == "auto" and multi)
    if multilabel:
        labels = sorted({lab for it in items for lab in item_labels(it, cfg.background)})
        if not labels:
            raise DatasetError(f"{data}: no positive labels in the data (every row is empty or the background)")
    else:
        labels = sorted({it.label for it in items})
        if len(labels) < 2:
            raise DatasetError(f"{data}: need at least 2 classes to train a classifier, found {labels}")
        if cfg.background is not None and cfg.background not in labels:
            raise DatasetError(f"--background {cfg.background!r} is not a class of {data}; its classes are: "
                               f"{', '.join(labels[:20])}")
    return _Task(multilabel, labels, cfg.background, cfg.label_smoothing)


@dataclass
class _Checkpointing:
    """End-of-epoch training checkpoints in the run folder and, with ``--resume``, the one to continue."""

    path: Path
    fingerprint: dict  # the arguments and data the run depends on; a resume must match them
    device: str
    loaded: tuple[dict, dict] | None = None  # (tensors, state) of the checkpoint to resume from


# Tests: SIGKILL the process in the middle of epoch N+1 (after its first optimiser step), once the
# checkpoint of epoch N is on disk. A real crash, at a deterministic point.
_KILL_ENV = "VIDTUNE_TEST_KILL_AFTER_EPOCH"


class _Fitter:
    """The shared optimisation loop over an abstract ``train_epoch`` / ``evaluate`` pair.

    With ``ckpt`` it writes a resumable checkpoint at the end of every epoch (weights, best
    weights, optimiser, scheduler, gradient scaler, random generators, history, early-stopping
    state) and, when ``ckpt.loaded`` holds one, continues from it. Every random stream of an
    epoch is either restored from the checkpoint (the epoch-order generator, torch's global
    generator for dropout) or derived from (seed, epoch, draw) (decoded clip offsets, crops and
    corruptions in :class:`ClipDataset`), so the continuation is bit-identical.
    """

    def __init__(self, cfg: TrainConfig, params: list[dict], steps_per_epoch: int, progress: Progress,
                 ckpt: _Checkpointing | None = None):
        self.cfg = cfg
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = steps_per_epoch * cfg.epochs
        warm = int(round(steps_per_epoch * min(cfg.warmup_epochs, cfg.epochs / 4)))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(total, warm))
        self.progress = progress
        self.ckpt = ckpt
        self.epoch = 0
        self._kill_after = int(os.environ.get(_KILL_ENV) or 0)

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.after_step()

    def after_step(self) -> None:
        if self._kill_after and self.epoch == self._kill_after + 1:
            log.warning("%s=%d: killing the process mid-epoch", _KILL_ENV, self._kill_after)
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    def run(self, train_epoch, evaluate, snapshot, has_val: bool, task: _Task, *, module: nn.Module,
            gen: torch.Generator, scaler=None, extra=None) -> tuple[list[dict], dict, int]:
        """``module``: the trained weights (the head, or the whole model); ``gen``: the epoch-order
        generator; ``extra``: ``(get, set)`` of strategy state to checkpoint as JSON."""
        history, best, best_key, best_epoch, stale = [], snapshot(), None, 0, 0
        if self.ckpt is not None and self.ckpt.loaded is not None:
            history, best, best_key, best_epoch, stale = self._restore(module, snapshot, gen, scaler, extra)
        start = len(history) + 1
        stop = has_val and stale >= self.cfg.patience  # a checkpoint written as early stopping fired
        with self.progress.task("training", total=self.cfg.epochs) as bar:
            if start > 1:
                bar.advance(start - 1)
            for epoch in range(start, self.cfg.epochs + 1):
                if stop:
                    break
                self.epoch = epoch
                t0 = time.perf_counter()
                lr = self.opt.param_groups[0]["lr"]
                train_loss, train_top1 = train_epoch(epoch)
                row = {"epoch": epoch, "train_loss": train_loss, "train_top1": train_top1,
                       **task.history_fields(None), "lr": lr}
                m = evaluate() if has_val else None  # metrics dict with "loss"
                if m is not None and m["n"]:
                    row.update(task.history_fields(m))
                    key = task.key(m)
                    if best_key is None or key > best_key:
                        best_key, best, best_epoch, stale = key, snapshot(), epoch, 0
                    else:
                        stale += 1
                else:
                    best, best_epoch = snapshot(), epoch
                row["seconds"] = time.perf_counter() - t0
                history.append(row)
                val = f", val top-1 {row['val_top1']:.1%}" if row["val_top1"] is not None else ""
                bar.update(description=f"epoch {epoch}/{self.cfg.epochs}: loss {train_loss:.3f}{val}")
                bar.advance(1)
                log.info(_epoch_text(row))
                stop = has_val and stale >= self.cfg.patience
                if self.ckpt is not None:
                    self._save(module, best, gen, scaler, extra, history, best_key, best_epoch, stale)
                if stop:
                    log.info("early stopping: no validation improvement for %d epochs", stale)
        return history, best, best_epoch

    def _save(self, module, best, gen, scaler, extra, history, best_key, best_epoch, stale) -> None:
        from vidtune.train.resume import pack_optimizer, rng_tensors, save_state

        t0 = time.perf_counter()
        current = module.state_dict()
        tensors = {f"model/{k}": v for k, v in current.items()}
        best_is_model = best_epoch == len(history) and set(best) == set(current)
        if not best_is_model:
            tensors.update({f"best/{k}": v for k, v in best.items()})
        opt_tensors, opt_meta = pack_optimizer(self.opt)
        tensors.update(opt_tensors)
        tensors.update(rng_tensors(gen))
        state = {
            "epoch": len(history), "history": history, "best_key": list(best_key) if best_key is not None else None,
            "best_epoch": best_epoch, "best_is_model": best_is_model, "stale": stale,
            "optimizer": opt_meta, "scheduler": self.sched.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            "extra": extra[0]() if extra is not None else None,
            "fingerprint": self.ckpt.fingerprint, "device": self.ckpt.device,
        }
        save_state(self.ckpt.path, tensors, state)
        log.debug("checkpoint of epoch %d written in %.2fs", len(history), time.perf_counter() - t0)

    def _restore(self, module, snapshot, gen, scaler, extra):
        from vidtune.train.resume import restore_rng, strip, unpack_optimizer

        tensors, state = self.ckpt.loaded
        try:
            module.load_state_dict(strip(tensors, "model/"))
            best = snapshot() if state["best_is_model"] else strip(tensors, "best/")
            unpack_optimizer(self.opt, tensors, state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            if scaler is not None and scaler.is_enabled() and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            restore_rng(gen, tensors)
            if extra is not None and state.get("extra") is not None:
                extra[1](state["extra"])
            history = list(state["history"])
            best_key = tuple(state["best_key"]) if state["best_key"] is not None else None
            best_epoch, stale = int(state["best_epoch"]), int(state["stale"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.ckpt.path} does not fit this run ({str(exc).splitlines()[0][:200]}); "
                                  "delete it to train from the first epoch") from None
        if state.get("device") != self.ckpt.device:
            log.warning("resuming a run checkpointed on %s on %s: the continuation is not bit-identical",
                        state.get("device"), self.ckpt.device)
        log.info("resuming after epoch %d of %d", len(history), self.cfg.epochs)
        return history, best, best_key, best_epoch, stale


@dataclass
class _Fit:
    """What a training strategy hands back to :func:`train`."""

    history: list[dict]
    best_epoch: int
    val_logits: torch.Tensor | None
    val_y: torch.Tensor | None
    train_fit: dict
    skipped: list[dict]
    used: dict[str, list[VideoItem]]
    last_state: dict[str, torch.Tensor]  # full model state after the last epoch (last.safetensors)


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _epoch_text(row: dict) -> str:
    text = f"epoch {row['epoch']}: loss {row['train_loss']:.3f} train {row['train_top1']:.1%}"
    if row.get("val_loss") is not None:
        text += f" | val loss {row['val_loss']:.3f}"
        if row.get("val_top1") is not None:
            text += f" top-1 {row['val_top1']:.1%}"
        if row.get("val_map") is not None:
            text += f" mAP {row['val_map']:.3f}"
        elif row.get("val_mean_class_accuracy") is not None:
            text += f" mca {row['val_mean_class_accuracy']:.1%}"
    return text


def _write_history(history: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(history[0].keys()))
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def train(data, out, cfg: TrainConfig | None = None, progress: Progress | None = None, resume: bool = False) -> dict:
    """Train a video classifier on ``data`` (folder per class or manifest) into the run folder ``out``.

    Returns ``{"run": ..., "val": {...metrics}, "train": {...}, "skipped": [{"path", "reason"}]}``.
    Raises :class:`DatasetError` when no readable video is left or a class ends up empty.
    A resumable checkpoint (``checkpoint.safetensors``) is rewritten at the end of every epoch and
    removed when the run is complete; ``resume=True`` continues from it (same arguments required)
    and, with the same seed, ends with the same weights and metrics as an uninterrupted run.
    """
    cfg = cfg or TrainConfig()
    progress = progress or NullProgress()
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    cfg = _check_config(cfg, device)
    torch.manual_seed(cfg.seed)
    out = Path(out)
    _prepare_out(out)

    items = load_dataset(data, multilabel=True if cfg.task == "multilabel" else None)
    splits = stratified_split(items, cfg.val_split, cfg.seed)
    train_items, val_items = splits["train"], splits["val"]
    task = _task_for(train_items + val_items, cfg, data)
    labels = task.labels
    if cfg.shots is not None:
        train_items = few_shot(train_items, cfg.shots, cfg.seed)
    ckpt = _checkpointing(out, cfg, task, train_items, val_items, device, resume)

    model, model_cfg, lineage = _build(cfg, labels)
    encoder = model.encoder
    if getattr(encoder, "shift_state", None) is not None and cfg.strategy == "linear":
        raise VidtuneError(f"the --init run's backbone has temporal shifts ({cfg.init}), so its features cannot be "
                           "cached per frame: use --strategy partial or full")
    cache = open_cache(cfg.cache_dir, cfg.use_cache)

    if cfg.strategy == "linear":
        fit = _train_linear(model, train_items, val_items, task, cfg, device, cache, progress, ckpt)
    else:
        fit = _train_end_to_end(model, train_items, val_items, task, cfg, device, progress, ckpt)
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
    config = {
        "run_id": run_id,
        "vidtune_version": vidtune.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task.name,
        "labels": labels,
        "model": model_cfg,
        "transform": encoder.cfg.to_dict(),
        "sampling": {"frames": cfg.frames, "train": "grid" if cfg.strategy == "linear" else "random",
                     "eval": "centre", "views": cfg.views, "clip_seconds": median_clip_seconds(used["train"])},
        "train": asdict(cfg),
        "data": {"source": str(data), "train": dict(sorted(used_counts.items())),
                 "val": dict(sorted(Counter(lab for it in used["val"] for lab in task.labels_of(it)).items()))},
    }
    if thresholds is not None:
        config["thresholds"] = thresholds  # one per label, in ``labels`` order
    if cfg.background is not None:
        config["background"] = cfg.background
    if lineage:
        config["lineage"] = lineage
    metrics = {
        "val": val_metrics,
        "train": train_fit,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "skipped": len(skipped),
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors", run_id)  # best epoch on validation
    save_weights(fit.last_state, out / "last.safetensors", run_id)
    save_config(config, out / "config.json")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "skipped.json", skipped)
    _write_history(history, out / "history.csv")
    plot_learning_curves(history, out / "learning_curves.png")
    if len(val_y) and not task.multilabel:
        plot_confusion(val_metrics["confusion"], labels, out / "confusion_matrix.png", "Validation confusion matrix")
    else:  # a rerun without validation must not leave an earlier run's matrix behind
        (out / "confusion_matrix.png").unlink(missing_ok=True)
    ckpt.path.unlink(missing_ok=True)  # the run is complete: nothing left to resume
    return {"run": str(out), "val": val_metrics, "train": train_fit, "skipped": skipped,
            "best_epoch": best_epoch, "epochs_run": len(history), "seconds": metrics["seconds"]}


# Settings that do not change the numbers a run computes: a resume may change them.
_RESUME_FREE = ("workers", "cache_dir", "use_cache", "device")


def _checkpointing(out: Path, cfg: TrainConfig, task: _Task, train_items: list[VideoItem],
                   val_items: list[VideoItem], device: torch.device, resume: bool) -> _Checkpointing:
    """Where checkpoints go, what they must match, and (``resume``) the one to continue from."""
    from vidtune.train.resume import CHECKPOINT, load_state, mismatch

    fingerprint = {k: v for k, v in asdict(cfg).items() if k not in _RESUME_FREE}
    fingerprint.update(task=task.name, labels=task.labels, data=stable_hash(
        [[str(it.path), it.start, it.end, it.label, it.split] for it in train_items + val_items]))
    ckpt = _Checkpointing(out / CHECKPOINT, fingerprint, str(device))
    if not resume:
        if ckpt.path.exists():
            log.info("%s: starting over (use --resume to continue the interrupted run)", ckpt.path)
        return ckpt
    if not ckpt.path.exists():
        if (out / "metrics.json").is_file() and (out / "model.safetensors").is_file():
            raise VidtuneError(f"nothing to resume: {out} holds a finished run (no {CHECKPOINT}); "
                               "drop --resume to train it again, or choose another --out")
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


def few_shot(items: list[VideoItem], shots: int, seed: int) -> list[VideoItem]:
    """``shots`` videos per class, a seeded choice that does not depend on the input order.

    Choices are nested: the 4-shot set contains the 2-shot set, so a K sweep only adds videos.
    """
    by_class: dict[str, list[VideoItem]] = {}
    for it in sorted(items, key=lambda it: it.key()):
        by_class.setdefault(it.label, []).append(it)
    chosen = []
    for label, group in sorted(by_class.items()):
        rng = torch.Generator().manual_seed(seed * 1_000_003 + stable_int(label))
        perm = torch.randperm(len(group), generator=rng).tolist()
        if len(group) < shots:
            log.warning("class %r has only %d training videos (--shots %d); using all of them", label, len(group), shots)
        chosen += [group[i] for i in perm[:shots]]
    return chosen


def _build(cfg: TrainConfig, labels: list[str]) -> tuple[VideoClassifier, dict, dict | None]:
    """The model to train, its config section and (with ``--init``) its lineage."""
    from vidtune.models.temporal_shift import add_temporal_shift

    if cfg.init:
        return _build_from_run(cfg, labels)
    encoder = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights)
    model_cfg = {
        "backbone": cfg.backbone, "source": encoder.source, "arch": encoder.arch,
        "feature_dim": encoder.num_features, "temporal": cfg.temporal, "frames": cfg.frames,
        "grid": cfg.grid or default_grid(cfg.temporal, encoder), "head": _head_options(cfg),
    }
    if cfg.temporal == "tsm":
        if encoder.clip_len > 1:
            raise VidtuneError(f"--temporal tsm adds time to an image backbone; {cfg.backbone} is a video model that "
                               "already sees time: use --temporal mean/attention/transformer over its clips")
        within = None if cfg.strategy == "full" else _top_stages(encoder, cfg.unfreeze)
        blocks = add_temporal_shift(encoder, cfg.frames, cfg.tsm_fold_div, within=within)
        model_cfg["tsm"] = {"fold_div": cfg.tsm_fold_div, "blocks": blocks}
    return assemble(encoder, model_cfg, len(labels), shift=False), model_cfg, None


def _build_from_run(cfg: TrainConfig, labels: list[str]) -> tuple[VideoClassifier, dict, dict]:
    """Start from an earlier run: its backbone (and temporal head when the kind matches); the
    classifier is rebuilt for ``labels``, keeping the rows of labels both tasks share."""
    source, src_cfg = load_run(cfg.init)
    src_model = src_cfg["model"]
    src_labels = list(src_cfg["labels"])
    temporal = cfg.temporal or src_model["temporal"]
    if temporal == "tsm" and src_model["temporal"] != "tsm":
        raise VidtuneError(f"--init {cfg.init} was trained with --temporal {src_model['temporal']}; "
                           "tsm needs its shifts from the start: train the source run with --temporal tsm")
    if cfg.grid is not None and cfg.grid != int(src_model.get("grid", 1)):
        raise VidtuneError(f"--grid {cfg.grid} differs from the --init run's grid {src_model.get('grid', 1)}; "
                           "drop --grid to use the run's")
    model_cfg = {**src_model, "temporal": temporal, "frames": cfg.frames}
    keep_head = temporal == src_model["temporal"]
    if not keep_head:
        model_cfg["head"] = _head_options(cfg)
    model = assemble(source.encoder, model_cfg, len(labels), shift=False)
    carried = ["encoder"]
    if keep_head:
        state = {k: v for k, v in source.head.state_dict().items() if not k.startswith("fc.")}
        model.head.load_state_dict(state, strict=False)
        shared = [lab for lab in labels if lab in src_labels]
        with torch.no_grad():
            for j, lab in enumerate(labels):
                if lab in src_labels:
                    i = src_labels.index(lab)
                    model.head.fc.weight[j] = source.head.fc.weight[i]
                    model.head.fc.bias[j] = source.head.fc.bias[i]
        carried.append("temporal head" + (f" and classifier rows of {len(shared)} shared label(s)" if shared else ""))
    model.encoder.invalidate_fingerprint()
    lineage = {
        "init": str(cfg.init), "run_id": src_cfg.get("run_id"), "labels": src_labels,
        "data": src_cfg.get("data"), "backbone": src_model["backbone"], "temporal": src_model["temporal"],
        "carried": carried, "ancestors": [src_cfg["lineage"]] if src_cfg.get("lineage") else [],
    }
    log.info("initialised from %s: %s", cfg.init, ", ".join(carried))
    return model, model_cfg, lineage


def default_grid(temporal: str | None, encoder=None) -> int:
    """Token grid when ``--grid`` is not given: 3x3 for heads that attend over tokens (where things
    are is what tells motion apart; bench/transfer.py measures it), one vector otherwise, and for
    backbones without a spatial feature map (video models, ViTs)."""
    if temporal not in ("attention", "transformer"):
        return 1
    if encoder is not None:
        try:
            encoder.set_grid(3)
        except VidtuneError:
            return 1
        finally:
            encoder.grid = 1
    return 3


def _head_options(cfg: TrainConfig) -> dict:
    return {"dropout": cfg.dropout, "dim": cfg.head_dim, "depth": cfg.depth, "motion": cfg.motion_tokens}


def _top_stages(encoder, n: int) -> list[nn.Module]:
    stages = encoder.stages()
    return [m for group in stages[max(0, len(stages) - n):] for m in group] if n else []


def _prepare_out(out: Path) -> None:
    """Fail before hours of work, not after: the run folder must be creatable and writable."""
    if out.exists() and not out.is_dir():
        raise VidtuneError(f"--out {out} exists and is not a folder; choose a folder path for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".vidtune-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise VidtuneError(f"cannot write the run folder {out} ({exc.strerror or exc})") from None


def _train_linear(model, train_items, val_items, task, cfg, device, cache, progress, ckpt=None):
    """Frozen backbone: features once (cached), then a head on tensors: seconds per epoch."""
    encoder, head = model.encoder, model.head
    tr_feats, tr_skip = extract_features(encoder, train_items, sampling_for(encoder, cfg.frames, "grid", cfg.views), device=device,
                                         cache=cache, workers=cfg.workers, progress=progress,
                                         description="train features")
    va_feats, va_skip = extract_features(encoder, val_items, sampling_for(encoder, cfg.frames, "centre"), device=device,
                                         cache=cache, workers=cfg.workers, progress=progress,
                                         description="val features", grid_views=cfg.views) if val_items else ({}, [])
    skipped = tr_skip + va_skip
    tr_idx = sorted(tr_feats)
    va_idx = sorted(va_feats)
    used = {"train": [train_items[i] for i in tr_idx], "val": [val_items[i] for i in va_idx]}
    task.require(used["train"], skipped)
    aug = _corrupted_views(encoder, used["train"], cfg, device, cache, progress)
    # Features stay on the CPU in one preallocated tensor (10,000 clips x 8 frames x 3 views x 1280
    # floats is ~1 GB per 1,000 clips); batches move to the device as they are used. Corrupted
    # copies (--augment robust) follow the clean views on the view axis.
    first = tr_feats[tr_idx[0]]
    sets = 1 + len(aug)
    x_tr = torch.empty((len(tr_idx), first.shape[0], first.shape[1] * sets, *first.shape[2:]),
                       dtype=first.dtype)  # (N, T, V * sets, D)
    v_clean = first.shape[1]
    for j, i in enumerate(tr_idx):
        x_tr[j, :, :v_clean] = tr_feats.pop(i)
        for a, feats in enumerate(aug, start=1):
            x_tr[j, :, a * v_clean : (a + 1) * v_clean] = feats.get(j, x_tr[j, :, :v_clean])
    y_tr = task.targets(used["train"])
    x_va = torch.stack([va_feats[i][:, 0] for i in va_idx]) if va_idx else None  # (M, T, D)
    y_va = task.targets(used["val"]) if va_idx else None
    weights = task.weights(y_tr).to(device) if cfg.balance == "loss" else None
    head.to(device)
    steps = math.ceil(len(y_tr) / cfg.batch_size)
    fitter = _Fitter(cfg, _param_groups(head, cfg.lr, cfg.weight_decay), steps, progress, ckpt)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, t = x_tr.shape[:2]
    v = v_clean
    tok = x_tr.shape[3:]  # (D,) or (G, D) for space-time tokens
    x_flat = x_tr.view(n, t, v * sets, -1)
    d = x_flat.shape[-1]

    def train_epoch(epoch):
        head.train()
        order = task.epoch_order(y_tr, cfg.balance, gen)
        # a random cached offset per segment, drawn per position so repeated draws differ too
        view = torch.randint(v, (len(order), t), generator=gen)
        if sets > 1:  # --augment robust: per clip, the clean views or one corrupted copy, uniformly
            view += v * torch.randint(sets, (len(order), 1), generator=gen)
        total, correct, seen, scored = 0.0, 0, 0, 0
        for s in range(0, len(order), cfg.batch_size):
            b = order[s : s + cfg.batch_size]
            x = x_flat[b].gather(2, view[s : s + len(b), :, None, None].expand(-1, -1, 1, d))[:, :, 0]
            x = x.view(len(b), t, *tok).to(device)
            y = y_tr[b].to(device)
            logits = head(x)
            loss = task.loss(logits, y, weights)
            fitter.step(loss)
            total += loss.item() * len(b)
            right, counted = task.hits(logits, y)
            correct += right
            seen += len(b)
            scored += counted
        return total / seen, correct / max(scored, 1)

    @torch.no_grad()
    def evaluate():
        head.eval()
        logits = head(x_va.to(device)).cpu()
        return {**task.metrics(logits, y_va), "loss": float(task.loss(logits, y_va))}

    def snapshot():
        return {k_: v_.detach().clone() for k_, v_ in head.state_dict().items()}

    torch.manual_seed(cfg.seed)  # dropout masks: identical whether features came from the cache or not
    with _small_op_threads(device):
        history, best, best_epoch = fitter.run(train_epoch, evaluate, snapshot, has_val=x_va is not None, task=task,
                                               module=head, gen=gen)
    last_state = _full_state(model)
    head.load_state_dict(best)
    head.eval()
    with torch.no_grad():
        tr_logits = torch.cat([head(x_tr[s : s + 256, :, v // 2].to(device)).cpu() for s in range(0, n, 256)])
        right, counted = task.hits(tr_logits, y_tr)
        train_fit = {"n": int(n), "top1": right / counted if counted else None}
        val_logits = head(x_va.to(device)).cpu() if x_va is not None else None
    model.to("cpu")
    return _Fit(history, best_epoch, val_logits, y_va, train_fit, skipped, used, last_state)


def _robust_op(cfg: TrainConfig, copy: int | None = None):
    """The training corruption: every corruption at every severity, seeded by (seed, copy).

    ``copy`` (linear): one cached corrupted copy of the training grid, every clip corrupted; its
    seed names it in the feature cache. ``None`` (end to end): on the fly, a clip corrupted with
    probability ``augment_views / (augment_views + 1)``, the same mix the linear strategy draws.
    """
    from vidtune.data.corruptions import RandomCorruption

    if copy is not None:
        return RandomCorruption(seed=stable_int(f"augment/{cfg.seed}/{copy}"), severities=AUGMENT_SEVERITIES)
    return RandomCorruption(seed=stable_int(f"augment/{cfg.seed}"), severities=AUGMENT_SEVERITIES,
                            p=cfg.augment_views / (cfg.augment_views + 1))


def _corrupted_views(encoder, items, cfg, device, cache, progress) -> list[dict[int, torch.Tensor]]:
    """``--augment robust``, linear: features of ``augment_views`` corrupted copies of the training grid
    (cached under their own keys). A clip whose corrupted copy fails keeps its clean features there."""
    if cfg.augment != "robust":
        return []
    sampling = sampling_for(encoder, cfg.frames, "grid", cfg.views)
    views = []
    for a in range(cfg.augment_views):
        feats, failed = extract_features(encoder, items, sampling, device=device, cache=cache, workers=cfg.workers,
                                         progress=progress, frame_op=_robust_op(cfg, a),
                                         description=f"corrupted train features {a + 1}/{cfg.augment_views}")
        for f in failed:
            log.warning("corrupted copy %d of %s failed (%s); using its clean features there", a + 1, f["path"],
                        f["reason"])
        views.append(feats)
    return views


@contextlib.contextmanager
def _small_op_threads(device: torch.device):
    """One CPU thread while training a head on cached features: its ops are too small to split, and
    on a busy machine OpenMP threads waiting for each other made a transformer-head step 16x slower
    (5.1 s vs 0.32 s, measured with 6 other processes on 2 cores)."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _backbone_param_groups(model: VideoClassifier, cfg: TrainConfig) -> list[dict]:
    """Unfreeze per strategy; AdamW groups with layer-wise learning-rate decay.

    The top stage gets ``lr * backbone_lr_scale``, each stage below it ``layer_decay`` times its
    upper neighbour's (BEiT/ConvNeXt fine-tuning recipes): low layers hold generic features that
    a small target set should move least. Parameters outside every stage get the lowest rate.
    """
    enc = model.encoder
    for p in enc.parameters():
        p.requires_grad_(False)
    stages = enc.stages()
    n = len(stages) if cfg.strategy == "full" else min(cfg.unfreeze, len(stages))
    groups, seen = [], set()
    base = cfg.lr * cfg.backbone_lr_scale
    for depth, group in enumerate(reversed(stages[len(stages) - n:])):
        params = [p for m in group for p in m.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        for p in params:
            p.requires_grad_(True)
        groups += _param_groups(nn.ModuleList(group), base * cfg.layer_decay ** depth, cfg.weight_decay)
    if cfg.strategy == "full":
        rest = [(name, p) for name, p in enc.named_parameters() if id(p) not in seen]
        if rest:
            holder = nn.Module()
            for i, (_, p) in enumerate(rest):
                p.requires_grad_(True)
                holder.register_parameter(f"p{i}", p)
            groups += _param_groups(holder, base * cfg.layer_decay ** max(n - 1, 0), cfg.weight_decay)
    return groups


def _freeze_norm_stats(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _train_end_to_end(model, train_items, val_items, task, cfg, device, progress, ckpt=None):
    """Fine-tune (part of) the backbone with the head, decoding fresh random frames every epoch."""
    enc = model.encoder
    # A quick pass that decodes one frame of each video finds unreadable files before training.
    probe_skip: list[dict] = []
    ok: dict[str, list[VideoItem]] = {}
    for name, group in (("train", train_items), ("val", val_items)):
        ds = ClipDataset(group, Sampling(1, "centre"), enc.cfg)
        good = []
        with progress.task(f"checking {name} videos", total=len(group)) as bar:
            for s in clip_loader(ds, cfg.workers):
                if s["error"] is None:
                    good.append(group[s["index"]])
                else:
                    probe_skip.append({"path": str(group[s["index"]].path), "reason": s["error"]})
                bar.advance(1)
        ok[name] = sorted(good, key=lambda it: it.key())
    task.require(ok["train"], probe_skip)
    skipped = list(probe_skip)
    backbone_groups = _backbone_param_groups(model, cfg)
    model.to(device)
    if device.type == "cuda":
        model.encoder.to(memory_format=torch.channels_last)
    norm = Normalize(enc.cfg).to(device)
    y_all = task.targets(ok["train"])
    weights = task.weights(y_all).to(device) if cfg.balance == "loss" else None
    params = _param_groups(model.head, cfg.lr, cfg.weight_decay) + backbone_groups
    steps = math.ceil(math.ceil(len(ok["train"]) / cfg.batch_size) / cfg.accumulate)
    fitter = _Fitter(cfg, params, steps, progress, ckpt)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    train_ds = ClipDataset(ok["train"], sampling_for(enc, cfg.frames, "random"), enc.cfg, augment=True, seed=cfg.seed,
                           flip=cfg.flip, frame_op=_robust_op(cfg) if cfg.augment == "robust" else None)
    val_ds = ClipDataset(ok["val"], sampling_for(enc, cfg.frames, "centre"), enc.cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    failed: set[str] = set()

    def batches(ds, order):
        n = len(ds)
        keep = [int(i) for i in order if str(ds.items[int(i)].path) not in failed]
        draws = [pos * n + i for pos, i in enumerate(keep)]  # repeats of one clip get fresh augmentation
        for batch in clip_loader(ds, cfg.workers, batch_size=cfg.batch_size, order=draws,
                                 pin_memory=device.type == "cuda"):
            good = []
            for s in batch:
                it = ds.items[s["index"]]
                if s["error"] is not None:
                    if str(it.path) not in failed:
                        failed.add(str(it.path))
                        skipped.append({"path": str(it.path), "reason": s["error"]})
                        log.warning("skipping %s: %s", it.path, s["error"])
                    continue
                good.append((s["frames"], task.target(it)))
            if good:
                x = torch.stack([f for f, _ in good]).to(device, non_blocking=True)  # (B, T, S, S, 3) uint8
                yield norm(x), torch.tensor([y for _, y in good], device=device)  # (B,) or (B, K) multi-hot

    def train_epoch(epoch):
        train_ds.epoch = epoch
        model.train()
        if cfg.freeze_bn:
            _freeze_norm_stats(model.encoder)
        total, correct, seen, scored, micro = 0.0, 0, 0, 0, 0
        fitter.opt.zero_grad(set_to_none=True)
        for x, y in batches(train_ds, task.epoch_order(y_all, cfg.balance, gen)):
            with autocast(device):
                logits = model(x)
                loss = task.loss(logits.float(), y, weights)
            scaler.scale(loss / cfg.accumulate).backward()
            micro += 1
            if micro % cfg.accumulate == 0:
                optimiser_step()
            total += loss.item() * len(y)
            right, counted = task.hits(logits, y)
            correct += right
            seen += len(y)
            scored += counted
        if micro % cfg.accumulate:  # a partial accumulation at the end of the epoch still counts
            optimiser_step()
        return total / max(seen, 1), correct / max(scored, 1)

    def optimiser_step():
        scaler.step(fitter.opt)
        scaler.update()
        fitter.sched.step()
        fitter.opt.zero_grad(set_to_none=True)
        fitter.after_step()

    @torch.no_grad()
    def predict_all():
        model.eval()
        outs, ys = [], []
        for x, y in batches(val_ds, range(len(val_ds))):
            with autocast(device):
                outs.append(model(x).float().cpu())
            ys.append(y.cpu())
        if not outs:  # every validation clip failed to decode
            return task.empty()
        return torch.cat(outs), torch.cat(ys)

    def evaluate():
        logits, y = predict_all()
        loss = float(task.loss(logits, y)) if len(y) else float("nan")
        return {**task.metrics(logits, y), "loss": loss}

    def snapshot():
        return _full_state(model)

    torch.manual_seed(cfg.seed)
    def get_extra():  # files that failed to decode mid-training stay skipped after a resume
        return {"failed": sorted(failed), "skipped": skipped}

    def set_extra(state):
        failed.clear()
        failed.update(state["failed"])
        skipped[:] = state["skipped"]

    history, best, best_epoch = fitter.run(train_epoch, evaluate, snapshot, has_val=bool(ok["val"]), task=task,
                                           module=model, gen=gen, scaler=scaler, extra=(get_extra, set_extra))
    last_state = _full_state(model)
    model.load_state_dict(best)
    val_logits, val_y = predict_all() if ok["val"] else (None, None)
    enc.invalidate_fingerprint()
    model.to("cpu")
    used = {"train": [it for it in ok["train"] if str(it.path) not in failed],
            "val": [it for it in ok["val"] if str(it.path) not in failed]}
    train_fit = {"n": len(used["train"]), "top1": history[best_epoch - 1]["train_top1"] if best_epoch else None}
    return _Fit(history, best_epoch, val_logits, val_y, train_fit, skipped, used, last_state)
