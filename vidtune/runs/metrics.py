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


# -- multi-label ----------------------------------------------------------------------------------
def average_precision(scores: torch.Tensor, target: torch.Tensor) -> float:
    """Area under the precision-recall curve of one class, as scikit-learn's ``average_precision_score``.

    ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, highest first (tied scores
    enter together). Without ties this is the mean precision at the rank of each positive.
    NaN when ``target`` has no positive.
    """
    target = target.bool().reshape(-1)
    n_pos = int(target.sum())
    if n_pos == 0:
        return float("nan")
    s = scores.double().reshape(-1)
    order = torch.argsort(s, descending=True, stable=True)
    s, hits = s[order], target[order].double()
    tp = torch.cumsum(hits, 0)
    last = torch.ones(len(s), dtype=torch.bool)  # last position of each run of tied scores
    last[:-1] = s[1:] != s[:-1]
    tp, seen = tp[last], torch.arange(1, len(s) + 1, dtype=torch.float64)[last]
    precision, recall = tp / seen, tp / n_pos
    prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - prev) * precision).sum())


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def best_f1_threshold(probs: torch.Tensor, target: torch.Tensor, default: float = 0.5) -> tuple[float, float]:
    """The probability threshold (predict ``score >= t``) that maximises F1 on these examples.

    Candidates lie between consecutive distinct scores (and at the lowest one), so the boundary
    never sits on an example; ties go to the candidate nearest ``default``. A class with no
    positive here keeps ``default``. Returns ``(threshold, F1)``.
    """
    target = target.bool().reshape(-1)
    n_pos = int(target.sum())
    if n_pos == 0:
        return default, 0.0
    s = probs.double().reshape(-1)
    order = torch.argsort(s, descending=True, stable=True)
    s, hits = s[order], target[order].double()
    tp = torch.cumsum(hits, 0)
    last = torch.ones(len(s), dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    idx = torch.nonzero(last).reshape(-1)  # predicting the first idx+1 examples positive
    tp_at = tp[idx]
    predicted = (idx + 1).double()
    f1 = 2 * tp_at / (predicted + n_pos)
    nxt = s[(idx + 1).clamp(max=len(s) - 1)]  # the next lower score (the lowest one itself at the end)
    thresholds = (s[idx] + nxt) / 2
    best = f1.max()
    cand = torch.nonzero(f1 >= best - 1e-12).reshape(-1)
    pick = cand[torch.argmin((thresholds[cand] - default).abs())]
    return float(thresholds[pick]), float(best)


def tune_thresholds(probs: torch.Tensor, targets: torch.Tensor, default: float = 0.5) -> list[float]:
    """Per-class F1-maximising thresholds on ``probs`` ``(N, K)`` (``default`` without positives)."""
    return [best_f1_threshold(probs[:, j], targets[:, j], default)[0] for j in range(targets.shape[1])]


def multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor, labels: list[str],
                       thresholds: list[float] | None = None) -> dict:
    """mAP, per-class AP, F1 (micro and macro) at ``thresholds`` (default 0.5) on sigmoid scores.

    ``targets``: multi-hot ``(N, K)``. mAP and macro F1 average the classes with at least one
    positive in ``targets`` (AP is undefined without one). ``top1``: share of the clips with a
    positive label whose highest-scoring label is one of them; ``exact_match``: clips whose
    predicted label set is exactly right.
    """
    k = len(labels)
    n = int(targets.shape[0])
    thresholds = [0.5] * k if thresholds is None else [float(t) for t in thresholds]
    out: dict = {"n": n, "mAP": None, "per_class_ap": {}, "f1_micro": None, "f1_macro": None,
                 "precision_micro": None, "recall_micro": None, "top1": None, "exact_match": None,
                 "per_class": {}, "thresholds": dict(zip(labels, thresholds))}
    if n == 0:
        return out
    probs = torch.sigmoid(logits.float())
    t = targets.bool()
    pred = probs >= torch.tensor(thresholds)[None, :]
    aps, f1s = [], []
    for j, lab in enumerate(labels):
        pos = int(t[:, j].sum())
        tp = int((pred[:, j] & t[:, j]).sum())
        fp = int((pred[:, j] & ~t[:, j]).sum())
        p, r, f1 = _prf(tp, fp, pos - tp)
        ap = average_precision(probs[:, j], t[:, j]) if pos else None
        if pos:
            aps.append(ap)
            f1s.append(f1)
        out["per_class_ap"][lab] = ap
        out["per_class"][lab] = {"ap": ap, "f1": f1 if pos else None, "precision": p, "recall": r if pos else None,
                                 "threshold": thresholds[j], "n": pos}
    tp, fp = int((pred & t).sum()), int((pred & ~t).sum())
    fn = int((~pred & t).sum())
    p, r, f1 = _prf(tp, fp, fn)
    has = t.any(dim=1)
    top = probs.argmax(dim=1)
    out.update(
        mAP=sum(aps) / len(aps) if aps else None,
        f1_micro=f1, f1_macro=sum(f1s) / len(f1s) if f1s else None, precision_micro=p, recall_micro=r,
        top1=float(t[has.nonzero()[:, 0], top[has]].float().mean()) if has.any() else None,
        exact_match=float((pred == t).all(dim=1).float().mean()),
    )
    return out
