"""The optimisation loop both training strategies share.

AdamW with linear warm-up then cosine decay per optimiser step; one optimiser step (gradient
scaling and accumulation included); early stopping that never fires before ``min_steps`` optimiser
steps; the checkpoint choice (validation accuracy, smoothed validation loss, or an exponential
moving average of the weights); and a resumable checkpoint at the end of every epoch.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from vidtune.errors import CheckpointError, TrainingDivergedError
from vidtune.progress import Progress
from vidtune.train.config import TrainConfig
from vidtune.train.task import Task

log = logging.getLogger(__name__)

# Tests: SIGKILL the process in the middle of epoch N+1 (after its first optimiser step), once the
# checkpoint of epoch N is on disk. A real crash, at a deterministic point.
KILL_ENV = "VIDTUNE_TEST_KILL_AFTER_EPOCH"
LOSS_SMOOTHING = 0.5  # select=loss: weight of the newest epoch in the smoothed validation loss


@dataclass
class Checkpointing:
    """End-of-epoch training checkpoints in the run folder and, with ``--resume``, the one to continue."""

    path: Path
    fingerprint: dict  # the arguments and data the run depends on; a resume must match them
    device: str
    loaded: tuple[dict, dict] | None = None  # (tensors, state) of the checkpoint to resume from
    write: bool = True  # False on the ranks > 0 of a distributed run: only rank 0 writes


class Strategy(Protocol):
    """What :meth:`Fitter.run` drives: the linear and end-to-end strategies implement it."""

    module: nn.Module  # the trained weights (the head, or the whole model)
    has_val: bool
    scaler: torch.amp.GradScaler | None

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training clips: (mean loss, top-1)."""

    def evaluate(self) -> dict:
        """Validation metrics of ``module`` as it is now, with ``loss`` and ``n``."""

    def extra_state(self) -> dict | None:
        """Strategy state a resume needs (JSON)."""

    def load_extra_state(self, state: dict) -> None: ...


@dataclass
class Fit:
    """What a training strategy hands back to :func:`vidtune.train.trainer.train`."""

    history: list[dict]
    best_epoch: int
    val_logits: torch.Tensor | None
    val_y: torch.Tensor | None
    train_fit: dict
    skipped: list[dict]
    used: dict[str, list]
    last_state: dict[str, torch.Tensor]  # full model state after the last epoch (last.safetensors)
    info: dict = field(default_factory=dict)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def lr_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup_steps:
            return 0.01 + 0.99 * step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def freeze_norm_stats(model: nn.Module) -> None:
    """Batch-norm layers keep their running statistics (``--freeze-bn``): small batches of one task
    would otherwise overwrite what pretraining measured on millions of images."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
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


def schedule_epochs(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs to run: ``cfg.epochs``, or more when that many epochs are fewer than ``min_steps``
    optimiser steps (tiny data: an epoch of 44 clips is 3 steps)."""
    need = math.ceil(cfg.min_steps / max(1, steps_per_epoch)) if cfg.min_steps else 0
    return max(int(cfg.epochs), need)


def epoch_text(row: dict) -> str:
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


class Fitter:
    """Optimiser, schedule, the one optimiser step, early stopping, checkpoint choice and resume.

    With ``ckpt`` it writes a resumable checkpoint at the end of every epoch (weights, best
    weights, EMA weights, optimiser, scheduler, gradient scaler, random generators, history,
    early-stopping state) and, when ``ckpt.loaded`` holds one, continues from it. Every random
    stream of an epoch is either restored from the checkpoint (the epoch-order generator, torch's
    global generator for dropout) or derived from (seed, epoch, draw) (decoded clip offsets, crops
    and corruptions in :class:`~vidtune.runs.features.ClipDataset`), so the continuation is
    bit-identical.
    """

    def __init__(self, cfg: TrainConfig, params: list[dict], steps_per_epoch: int, progress: Progress,
                 ckpt: Checkpointing | None = None, scaler: torch.amp.GradScaler | None = None):
        self.cfg = cfg
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.epochs = schedule_epochs(cfg, steps_per_epoch)
        total = steps_per_epoch * self.epochs
        warm = int(round(steps_per_epoch * min(cfg.warmup_epochs, self.epochs / 4)))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(total, warm))
        self.scaler = scaler or torch.amp.GradScaler("cuda", enabled=False)
        self.progress = progress
        self.ckpt = ckpt
        self.epoch = 0
        self.steps = 0  # optimiser steps taken
        self._micro = 0  # backward passes since the last optimiser step
        self._kill_after = int(os.environ.get(KILL_ENV) or 0)
        self.ema: dict[str, torch.Tensor] | None = None  # select=ema: moving average of the weights
        self._module: nn.Module | None = None

    # --- one optimiser step ----------------------------------------------------------------------
    def start_epoch(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._micro = 0
        self._seen = [0.0, 0, 0, 0]  # loss sum, right, clips, clips scored (for the epoch's numbers)

    def learn(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, task: Task,
              grad_scale: float = 1.0, count: bool = True) -> None:
        """:meth:`backward` on a batch's loss, and count it into the epoch's loss and top-1.

        ``grad_scale`` weights the gradient (DDP: this rank's share of the global batch); ``count=False``
        leaves the batch out of the epoch's numbers (a zero-weight pass that keeps ranks in step)."""
        self.backward(loss if grad_scale == 1.0 else loss * grad_scale)
        if not count:
            return
        right, counted = task.hits(logits, y)
        self._seen[0] += loss.item() * len(y)
        self._seen[1] += right
        self._seen[2] += len(y)
        self._seen[3] += counted

    def epoch_stats(self) -> tuple[float, float]:
        """(mean training loss, training top-1) of the batches :meth:`learn` saw this epoch."""
        total, right, seen, scored = self._seen
        return total / max(seen, 1), right / max(scored, 1)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``loss``'s gradients; every ``accumulate``-th call takes an optimiser step."""
        self.scaler.scale(loss / self.cfg.accumulate).backward()
        self._micro += 1
        if self._micro % self.cfg.accumulate == 0:
            self.optimiser_step()

    def end_epoch(self) -> None:
        """A partial accumulation at the end of an epoch still counts."""
        if self._micro % self.cfg.accumulate:
            self.optimiser_step()
        self._micro = 0

    def optimiser_step(self) -> None:
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps += 1
        if self.ema is not None:
            self._update_ema()
        if self._kill_after and self.epoch == self._kill_after + 1:
            log.warning("%s=%d: killing the process mid-epoch", KILL_ENV, self._kill_after)
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

    # --- weight averaging --------------------------------------------------------------------------
    def _update_ema(self) -> None:
        # warm-up of the decay (as timm's ModelEmaV3): early steps follow the weights closely
        decay = min(self.cfg.ema, (1 + self.steps) / (10 + self.steps))
        with torch.no_grad():
            for k, v in self._module.state_dict().items():
                if v.dtype.is_floating_point:
                    self.ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    self.ema[k].copy_(v)

    def _swap_ema(self) -> dict[str, torch.Tensor] | None:
        """Put the averaged weights into the module; returns the live ones to put back."""
        if self.ema is None:
            return None
        live = {k: v.detach().clone() for k, v in self._module.state_dict().items()}
        self._module.load_state_dict(self.ema)
        return live

    # --- the loop ------------------------------------------------------------------------------------
    def run(self, strategy: Strategy, task: Task, gen: torch.Generator) -> tuple[list[dict], dict, int]:
        """Train ``strategy`` for the scheduled epochs; returns (history, best weights, best epoch).

        The weights kept are the module's (with ``ema``: the moving average's) at the epoch with
        the best validation key: mean class accuracy / mAP then loss (``accuracy``), or the lowest
        smoothed validation loss (``loss``, steadier on a validation set of a few clips); or at the
        last epoch (``last``; validation then only drives early stopping).
        """
        cfg = self.cfg
        module = self._module = strategy.module
        if cfg.ema > 0:
            self.ema = {k: v.detach().clone() for k, v in module.state_dict().items()}
        snapshot = lambda: {k: v.detach().clone() for k, v in module.state_dict().items()}  # noqa: E731
        history, best, best_key, best_epoch, stale, smooth = [], snapshot(), None, 0, 0, None
        if self.ckpt is not None and self.ckpt.loaded is not None:
            history, best, best_key, best_epoch, stale, smooth = self._restore(module, snapshot, gen, strategy)
        start = len(history) + 1
        stop = self._should_stop(strategy.has_val, stale)  # a checkpoint written as early stopping fired
        with self.progress.task("training", total=self.epochs, unit="epochs") as bar:
            if start > 1:
                bar.advance(start - 1)
            for epoch in range(start, self.epochs + 1):
                if stop:
                    break
                self.epoch = epoch
                t0 = time.perf_counter()
                lr = self.opt.param_groups[0]["lr"]
                self.start_epoch()
                train_loss, train_top1 = strategy.train_epoch(epoch)
                if not math.isfinite(train_loss):  # nothing learnt from here on would mean anything
                    raise TrainingDivergedError(
                        f"training stopped at epoch {epoch}: the training loss became {train_loss} (not a finite "
                        "number). The starting weights (--weights, --init) or the features hold NaN/inf values, or "
                        "the learning rate is too high: check the weights file, or lower --lr")
                self.end_epoch()
                row = {"epoch": epoch, "train_loss": train_loss, "train_top1": train_top1,
                       **task.history_fields(None), "lr": lr}
                live = self._swap_ema()
                m = strategy.evaluate() if strategy.has_val else None  # metrics dict with "loss"
                if m is not None and m["n"]:
                    row.update(task.history_fields(m))
                    loss = m["loss"] if math.isfinite(m["loss"]) else float("inf")
                    smooth = loss if smooth is None else LOSS_SMOOTHING * loss + (1 - LOSS_SMOOTHING) * smooth
                    key = (-smooth,) if cfg.select == "loss" else task.key(m)
                    if best_key is None or key > best_key:
                        best_key, best, best_epoch, stale = key, snapshot(), epoch, 0
                    else:
                        stale += 1
                        if cfg.select == "last":
                            best, best_epoch = snapshot(), epoch
                else:
                    best, best_epoch = snapshot(), epoch
                if live is not None:
                    module.load_state_dict(live)
                row["seconds"] = time.perf_counter() - t0
                history.append(row)
                val = f", val top-1 {row['val_top1']:.1%}" if row["val_top1"] is not None else ""
                bar.update(description=f"epoch {epoch}/{self.epochs}: loss {train_loss:.3f}{val}")
                bar.advance(1)
                log.info(epoch_text(row))
                stop = self._should_stop(strategy.has_val, stale)
                if self.ckpt is not None and self.ckpt.write:
                    self._save(module, best, gen, strategy, history, best_key, best_epoch, stale, smooth)
                if stop:
                    log.info("early stopping after %d optimiser steps: no validation improvement for %d epochs",
                             self.steps, stale)
        return history, best, best_epoch

    def _should_stop(self, has_val: bool, stale: int) -> bool:
        return has_val and stale >= self.cfg.patience and self.steps >= self.cfg.min_steps

    # --- resumable checkpoints -------------------------------------------------------------------------
    def _save(self, module, best, gen, strategy, history, best_key, best_epoch, stale, smooth) -> None:
        from vidtune.train.resume import pack_optimizer, rng_tensors, save_state

        t0 = time.perf_counter()
        current = module.state_dict()
        tensors = {f"model/{k}": v for k, v in current.items()}
        best_is_model = best_epoch == len(history) and set(best) == set(current) and self.ema is None
        if not best_is_model:
            tensors.update({f"best/{k}": v for k, v in best.items()})
        if self.ema is not None:
            tensors.update({f"ema/{k}": v for k, v in self.ema.items()})
        opt_tensors, opt_meta = pack_optimizer(self.opt)
        tensors.update(opt_tensors)
        tensors.update(rng_tensors(gen))
        scaler = self.scaler
        state = {
            "epoch": len(history), "history": history, "best_key": list(best_key) if best_key is not None else None,
            "best_epoch": best_epoch, "best_is_model": best_is_model, "stale": stale, "steps": self.steps,
            "smooth_loss": smooth, "optimizer": opt_meta, "scheduler": self.sched.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "extra": strategy.extra_state(),
            "fingerprint": self.ckpt.fingerprint, "device": self.ckpt.device,
        }
        save_state(self.ckpt.path, tensors, state)
        log.debug("checkpoint of epoch %d written in %.2fs", len(history), time.perf_counter() - t0)

    def _restore(self, module, snapshot, gen, strategy):
        from vidtune.train.resume import restore_rng, strip, unpack_optimizer

        tensors, state = self.ckpt.loaded
        try:
            module.load_state_dict(strip(tensors, "model/"))
            best = snapshot() if state["best_is_model"] else strip(tensors, "best/")
            if self.ema is not None:
                self.ema = strip(tensors, "ema/")
            unpack_optimizer(self.opt, tensors, state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            if self.scaler.is_enabled() and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            restore_rng(gen, tensors)
            if state.get("extra") is not None:
                strategy.load_extra_state(state["extra"])
            history = list(state["history"])
            best_key = tuple(state["best_key"]) if state["best_key"] is not None else None
            best_epoch, stale = int(state["best_epoch"]), int(state["stale"])
            self.steps = int(state.get("steps", 0))
            smooth = state.get("smooth_loss")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{self.ckpt.path} does not fit this run ({str(exc).splitlines()[0][:200]}); "
                                  "delete it to train from the first epoch") from None
        if state.get("device") != self.ckpt.device:
            log.warning("resuming a run checkpointed on %s on %s: the continuation is not bit-identical",
                        state.get("device"), self.ckpt.device)
        log.info("resuming after epoch %d of %d", len(history), self.epochs)
        return history, best, best_key, best_epoch, stale, smooth
