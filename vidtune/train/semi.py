"""``--unlabeled POOL``: semi-supervised training of the head on cached features.

The head is first trained on the labelled clips alone (the baseline). Then the unlabelled pool's
features are extracted like training features (cached; with ``--augment robust`` also their
corrupted copies) and labelled in two ways, each training a fresh head on labelled plus
pseudo-labelled clips:

* ``pseudo`` (self-training with consistency, as FixMatch does with augmentations): a pool clip gets
  the head's label when the head gives the same class on its clean view and on every corrupted copy
  and the mean probability is at least :data:`PSEUDO_THRESHOLD`; :data:`ROUNDS` rounds, each
  labelling the pool with the head of the previous one;
* ``propagate`` (label spreading, Zhou et al. 2004, scikit-learn's ``LabelSpreading``): labels flow
  from the labelled clips over a k-nearest-neighbour graph of the baseline head's clip embeddings
  (what its classifier reads), and a pool clip is taken where the spread distribution gives one
  class at least :data:`PROPAGATE_THRESHOLD`.

Every candidate is scored on the labelled validation clips, which never enter the pool; the pool
is kept only when a candidate beats the baseline there (mean class accuracy, then validation loss).
Otherwise the baseline head is the run's: a pool that would make the head worse is rejected.
``metrics.json`` records which was kept and the validation scores of each.
"""

from __future__ import annotations

import logging
import os

import torch

from vidtune.data.manifest import VideoItem
from vidtune.data.pool import load_pool
from vidtune.errors import ConfigError, DatasetError
from vidtune.runs.features import extract_features, sampling_for
from vidtune.train.fitter import Fit
from vidtune.train.linear import LinearStrategy, corrupted_views, stack_views

log = logging.getLogger(__name__)

PSEUDO_THRESHOLD = 0.7  # mean probability over the clean and corrupted views
PROPAGATE_THRESHOLD = 0.7  # share of the spread label mass on one class
ROUNDS = 2  # self-training rounds
NEIGHBOURS = 7  # label spreading: the k of the k-nearest-neighbour graph
SPREAD_ALPHA = 0.2  # label spreading: how much a labelled clip's label may change


def check_pool_config(task, has_val: bool) -> None:
    if task.multilabel:
        raise ConfigError("unlabeled", "is for single-label tasks (one class per clip)")
    if not has_val:
        raise ConfigError("unlabeled", "needs labelled validation clips to check that the pool helps: give the "
                                       "manifest val rows (a split column) or keep --val-split above 0")


def pool_items(source, used: dict[str, list[VideoItem]]) -> tuple[list[VideoItem], int]:
    """The pool's clips, without any file that is a labelled training or validation clip (validation
    must stay unseen; a labelled clip needs no pseudo-label). Returns (clips, number left out)."""
    items = load_pool(source)
    labelled = {os.path.realpath(it.path) for split in ("train", "val") for it in used.get(split, [])}
    kept = [it for it in items if os.path.realpath(it.path) not in labelled]
    if not items:
        raise DatasetError(f"{source}: the unlabelled pool holds no clips")
    return kept, len(items) - len(kept)


def pool_features(strategy: LinearStrategy, items: list[VideoItem], cache, progress):
    """``(x (N, T, V * sets, ...), clips used, skipped)``: the pool's features as the training clips'."""
    cfg, encoder, device = strategy.cfg, strategy.model.encoder, strategy.device
    flow = strategy.model.head.flow > 0
    feats, skipped = extract_features(encoder, items, sampling_for(encoder, cfg.frames, "grid", cfg.views, flow=flow),
                                      device=device, cache=cache, workers=cfg.workers, progress=progress,
                                      description="unlabelled pool features")
    idx = sorted(feats)
    used = [items[i] for i in idx]
    if not used:
        return None, used, skipped
    aug = corrupted_views(encoder, used, cfg, device, cache, progress, flow=flow)
    return stack_views(feats, idx, aug), used, skipped


@torch.no_grad()
def view_probs(head, x: torch.Tensor, views: int, sets: int, device) -> torch.Tensor:
    """Softmax ``(sets, N, K)``: each clip's centre view, clean and in every corrupted copy."""
    head.eval().to(device)
    out = []
    for s in range(sets):
        col = x[:, :, s * views + views // 2]
        out.append(torch.cat([head(col[i : i + 256].to(device)).float().softmax(-1).cpu()
                              for i in range(0, len(col), 256)]))
    return torch.stack(out)


def pseudo_labels(head, x: torch.Tensor, views: int, sets: int, device,
                  threshold: float = PSEUDO_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labels (N,), chosen (N,) bool)``: confident and the same class on every view."""
    p = view_probs(head, x, views, sets, device)  # (S, N, K)
    label = p[0].argmax(-1)
    agree = (p.argmax(-1) == label[None]).all(0)
    conf = p.mean(0).gather(1, label[:, None])[:, 0]
    return label, agree & (conf >= threshold)


@torch.no_grad()
def embeddings(head, x: torch.Tensor, views: int, device) -> torch.Tensor:
    """The head's clip embeddings (what its classifier reads) of the clean centre views."""
    head.eval().to(device)
    col = x[:, :, views // 2]
    return torch.cat([head.pool(col[i : i + 256].to(device)).float().cpu() for i in range(0, len(col), 256)])


def propagated_labels(z_lab: torch.Tensor, y_lab: torch.Tensor, z_pool: torch.Tensor, num_classes: int,
                      threshold: float = PROPAGATE_THRESHOLD, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Label spreading over a kNN graph of standardised embeddings: ``(labels, chosen)`` for the pool."""
    import numpy as np
    from sklearn.semi_supervised import LabelSpreading

    z = torch.cat([z_lab, z_pool]).numpy().astype(np.float64)
    z = (z - z.mean(0)) / (z.std(0) + 1e-6)
    y = np.concatenate([y_lab.numpy(), -np.ones(len(z_pool), dtype=np.int64)])
    k = max(1, min(NEIGHBOURS, len(z) - 1))
    model = LabelSpreading(kernel="knn", n_neighbors=k, alpha=SPREAD_ALPHA, max_iter=200)
    model.fit(z, y)
    dist = torch.from_numpy(np.asarray(model.label_distributions_[len(z_lab):], dtype=np.float64))
    classes = torch.as_tensor(model.classes_)
    full = torch.zeros(len(z_pool), num_classes, dtype=torch.float64)
    full[:, classes] = dist
    full = torch.nan_to_num(full, nan=0.0)  # a pool clip the graph never reached
    conf, label = full.max(1)
    return label, conf >= threshold


def _state(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _val(task, fit: Fit) -> dict:
    m = task.metrics(fit.val_logits, fit.val_y)
    return {"mean_class_accuracy": m["mean_class_accuracy"], "top1": m["top1"], "loss": float(m["loss"])
            if "loss" in m else float(task.loss(fit.val_logits, fit.val_y))}


def fit_with_pool(strategy: LinearStrategy, source, cache, progress) -> tuple[Fit, dict]:
    """Train the baseline head, then the pool's candidates; the run keeps the best on validation."""
    task, module = strategy.task, strategy.module
    check_pool_config(task, strategy.has_val)
    init = _state(module)
    base = strategy.fit()
    items, dropped = pool_items(source, strategy.used)
    if dropped:
        log.info("--unlabeled: %d pool clip(s) are labelled clips of this run (or share their file); left out",
                 dropped)
    x_pool, used_pool, skipped = pool_features(strategy, items, cache, progress) if items else (None, [], [])
    if x_pool is None:
        log.warning("--unlabeled: no readable pool clip left; the head is trained on the labelled clips alone")
    fit, report = semi_fit(strategy, init, base, x_pool, used_pool)
    report.update(pool=len(items), pool_left_out=dropped, pool_skipped=len(skipped))
    return _with_skipped(fit, skipped), report


def semi_fit(strategy: LinearStrategy, init: dict, base: Fit, x_pool: torch.Tensor | None,
             used_pool: list[VideoItem]) -> tuple[Fit, dict]:
    """The pool's candidates on features in memory, after the baseline ``base`` (whose weights are in the
    strategy's head; ``init`` are the head's starting weights): ``(the kept fit, report)``."""
    task, cfg, module = strategy.task, strategy.cfg, strategy.module
    base_state = _state(module)
    base_val = _val(task, base)
    report = {"kept": "none", "baseline_val": base_val, "pool": len(used_pool), "candidates": {}}
    if x_pool is None:
        return base, report
    x_lab, y_lab, x_va, y_va, v, sets = strategy.x_tr, strategy.y_tr, strategy.x_va, strategy.y_va, strategy.v, \
        strategy.sets
    strategy.ckpt = None  # the candidates are retrained from scratch, never resumed
    methods = ("pseudo", "propagate") if cfg.semi == "auto" else (cfg.semi,)
    results = {}
    for method in methods:
        module.load_state_dict(base_state)
        fit, chosen, labels = None, None, None
        for _round in range(ROUNDS if method == "pseudo" else 1):
            if method == "pseudo":
                lab, pick = pseudo_labels(module, x_pool, v, sets, strategy.device)
            else:
                z_lab = embeddings(module, x_lab, v, strategy.device)
                z_pool = embeddings(module, x_pool, v, strategy.device)
                lab, pick = propagated_labels(z_lab, y_lab, z_pool, len(task.labels), seed=cfg.seed)
            if not pick.any():
                break
            labels, chosen = lab, pick
            module.load_state_dict(init)
            strategy.adopt(torch.cat([x_lab, x_pool[chosen]]), torch.cat([y_lab, labels[chosen]]), x_va, y_va, v)
            fit = strategy.fit()
        n = int(chosen.sum()) if chosen is not None else 0
        if fit is None:
            report["candidates"][method] = {"pseudo_labelled": 0, "val": None}
            log.info("--unlabeled %s: no pool clip was labelled confidently enough", method)
            continue
        val = _val(task, fit)
        per_class = torch.bincount(labels[chosen], minlength=len(task.labels)).tolist()
        report["candidates"][method] = {"pseudo_labelled": n, "per_class": dict(zip(task.labels, per_class)),
                                        "val": val}
        picked = [it for it, c in zip(used_pool, chosen.tolist()) if c]
        results[method] = (fit, _state(module), [VideoItem(path=it.path, label=task.labels[int(y)], start=it.start,
                                                           end=it.end, group=it.group)
                                                 for it, y in zip(picked, labels[chosen].tolist())])
        log.info("--unlabeled %s: %d pool clip(s) labelled, validation mean class accuracy %.3f (baseline %.3f)",
                 method, n, val["mean_class_accuracy"], base_val["mean_class_accuracy"])

    def key(val):
        return (val["mean_class_accuracy"], -val["loss"])

    best = max(results, key=lambda m: key(report["candidates"][m]["val"]), default=None)
    if best is not None and key(report["candidates"][best]["val"]) > key(base_val):
        fit, state, pseudo = results[best]
        module.load_state_dict(state)
        fit.used = {**fit.used, "unlabeled": pseudo}
        report.update(kept=best, semi_val=report["candidates"][best]["val"], pseudo_labelled=len(pseudo))
        log.info("--unlabeled: kept %s (validation %.3f vs %.3f without the pool)", best,
                 report["semi_val"]["mean_class_accuracy"], base_val["mean_class_accuracy"])
        return fit, report
    module.load_state_dict(base_state)
    if best is not None:
        report["semi_val"] = report["candidates"][best]["val"]
    why = ("no pool clip was labelled confidently" if not results else
           "; ".join(f"{m} {report['candidates'][m]['val']['mean_class_accuracy']:.3f}" for m in results)
           + f" vs {base_val['mean_class_accuracy']:.3f} without the pool")
    log.warning("--unlabeled: the pool did not improve validation (%s); keeping the head trained without it", why)
    strategy.adopt(x_lab, y_lab, x_va, y_va, v)
    return base, report


def _with_skipped(fit: Fit, skipped: list[dict]) -> Fit:
    fit.skipped = list(fit.skipped) + [{**s, "reason": f"unlabelled pool: {s['reason']}"} for s in skipped]
    return fit
