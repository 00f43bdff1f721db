"""The ``partial`` and ``full`` strategies: fine-tune (part of) the backbone with the head, decoding
fresh random frames every epoch."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from vidtune.data.manifest import VideoItem
from vidtune.data.transforms import Normalize
from vidtune.models.classifier import VideoClassifier
from vidtune.runs.decoding import ClipDataset, clip_loader
from vidtune.runs.device import amp_dtype, autocast
from vidtune.runs.features import Sampling, sampling_for
from vidtune.train.config import TrainConfig
from vidtune.train.fitter import Checkpointing, Fit, Fitter, freeze_norm_stats, full_state, param_groups
from vidtune.train.linear import robust_op
from vidtune.train.task import Task

log = logging.getLogger(__name__)


def backbone_param_groups(model: VideoClassifier, cfg: TrainConfig) -> list[dict]:
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
        groups += param_groups(nn.ModuleList(group), base * cfg.layer_decay ** depth, cfg.weight_decay)
    if cfg.strategy == "full":
        rest = [(name, p) for name, p in enc.named_parameters() if id(p) not in seen]
        if rest:
            holder = nn.Module()
            for i, (_, p) in enumerate(rest):
                p.requires_grad_(True)
                holder.register_parameter(f"p{i}", p)
            groups += param_groups(holder, base * cfg.layer_decay ** max(n - 1, 0), cfg.weight_decay)
    return groups


class EndToEndStrategy:
    """Clips decoded by worker processes every epoch (random offsets, crops, flips, corruptions
    seeded by (seed, epoch, draw)); a file that fails mid-training is skipped from then on."""

    def __init__(self, model, train_items, val_items, task: Task, cfg: TrainConfig, device: torch.device,
                 progress, ckpt: Checkpointing | None = None):
        self.model, self.task, self.cfg, self.device, self.progress, self.ckpt = (
            model, task, cfg, device, progress, ckpt)
        self.module = model
        enc = model.encoder
        ok, self.skipped = self._readable(train_items, val_items)
        task.require(ok["train"], self.skipped)
        self.ok = ok
        self.backbone_groups = backbone_param_groups(model, cfg)
        model.to(device)
        if device.type == "cuda":
            model.encoder.to(memory_format=torch.channels_last)
        from vidtune.train import distributed

        self.dist = distributed.current()  # torchrun: DDP over the ranks (vidtune.train.distributed)
        self.net = self.dist.wrap(model) if self.dist is not None else model
        if self.dist is not None:  # a resume must continue from the same epoch on every rank
            self.dist.check_same("the checkpoint to resume from",
                                 ckpt.loaded[1].get("epoch") if ckpt is not None and ckpt.loaded else None)
        self.norm = Normalize(enc.cfg).to(device)
        self.y_all = task.targets(ok["train"])
        task.balance_for(self.y_all, cfg.balance, device)
        task.set_reversal(cfg.reverse_map(task.labels))
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
        self.train_ds = ClipDataset(ok["train"], sampling_for(enc, cfg.frames, "random"), enc.cfg, augment=True,
                                    seed=cfg.seed, flip=cfg.flip,
                                    frame_op=robust_op(cfg) if cfg.augment == "robust" else None)
        self.val_ds = ClipDataset(ok["val"], sampling_for(enc, cfg.frames, "centre"), enc.cfg)
        self.has_val = bool(ok["val"])
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.failed: set[str] = set()
        self.fitter: Fitter | None = None

    def _readable(self, train_items, val_items) -> tuple[dict, list[dict]]:
        """A quick pass that decodes one frame of each video finds unreadable files before training."""
        skipped: list[dict] = []
        ok: dict[str, list] = {}
        for name, group in (("train", train_items), ("val", val_items)):
            ds = ClipDataset(group, Sampling(1, "centre"), self.model.encoder.cfg)
            good = []
            with self.progress.task(f"checking {name} videos", total=len(group)) as bar:
                for s in clip_loader(ds, self.cfg.workers):
                    if s["error"] is None:
                        good.append(group[s["index"]])
                    else:
                        skipped.append({"path": str(group[s["index"]].path), "reason": s["error"]})
                    bar.advance(1)
            ok[name] = sorted(good, key=VideoItem.sort_key)
        return ok, skipped

    def _batches(self, ds: ClipDataset, order):
        n = len(ds)
        keep = [int(i) for i in order if str(ds.items[int(i)].path) not in self.failed]
        draws = [pos * n + i for pos, i in enumerate(keep)]  # repeats of one clip get fresh augmentation
        for batch in clip_loader(ds, self.cfg.workers, batch_size=self.cfg.batch_size, order=draws,
                                 pin_memory=self.device.type == "cuda"):
            good = []
            for s in batch:
                it = ds.items[s["index"]]
                if s["error"] is not None:
                    if str(it.path) not in self.failed:
                        self.failed.add(str(it.path))
                        self.skipped.append({"path": str(it.path), "reason": s["error"]})
                        log.warning("skipping %s: %s", it.path, s["error"])
                    continue
                good.append((s["frames"], self.task.target(it)))
            if good:
                x = torch.stack([f for f, _ in good]).to(self.device, non_blocking=True)  # (B, T, S, S, 3) uint8
                yield self.norm(x), torch.tensor([y for _, y in good], device=self.device)  # (B,) or (B, K)

    # --- the Strategy interface -------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        if self.dist is not None:
            from vidtune.train.distributed import train_epoch

            return train_epoch(self, epoch)
        model, task = self.model, self.task
        self.train_ds.epoch = epoch
        model.train()
        if self.cfg.freeze_bn:
            freeze_norm_stats(model.encoder)
        for x, y in self._batches(self.train_ds, task.epoch_order(self.y_all, self.cfg.balance, self.gen)):
            x, y = task.time_reverse(x, y, self.gen)
            with autocast(self.device):
                logits = model(x)
                loss = task.train_loss(logits.float(), y)
            self.fitter.learn(loss, logits, y, task)
        return self.fitter.epoch_stats()

    @torch.no_grad()
    def predict_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dist is not None:
            from vidtune.train.distributed import predict_all

            return predict_all(self)
        self.model.eval()
        outs, ys = [], []
        for x, y in self._batches(self.val_ds, range(len(self.val_ds))):
            with autocast(self.device):
                outs.append(self.model(x).float().cpu())
            ys.append(y.cpu())
        if not outs:  # every validation clip failed to decode
            return self.task.empty()
        return torch.cat(outs), torch.cat(ys)

    def evaluate(self) -> dict:
        logits, y = self.predict_all()
        loss = float(self.task.loss(logits, y)) if len(y) else float("nan")
        return {**self.task.metrics(logits, y), "loss": loss}

    def extra_state(self) -> dict:  # files that failed to decode mid-training stay skipped after a resume
        return {"failed": sorted(self.failed), "skipped": self.skipped}

    def load_extra_state(self, state: dict) -> None:
        self.failed.clear()
        self.failed.update(state["failed"])
        self.skipped[:] = state["skipped"]

    # --- run -----------------------------------------------------------------------------------------
    def fit(self) -> Fit:
        cfg, model = self.cfg, self.model
        params = param_groups(model.head, cfg.lr, cfg.weight_decay) + self.backbone_groups
        steps = math.ceil(math.ceil(len(self.ok["train"]) / cfg.batch_size) / cfg.accumulate)
        self.fitter = Fitter(cfg, params, steps, self.progress, self.ckpt, scaler=self.scaler)
        torch.manual_seed(cfg.seed)
        history, best, best_epoch = self.fitter.run(self, self.task, self.gen)
        last_state = full_state(model)
        model.load_state_dict(best)
        val_logits, val_y = self.predict_all() if self.ok["val"] else (None, None)
        model.encoder.invalidate_fingerprint()
        model.to("cpu")
        used = {"train": [it for it in self.ok["train"] if str(it.path) not in self.failed],
                "val": [it for it in self.ok["val"] if str(it.path) not in self.failed]}
        train_fit = {"n": len(used["train"]), "top1": history[best_epoch - 1]["train_top1"] if best_epoch else None}
        return Fit(history, best_epoch, val_logits, val_y, train_fit, self.skipped, used, last_state,
                   info={"steps": self.fitter.steps})
