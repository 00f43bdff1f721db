"""The ``linear`` strategy: a frozen backbone whose features are extracted once (cached on disk),
then a temporal head trained on tensors, seconds per epoch."""

from __future__ import annotations

import contextlib
import logging
import math

import torch

from vidtune.runs.features import FeatureCache, extract_features, sampling_for
from vidtune.train.config import AUGMENT_SEVERITIES, TrainConfig
from vidtune.train.fitter import Checkpointing, Fit, Fitter, full_state, param_groups
from vidtune.train.task import Task
from vidtune.utils import stable_int

log = logging.getLogger(__name__)


def robust_op(cfg: TrainConfig, copy: int | None = None):
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


def corrupted_views(encoder, items, cfg: TrainConfig, device, cache, progress,
                    flow: bool = False) -> list[dict[int, torch.Tensor]]:
    """``--augment robust``: features of ``augment_views`` corrupted copies of the training grid
    (cached under their own keys). A clip whose corrupted copy fails keeps its clean features."""
    if cfg.augment != "robust":
        return []
    sampling = sampling_for(encoder, cfg.frames, "grid", cfg.views, flow=flow)
    views = []
    for a in range(cfg.augment_views):
        feats, failed = extract_features(encoder, items, sampling, device=device, cache=cache, workers=cfg.workers,
                                         progress=progress, frame_op=robust_op(cfg, a),
                                         description=f"corrupted train features {a + 1}/{cfg.augment_views}")
        for f in failed:
            log.warning("corrupted copy %d of %s failed (%s); using its clean features there", a + 1, f["path"],
                        f["reason"])
        views.append(feats)
    return views


def stack_views(feats: dict[int, torch.Tensor], idx: list[int], aug: list[dict[int, torch.Tensor]]) -> torch.Tensor:
    """Features ``(N, T, V * sets, ...)`` of the clips ``idx`` in one preallocated CPU tensor: each clip's
    ``V`` clean views, then its corrupted copies (``aug[a]`` keyed by position in ``idx``; a clip whose
    copy failed repeats its clean views). Takes the clean features out of ``feats``.

    10,000 clips x 8 frames x 3 views x 1280 floats is ~1 GB per 1,000 clips: batches move to the
    device as they are used."""
    first = feats[idx[0]]
    v, sets = first.shape[1], 1 + len(aug)
    x = torch.empty((len(idx), first.shape[0], v * sets, *first.shape[2:]), dtype=first.dtype)  # (N, T, V * sets, D)
    for j, i in enumerate(idx):
        x[j, :, :v] = feats.pop(i)
        for a, copy in enumerate(aug, start=1):
            x[j, :, a * v : (a + 1) * v] = copy.get(j, x[j, :, :v])
    return x


@contextlib.contextmanager
def small_op_threads(device: torch.device):
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


class LinearStrategy:
    """Features ``(N, T, V * sets, ...)`` in one preallocated CPU tensor; each epoch draws, per clip
    and segment, one of the ``V`` cached temporal offsets (TSN's random offset, quantised) and, with
    ``--augment robust``, per clip the clean views or one corrupted copy."""

    def __init__(self, model, train_items, val_items, task: Task, cfg: TrainConfig, device: torch.device,
                 cache: FeatureCache | None, progress, ckpt: Checkpointing | None = None):
        self.model, self.task, self.cfg, self.device, self.progress = model, task, cfg, device, progress
        self.module = model.head
        self.scaler = None
        self.ckpt = ckpt
        encoder = model.encoder
        common = dict(device=device, cache=cache, workers=cfg.workers, progress=progress)
        flow = model.head.flow > 0
        tr_feats, tr_skip = extract_features(encoder, train_items,
                                             sampling_for(encoder, cfg.frames, "grid", cfg.views, flow=flow),
                                             description="train features", **common)
        va_feats, va_skip = extract_features(encoder, val_items, sampling_for(encoder, cfg.frames, "centre", flow=flow),
                                             description="val features", grid_views=cfg.views,
                                             **common) if val_items else ({}, [])
        self.skipped = tr_skip + va_skip
        self.x_va_fp32 = None  # --int8: the validation clips' fp32 features too, for the accuracy change
        from vidtune.engines.runtime import default_int8

        if default_int8() and va_feats:
            va32, _ = extract_features(encoder, val_items, sampling_for(encoder, cfg.frames, "centre", flow=flow),
                                       description="val features (fp32, for the int8 check)", int8=False, **common)
            va_feats = {i: f for i, f in va_feats.items() if i in va32}
            self.x_va_fp32 = torch.stack([va32[i][:, 0] for i in sorted(va_feats)])
        tr_idx, va_idx = sorted(tr_feats), sorted(va_feats)
        self.used = {"train": [train_items[i] for i in tr_idx], "val": [val_items[i] for i in va_idx]}
        task.require(self.used["train"], self.skipped)
        aug = corrupted_views(encoder, self.used["train"], cfg, device, cache, progress, flow=flow)
        views = tr_feats[tr_idx[0]].shape[1]
        x_tr = stack_views(tr_feats, tr_idx, aug)
        x_va = torch.stack([va_feats[i][:, 0] for i in va_idx]) if va_idx else None  # (M, T, D)
        y_va = task.targets(self.used["val"]) if va_idx else None
        if model.audio is not None:  # a fused run: each segment's sound rides along with its frame features
            from vidtune.runs.sound import with_sound

            x_tr, x_va = with_sound(model.audio, self.used, cfg.frames, x_tr, x_va, cache, progress)
            if self.x_va_fp32 is not None:
                _, self.x_va_fp32 = with_sound(model.audio, {"train": [], "val": self.used["val"]}, cfg.frames,
                                               x_tr[:0], self.x_va_fp32, cache)
        self.adopt(x_tr, task.targets(self.used["train"]), x_va, y_va, views)

    @classmethod
    def from_tensors(cls, model, task: Task, cfg: TrainConfig, device: torch.device, progress, x_tr: torch.Tensor,
                     y_tr: torch.Tensor, x_va: torch.Tensor | None, y_va: torch.Tensor | None, views: int,
                     used: dict | None = None, skipped: list[dict] | None = None) -> LinearStrategy:
        """A strategy over features already in memory (``x_tr`` ``(N, T, views * sets, ...)``, ``x_va``
        ``(M, T, ...)`` or None): heads compared on one extraction (``--temporal auto``), heads trained
        on labelled plus pseudo-labelled clips (``--unlabeled``)."""
        self = cls.__new__(cls)
        self.model, self.task, self.cfg, self.device, self.progress = model, task, cfg, device, progress
        self.module = model.head
        self.scaler = None
        self.ckpt = None
        self.skipped = list(skipped or [])
        self.x_va_fp32 = None
        self.used = used if used is not None else {"train": [], "val": []}
        self.adopt(x_tr, y_tr, x_va, y_va, views)
        return self

    def adopt(self, x_tr: torch.Tensor, y_tr: torch.Tensor, x_va: torch.Tensor | None, y_va: torch.Tensor | None,
              views: int) -> None:
        """Train on ``x_tr`` ``(N, T, views * sets, ...)`` with targets ``y_tr`` and validate on ``x_va``
        (class balancing, time reversal and the epoch generator set up afresh)."""
        task, cfg = self.task, self.cfg
        self.v = views
        self.sets = x_tr.shape[2] // views
        self.x_tr, self.y_tr = x_tr, y_tr
        self.x_va, self.y_va = x_va, y_va
        self.has_val = x_va is not None
        task.balance_for(y_tr, cfg.balance, self.device)
        task.set_reversal(cfg.reverse_map(task.labels), flow=self.model.head.flow)
        self.tok = x_tr.shape[3:]  # (D,) or (G, D) for space-time tokens
        self.x_flat = x_tr.view(x_tr.shape[0], x_tr.shape[1], x_tr.shape[2], -1)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.fitter: Fitter | None = None

    # --- the Strategy interface -------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        head, task, cfg, gen = self.module, self.task, self.cfg, self.gen
        head.train()
        n, t = self.x_tr.shape[:2]
        d = self.x_flat.shape[-1]
        order = task.epoch_order(self.y_tr, cfg.balance, gen)
        # a random cached offset per segment, drawn per position so repeated draws differ too
        view = torch.randint(self.v, (len(order), t), generator=gen)
        if self.sets > 1:  # --augment robust: per clip, the clean views or one corrupted copy, uniformly
            view += self.v * torch.randint(self.sets, (len(order), 1), generator=gen)
        for s in range(0, len(order), cfg.batch_size):
            b = order[s : s + cfg.batch_size]
            x = self.x_flat[b].gather(2, view[s : s + len(b), :, None, None].expand(-1, -1, 1, d))[:, :, 0]
            x = x.view(len(b), t, *self.tok)
            x, y = task.time_reverse(x, self.y_tr[b], gen)
            x, y = x.to(self.device), y.to(self.device)
            logits = head(x)
            self.fitter.learn(task.train_loss(logits, y), logits, y, task)
        return self.fitter.epoch_stats()

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.module.eval()
        logits = self.module(self.x_va.to(self.device)).cpu()
        return {**self.task.metrics(logits, self.y_va), "loss": float(self.task.loss(logits, self.y_va))}

    def extra_state(self) -> None:
        return None

    def load_extra_state(self, state: dict) -> None:
        pass

    # --- run -----------------------------------------------------------------------------------------
    def fit(self) -> Fit:
        cfg, head, device = self.cfg, self.module, self.device
        head.to(device)
        steps = math.ceil(len(self.y_tr) / cfg.batch_size)
        self.fitter = Fitter(cfg, param_groups(head, cfg.lr, cfg.weight_decay), steps, self.progress, self.ckpt)
        torch.manual_seed(cfg.seed)  # dropout masks: identical whether features came from the cache or not
        with small_op_threads(device):
            history, best, best_epoch = self.fitter.run(self, self.task, self.gen)
        last_state = full_state(self.model)
        head.load_state_dict(best)
        head.eval()
        n = self.x_tr.shape[0]
        with torch.no_grad():
            tr_logits = torch.cat([head(self.x_tr[s : s + 256, :, self.v // 2].to(device)).cpu()
                                   for s in range(0, n, 256)])
            right, counted = self.task.hits(tr_logits, self.y_tr)
            train_fit = {"n": int(n), "top1": right / counted if counted else None}
            val_logits = head(self.x_va.to(device)).cpu() if self.x_va is not None else None
            info = {"steps": self.fitter.steps}
            if self.x_va_fp32 is not None:
                info["int8"] = int8_check(self.task, val_logits, head(self.x_va_fp32.to(device)).cpu(), self.y_va)
        self.model.to("cpu")
        return Fit(history, best_epoch, val_logits, self.y_va, train_fit, self.skipped, self.used, last_state,
                   info=info)


def int8_check(task: Task, int8_logits: torch.Tensor, fp32_logits: torch.Tensor, y: torch.Tensor) -> dict:
    """The accuracy change int8 features cost on validation: the trained head on the int8 engine's
    features against the same head on fp32 features of the same clips, with the bound of
    :data:`vidtune.engines.int8.DEFAULT_BOUND` (a loss beyond it is warned about)."""
    from vidtune.engines.int8 import DEFAULT_BOUND

    metric = "mAP" if task.multilabel else "top1"
    q, ref = task.metrics(int8_logits, y)[metric], task.metrics(fp32_logits, y)[metric]
    delta = None if q is None or ref is None else q - ref  # None: no label with a positive to score
    report = {"metric": metric, "fp32": ref, "int8": q, "delta": delta, "bound": DEFAULT_BOUND,
              "within_bound": None if delta is None else bool(delta >= -DEFAULT_BOUND), "validation_clips": int(len(y)),
              "top1_agreement_with_fp32": float((int8_logits.argmax(-1) == fp32_logits.argmax(-1)).float().mean())}
    if report["within_bound"] is False:
        log.warning("int8 costs %.1f points of validation %s (%.1f%% -> %.1f%% on %d clips), more than the %.1f-point "
                    "bound: use fp32 for this run (drop --int8)", -delta * 100, metric, ref * 100, q * 100, len(y),
                    DEFAULT_BOUND * 100)
    return report
