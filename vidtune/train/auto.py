"""``--temporal auto``: the temporal head chosen by grouped cross-validation on the cached features.

Features are extracted once, in the richest form any candidate reads (space-time tokens with the
optical-flow cues of :mod:`vidtune.data.flow`); every candidate trains on slices of them:

* ``flow_linear``: logistic regression on the clip's mean flow cues (19 numbers) alone;
* ``mean``: the mean of the frame features, then a linear layer (appearance only);
* ``mean+flow``: the same with the mean flow cues beside them;
* ``attention+flow`` / ``transformer+flow``: order-aware heads over space-time, motion and flow tokens.

Candidates are listed simplest first. Each is scored by the mean class accuracy of its out-of-fold
predictions over the labelled clips (training and validation together, folds stratified by class
and split by source: the manifest's ``group``, else the video file), and the simplest one within
one standard error of the best is kept: with a few labels per class the scores of flexible heads
are noise, and a flexible head that cannot beat a linear model on its own inputs is not kept. An
appearance task (which video, which object) ends on ``mean``; a motion task (which way the camera
moves) on a head that reads the flow cues. The chosen head is then trained as ``--temporal`` would
train it, on the features already in memory.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import torch
from torch import nn

from vidtune.errors import ConfigError
from vidtune.models.heads import create_head
from vidtune.progress import NullProgress
from vidtune.runs.store import assemble
from vidtune.train.build import build, head_options
from vidtune.train.config import TrainConfig
from vidtune.train.linear import LinearStrategy
from vidtune.train.task import Task

log = logging.getLogger(__name__)

# (head, flow cues): simplest first; ties within noise go to the earlier one
CANDIDATES = (("flow_linear", True), ("mean", False), ("mean", True), ("attention", True), ("transformer", True))
NO_FLOW_CANDIDATES = (("mean", False), ("attention", False), ("transformer", False))  # video backbones
FOLDS = 3  # few: every fold trains every candidate, and the data is a few clips per class


def candidate_name(kind: str, flow: bool) -> str:
    return kind if kind == "flow_linear" or not flow else f"{kind}+flow"


class HeadOnly(nn.Module):
    """What :class:`LinearStrategy` trains when only a head is compared: no encoder to copy."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head
        self.audio = None


def _slice(x: torch.Tensor, kind: str, flow: bool, dim: int, flow_ch: int) -> torch.Tensor:
    """The channels (and tokens) candidate ``kind`` reads from the full features ``(..., [G,] dim + flow_ch)``,
    with the token axis kept where the head needs it. ``x`` is ``(N, T, [V,] [G,] D)`` with tokens at -2
    when there are any."""
    if kind == "flow_linear":
        return x[..., dim:].contiguous() if flow_ch else x
    if not flow and flow_ch:
        x = x[..., :dim]
    return x.contiguous()


def grouped_folds(y: torch.Tensor, groups: list[str], seed: int, folds: int = FOLDS) -> list[tuple[list, list]]:
    """Stratified folds that never split a group: ``[(train_idx, test_idx)]``, or ``[]`` when fewer
    than two groups exist."""
    from sklearn.model_selection import StratifiedGroupKFold

    names = sorted(set(groups))
    if len(names) < 2:
        return []
    gid = [names.index(g) for g in groups]
    per_class = [len({g for g, c in zip(gid, y.tolist()) if c == k}) for k in sorted(set(y.tolist()))]
    k = max(2, min(folds, min(per_class), len(names)))
    skf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the least populated class has only N members": expected at tiny K
        return [(tr.tolist(), te.tolist()) for tr, te in skf.split(torch.zeros(len(y), 1), y.numpy(), gid)
                if len(tr) and len(te)]


def cross_validate(kind: str, flow: bool, x: torch.Tensor, y: torch.Tensor, folds, task: Task, cfg: TrainConfig,
                   device: torch.device, dim: int, grid: int, progress_task=None) -> torch.Tensor:
    """Out-of-fold logits ``(N, K)`` of candidate ``kind`` trained on ``x`` ``(N, T, [G,] D)`` fold by fold."""
    opts = head_options(replace(cfg, temporal=kind), flow)
    logits = torch.zeros(len(y), len(task.labels))
    ccfg = replace(cfg, temporal=kind, flow=flow)
    for tr, te in folds:
        torch.manual_seed(cfg.seed)
        head = create_head(kind, dim, len(task.labels), x.shape[1], grid=grid, **opts)
        holder = HeadOnly(head)
        s = LinearStrategy.from_tensors(holder, task, ccfg, device, NullProgress(), x[tr][:, :, None], y[tr], None, None,
                                        views=1)
        s.fit()
        head.eval()
        with torch.no_grad():
            logits[te] = head(x[te].to(device)).cpu()
        if progress_task is not None:
            progress_task.advance(1)
    return logits


def choose(x: torch.Tensor, y: torch.Tensor, groups: list[str], task: Task, cfg: TrainConfig, device,
           dim: int, flow_ch: int, grid: int, candidates=CANDIDATES, progress=None) -> dict:
    """Cross-validate ``candidates`` on features ``x`` ``(N, T, [G,] dim + flow_ch)`` with targets ``y``
    and source ``groups``; the report names the chosen one and every candidate's score.

    Candidates are tried simplest first; once one scores within one standard error of perfect, the
    later (more flexible) ones cannot be chosen and are recorded as not tried."""
    progress = progress or NullProgress()
    folds = grouped_folds(y, groups, cfg.seed)
    n = len(y)
    rows = []
    if not folds:
        log.warning("--temporal auto: the labelled clips come from fewer than two sources, nothing to cross-validate "
                    "on; training the simplest head, %s", candidate_name(*candidates[0]))
    with progress.task(f"choosing the head: {len(candidates)} candidates x {len(folds)} folds",
                       total=len(candidates) * len(folds)) as bar:
        for kind, flow in candidates:
            row = {"name": candidate_name(kind, flow), "temporal": kind, "flow": bool(flow)}
            rows.append(row)
            if not folds:
                row.update(score=None, se=None, tried=False)
                continue
            best = max((r["score"] for r in rows if r.get("score") is not None), default=None)
            if best is not None and best >= 1.0 - 1.0 / n:  # nothing can beat it by more than noise
                row.update(score=None, se=None, tried=False)
                bar.advance(len(folds))
                continue
            xc = _slice(x, kind, flow, dim, flow_ch)
            oof = cross_validate(kind, flow, xc, y, folds, task, cfg, device, dim, grid, bar)
            m = task.metrics(oof, y)
            score = float(m["mean_class_accuracy"])
            se = max(math.sqrt(max(score * (1 - score), 0.0) / n), 1.0 / n)
            row.update(score=round(score, 4), top1=round(float(m["top1"]), 4), se=round(se, 4), tried=True)
            log.info("--temporal auto: %s scores %.3f (mean class accuracy, %d-fold grouped CV)", row["name"], score,
                     len(folds))
    scored = [r for r in rows if r.get("score") is not None]
    if scored:
        best = max(scored, key=lambda r: r["score"])
        chosen = next(r for r in scored if r["score"] >= best["score"] - best["se"])
    else:
        best, chosen = None, rows[0]
    return {"chosen": chosen["name"], "best": best["name"] if best else None, "candidates": rows,
            "metric": "mean class accuracy of out-of-fold predictions", "folds": len(folds), "clips": n,
            "groups": len(set(groups)),
            "rule": "the simplest candidate within one standard error of the best (simplest first: "
                    + ", ".join(candidate_name(*c) for c in candidates) + ")"}


def select_head(cfg: TrainConfig, labels: list[str], train_items, val_items, task: Task, device: torch.device,
                cache, progress, ckpt=None):
    """Choose the head, then set up its training: ``(model, spec, strategy, report)``."""
    if cfg.init:
        raise ConfigError("temporal", "auto chooses a new head; with --init name the head (or leave --temporal out "
                                      "to keep the init run's)")
    progress = progress or NullProgress()
    probe = replace(cfg, temporal="attention", flow=None)
    model, spec, _ = build(probe, labels)
    flow_ch = model.head.flow
    dim = model.encoder.num_features
    grid = spec.grid
    full = LinearStrategy(model, train_items, val_items, task, replace(probe, flow=bool(flow_ch)), device, cache,
                          progress)
    v = full.v
    centre = full.x_tr[:, :, v // 2]  # the clean centre views: what validation and prediction see
    xs = [centre] + ([full.x_va] if full.x_va is not None else [])
    x_all = torch.cat(xs)
    y_all = torch.cat([full.y_tr] + ([full.y_va] if full.y_va is not None else []))
    items = full.used["train"] + full.used["val"]
    groups = [it.group_key() for it in items]
    candidates = CANDIDATES if flow_ch else NO_FLOW_CANDIDATES
    report = choose(x_all, y_all, groups, task, cfg, device, dim, flow_ch, grid, candidates, progress)
    chosen = next(r for r in report["candidates"] if r["name"] == report["chosen"])
    kind, flow = chosen["temporal"], chosen["flow"]
    log.info("--temporal auto chose %s", chosen["name"])

    final_cfg = replace(cfg, temporal=kind, flow=bool(flow), grid=grid)
    final_spec = replace(spec, temporal=kind, head=head_options(final_cfg, bool(flow)))
    torch.manual_seed(cfg.seed)
    final_model = assemble(model.encoder, final_spec, len(labels), shift=False)
    keep = flow or not flow_ch  # the cached features carry flow; a head without it gets them cut off
    x_tr = full.x_tr if keep else full.x_tr[..., :dim].contiguous()
    x_va = full.x_va if (keep or full.x_va is None) else full.x_va[..., :dim].contiguous()
    strategy = LinearStrategy.from_tensors(final_model, task, final_cfg, device, progress, x_tr, full.y_tr, x_va,
                                           full.y_va, views=v, used=full.used, skipped=full.skipped)
    strategy.ckpt = ckpt
    return final_model, final_spec, strategy, report
