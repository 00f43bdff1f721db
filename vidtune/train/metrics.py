"""Classification metrics on logits/labels tensors."""

from __future__ import annotations

import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(K, K)``: rows are true classes, columns predicted classes."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, labels: list[str]) -> dict:
    """top1, top5 (more than 5 classes), mean class accuracy, per-class accuracy and the confusion matrix.

    Mean class accuracy averages the recall of the classes present in ``target``, so a small class
    counts as much as a large one (what imbalanced datasets need next to top-1).
    """
    k = len(labels)
    n = int(target.numel())
    if n == 0:
        return {"n": 0, "top1": None, "mean_class_accuracy": None, "per_class": {}, "confusion": [[0] * k for _ in range(k)]}
    pred = logits.argmax(dim=1)
    cm = confusion_matrix(pred, target, k)
    support = cm.sum(dim=1)
    recall = torch.where(support > 0, cm.diag().float() / support.clamp(min=1), torch.nan)
    present = support > 0
    out = {
        "n": n,
        "top1": float((pred == target).float().mean()),
        "mean_class_accuracy": float(recall[present].mean()),
        "per_class": {labels[i]: {"accuracy": float(recall[i]), "n": int(support[i])} for i in range(k) if present[i]},
        "confusion": cm.tolist(),
    }
    if k > 5:
        top5 = logits.topk(5, dim=1).indices
        out["top5"] = float((top5 == target[:, None]).any(dim=1).float().mean())
    return out
