"""Which clips to label next: coverage of the pool first, then what the current run is unsure of.

Every candidate clip gets a weight ``w`` and a distance ``d`` to the clips already chosen (and to the
ones already labelled), in the embedding space of the backbone (cold start) or of the run's head.
Clips are chosen greedily, each time the one with the largest ``w * d``, and ``d`` is updated: the
k-center greedy of core-set selection (Sener & Savarese 2018), weighted.

* Cold start (no run): ``w`` is the clip's typicality (how dense its neighbourhood is), so the first
  pick is the most typical clip and later picks go where nothing chosen is near, without chasing
  one-off outliers. Each kind of footage is reached after a few picks however rare it is in the pool.
* With a run: ``w`` is the run's uncertainty (one minus the margin between its top two classes; for a
  multi-label run the label closest to its threshold), tempered by typicality, so the picks are clips
  the run cannot tell apart that also differ from each other and from the labelled set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np

from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.errors import ConfigError, DatasetError
from vidtune.labels.features import BackboneOptions, backbone_features, run_clip_seconds, run_outputs
from vidtune.labels.pool import PoolItem, held_spans, is_held, pool_items
from vidtune.progress import Progress

log = logging.getLogger(__name__)

NEIGHBOURS = 10  # typicality: mean distance to this many nearest neighbours
MAX_DIMS = 128  # distances are computed in at most this many principal directions (large pools)


@dataclass
class Suggestion:
    """A clip to label, best first: ``score`` is its weight times its distance when it was chosen."""

    path: str
    start: float | None
    end: float | None
    score: float
    predicted: str | None = None
    confidence: float | None = None

    @property
    def item(self) -> PoolItem:
        return PoolItem(self.path, self.start, self.end)

    @property
    def key(self) -> str:
        return self.item.key

    def to_dict(self) -> dict:
        return asdict(self)


def suggest(pool, k: int, run=None, labeled=None, *, cache_dir=None, progress: Progress | None = None,
            backbone: str = DEFAULT_BACKBONE, weights: str | None = None, pretrained: bool = True, frames: int = 8,
            device: str = "auto", workers: int | None = None, use_cache: bool = True,
            clip_seconds: float | None = None, skipped: list[dict] | None = None) -> list[Suggestion]:
    """The ``k`` clips of ``pool`` most worth labelling next, best first.

    Args:
        pool: PoolItems, or what :func:`vidtune.labels.pool.load_pool` reads (folder, manifest, videos).
        k: how many to return (fewer when the pool holds fewer unlabelled clips).
        run: a trained run folder: uncertainty of its predictions, in its head's embedding space.
        labeled: clips already labelled (PoolItems / VideoItems, or a manifest or class-folder path):
            never suggested again, and suggestions keep away from them.
        cache_dir: the feature cache (default location when None); ``use_cache=False`` bypasses it.
        backbone, weights, pretrained, frames: the frozen encoder of the cold start (ignored with a run).
        clip_seconds: the length long videos are cut to (default: the run's training clip length).
        skipped: a list that receives ``{"path", "reason"}`` for each unreadable file.
    """
    if not isinstance(k, int) or k < 1:
        raise ConfigError("k", f"must be a whole number >= 1, got {k!r}")
    skipped = [] if skipped is None else skipped
    if clip_seconds is None and run is not None:
        clip_seconds = run_clip_seconds(run)
    items = pool_items(pool, clip_seconds, skipped)
    held = held_spans(labeled)
    candidates = [it for it in items if not is_held(it, held)]
    if len(candidates) < len(items):
        log.info("%d of %d pool clips are already labelled", len(items) - len(candidates), len(items))
    if not candidates:
        return []
    anchors = _anchor_items(labeled)
    video_items = [it.to_video_item() for it in candidates + anchors]
    n_cand = len(candidates)
    if run is not None:
        outs = run_outputs(run, video_items, device=device, cache_dir=cache_dir, use_cache=use_cache,
                           workers=workers, progress=progress)
        index, emb, probs = outs.index, outs.embeddings, outs.probs
        failed = outs.skipped
    else:
        opts = BackboneOptions(backbone=backbone, weights=weights, pretrained=pretrained, frames=frames,
                               device=device, workers=workers, cache_dir=cache_dir, use_cache=use_cache)
        feats = backbone_features(video_items, opts, progress, description="pool features")
        index, emb, probs, outs = feats.index, feats.embeddings(), None, None
        failed = feats.skipped
    cand_paths = {str(it.path) for it in candidates}
    skipped.extend(s for s in failed if s["path"] in cand_paths)
    pos = np.asarray(index, dtype=np.int64)
    is_cand = pos < n_cand
    if not is_cand.any():
        raise DatasetError(f"none of the {n_cand} pool clips could be read ({len(skipped)} skipped)")
    x = reduce(emb)
    order, scores = rank(x[is_cand], k, probs=None if probs is None else probs[is_cand], anchors=x[~is_cand],
                         multilabel=bool(outs and outs.multilabel), thresholds=outs.thresholds if outs else None)
    cand_pos = pos[is_cand]
    out = []
    for j, s in zip(order, scores):
        it = candidates[int(cand_pos[j])]
        predicted = confidence = None
        if probs is not None:
            predicted, confidence = _prediction(probs[is_cand][j], outs.labels, outs.multilabel, outs.thresholds)
        out.append(Suggestion(it.path, it.start, it.end, round(float(s), 6), predicted, confidence))
    return out


def rank(emb: np.ndarray, k: int, probs: np.ndarray | None = None, anchors: np.ndarray | None = None,
         multilabel: bool = False, thresholds=None) -> tuple[list[int], list[float]]:
    """The selection itself, on features already computed: ``k`` rows of ``emb`` (L2-normalised clip
    embeddings), best first, with their scores. ``probs``: a run's scores for the rows (uncertainty x
    diversity), else cold start (typicality x diversity). ``anchors``: embeddings of labelled clips."""
    typical = typicality(emb)
    w = typical if probs is None else uncertainty(probs, multilabel, thresholds) * np.sqrt(typical)
    return weighted_k_center(emb, w, min(k, len(emb)), anchors=anchors)


def _anchor_items(labeled) -> list[PoolItem]:
    """The labelled clips whose features anchor the diversity (the clips themselves, when known)."""
    if labeled is None:
        return []
    spans = held_spans(labeled)
    out = []
    for path, ss in spans.items():
        for a, b in ss:
            out.append(PoolItem(path, None if a == 0 and math.isinf(b) else a, None if math.isinf(b) else b))
    return out


def _prediction(p: np.ndarray, labels: list[str], multilabel: bool, thresholds) -> tuple[str | None, float]:
    if multilabel:
        chosen = [j for j in np.argsort(-p, kind="stable") if p[j] >= thresholds[j]]
        top = int(np.argmax(p))
        return ("|".join(labels[j] for j in chosen) or None), round(float(p[chosen[0] if chosen else top]), 6)
    j = int(np.argmax(p))
    return labels[j], round(float(p[j]), 6)


def uncertainty(probs: np.ndarray, multilabel: bool = False, thresholds=None) -> np.ndarray:
    """In [0, 1], 1 = undecided. Single-label: one minus the margin between the top two scores;
    multi-label: for the label closest to its threshold, one minus its distance there (scaled)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        return np.zeros(len(p))
    if multilabel:
        t = np.asarray(thresholds if thresholds is not None else [0.5] * p.shape[1], dtype=np.float64)
        scale = np.maximum(t, 1 - t)
        return np.clip(1 - np.abs(p - t) / scale, 0, 1).max(axis=1)
    if p.shape[1] == 1:
        return np.clip(1 - np.abs(2 * p[:, 0] - 1), 0, 1)
    top2 = -np.sort(-p, axis=1)[:, :2]
    return np.clip(1 - (top2[:, 0] - top2[:, 1]), 0, 1)


def reduce(x: np.ndarray) -> np.ndarray:
    """L2-normalised rows, projected on their top principal directions when wide and many."""
    x = np.asarray(x, dtype=np.float32)
    if len(x) > 1000 and x.shape[1] > MAX_DIMS:
        c = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(c[:: max(1, len(c) // 4000)], full_matrices=False)
        x = c @ vt[:MAX_DIMS].T
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def typicality(x: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """In (0, 1]: the inverse mean cosine distance to the nearest ``neighbours`` rows, scaled to max 1."""
    n = len(x)
    if n <= 1:
        return np.ones(n)
    m = min(neighbours, n - 1)
    out = np.empty(n)
    for lo in range(0, n, 1024):
        d = 1.0 - x[lo : lo + 1024] @ x.T  # (b, n)
        np.clip(d, 0, 2, out=d)
        for r in range(len(d)):
            d[r, lo + r] = np.inf
        near = np.partition(d, m - 1, axis=1)[:, :m]
        out[lo : lo + len(d)] = 1.0 / (near.mean(axis=1) + 1e-3)
    return out / out.max()


def weighted_k_center(x: np.ndarray, w: np.ndarray, k: int, anchors: np.ndarray | None = None):
    """Greedy: ``k`` rows of ``x`` (L2-normalised), each time the one maximising ``w * d`` with ``d`` its
    cosine distance to the nearest row chosen so far or anchor (1 when there are none yet).

    Returns the chosen row indices in order and their ``w * d`` at the time they were chosen."""
    n = len(x)
    w = np.asarray(w, dtype=np.float64)
    d = np.ones(n)
    if anchors is not None and len(anchors):
        for lo in range(0, len(anchors), 1024):
            d = np.minimum(d, (1.0 - x @ anchors[lo : lo + 1024].T).min(axis=1))
    d = np.clip(d, 0, None)
    taken = np.zeros(n, dtype=bool)
    order, scores = [], []
    for _ in range(min(k, n)):
        gain = np.where(taken, -np.inf, w * d + 1e-12 * w)  # ties (d = 0): the larger weight
        j = int(np.argmax(gain))
        order.append(j)
        scores.append(float(w[j] * d[j]))
        taken[j] = True
        d = np.minimum(d, np.clip(1.0 - x @ x[j], 0, None))
    return order, scores
