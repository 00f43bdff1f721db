"""What the labels mean: one class per clip (softmax) or a set of labels per clip (sigmoid).

:class:`Task` turns manifest rows into targets, computes the loss (with class balancing: a
weighted loss, or logit adjustment), the epoch order (class-balanced sampling), metrics and the
early-stopping key, so the training strategies never branch on the task themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidtune.data.manifest import VideoItem, is_multilabel, item_labels
from vidtune.errors import ConfigError, DatasetError
from vidtune.runs.metrics import classification_metrics, multilabel_metrics
from vidtune.train.config import TrainConfig


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


class Task:
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

    def balance_for(self, y: torch.Tensor, balance: str, device: torch.device) -> None:
        """Set up the training loss's class balancing for training targets ``y``.

        ``loss``: inverse-frequency class weights (multi-label: ``pos_weight``). ``logit_adjust``
        (single-label; Menon et al. 2021): the training loss sees ``logits + log(prior)``, so the
        model learns balanced scores without re-weighting clips, and predictions use the raw
        logits. ``sampler`` and ``none`` change nothing here (``sampler`` changes the epoch order).
        """
        self.train_weights = self.weights(y).to(device) if balance == "loss" else None
        self.log_prior = None
        if balance == "logit_adjust" and not self.multilabel:
            counts = torch.bincount(y, minlength=len(self.labels)).float().clamp(min=1)
            self.log_prior = (counts / counts.sum()).log().to(device)

    def set_reversal(self, partner: list[int] | None, flow: int = 0) -> None:
        """Time-reversal augmentation: ``partner[c]`` is the class a clip of ``c`` becomes when played
        backwards (-1: not paired). ``flow``: trailing optical-flow channels of the features, which
        reverse too (motion from frame t to t+1 becomes the opposite motion). Single-label only."""
        if partner is not None and self.multilabel:
            raise ConfigError("reverse_pairs", "is for single-label tasks")
        self.partner = torch.tensor(partner) if partner is not None else None
        self.flow = flow

    def time_reverse(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        """Play about half of the paired clips of a batch ``x (B, T, ...)`` backwards, relabelled."""
        partner = getattr(self, "partner", None)
        if partner is None:
            return x, y
        flip = torch.rand(len(y), generator=gen) < 0.5
        to = partner[y.cpu()]
        flip &= to >= 0
        if flip.any():
            x = x.clone()
            idx = flip.nonzero()[:, 0].to(x.device)
            x[idx] = x[idx].flip(1)
            if self.flow:  # flow row t described t -> t+1; backwards it is the opposite of row t+1's
                fl = x[idx][..., -self.flow :]
                rev = torch.zeros_like(fl)
                rev[:, :-1] = -fl[:, 1:]
                x[idx, ..., -self.flow :] = rev
            y = torch.where(flip.to(y.device), to.to(y.device), y)
        return x, y

    def train_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss training minimises (with the balancing set by :meth:`balance_for`)."""
        weights = getattr(self, "train_weights", None)
        prior = getattr(self, "log_prior", None)
        if prior is not None:
            logits = logits.float() + prior
        return self.loss(logits, y, weights)

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


def task_for(items: list[VideoItem], cfg: TrainConfig, data) -> Task:
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
            raise ConfigError("background", f"{cfg.background!r} is not a class of {data}; its classes are: "
                               f"{', '.join(labels[:20])}")
    return Task(multilabel, labels, cfg.background, cfg.label_smoothing)
