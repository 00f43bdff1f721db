"""From per-window scores to labelled segments: smoothing, merging, short-segment removal, snapping.

Window ``k`` speaks for the time around its centre: from half-way to the previous window's centre
to half-way to the next one (the first from 0, the last to the end of the video). Everything here
works on score arrays ``(K, L)`` and plain numbers, so it is tested on hand-made sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def smooth_scores(scores: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average over ``n`` windows (an odd count; the edges average what exists)."""
    scores = np.asarray(scores, dtype=np.float64)
    if n <= 1 or len(scores) <= 1:
        return scores.copy()
    half = n // 2
    c = np.cumsum(np.pad(scores, ((1, 0), (0, 0))), axis=0)
    k = len(scores)
    lo = np.clip(np.arange(k) - half, 0, k)
    hi = np.clip(np.arange(k) + half + 1, 0, k)
    return (c[hi] - c[lo]) / (hi - lo)[:, None]


def window_edges(centres: Sequence[float], duration: float) -> np.ndarray:
    """``K + 1`` edges of the intervals the windows speak for."""
    c = np.asarray(centres, dtype=np.float64)
    if len(c) == 0:
        return np.asarray([0.0, duration])
    mids = (c[1:] + c[:-1]) / 2
    return np.concatenate([[0.0], mids, [max(duration, float(c[-1]))]])


def _runs(mask_or_labels: np.ndarray) -> list[tuple[int, int, int]]:
    """``(value, first, last + 1)`` of runs of equal values."""
    v = np.asarray(mask_or_labels)
    out, start = [], 0
    for i in range(1, len(v) + 1):
        if i == len(v) or v[i] != v[start]:
            out.append((int(v[start]), start, i))
            start = i
    return out


def _drop_short_runs(labels: np.ndarray, scores: np.ndarray, edges: np.ndarray, min_len: float) -> np.ndarray:
    """Give each run shorter than ``min_len`` seconds to the neighbour label that scores it best."""
    labels = labels.copy()
    if min_len <= 0:
        return labels
    while True:
        runs = _runs(labels)
        if len(runs) <= 1:
            return labels
        lens = [edges[b] - edges[a] for _, a, b in runs]
        k = int(np.argmin(lens))
        if lens[k] >= min_len:
            return labels
        _, a, b = runs[k]
        cands = [runs[j][0] for j in (k - 1, k + 1) if 0 <= j < len(runs)]
        best = max(cands, key=lambda lab: -1.0 if lab < 0 else float(scores[a:b, lab].mean()))
        labels[a:b] = best


def single_label_segments(scores: np.ndarray, centres: Sequence[float], duration: float, labels: Sequence[str],
                          background: str | None = None, min_score: float = 0.0,
                          min_segment: float = 0.0) -> list[dict]:
    """Segments of the top label of (already smoothed) ``scores``; background and low scores excluded.

    A window whose top score is below ``min_score`` counts as background. Runs shorter than
    ``min_segment`` seconds are absorbed by a neighbour before the background is removed, so a
    one-window flicker does not cut a segment in two.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return []
    edges = window_edges(centres, duration)
    top = scores.argmax(axis=1)
    bg = labels.index(background) if background in labels else -1
    if min_score > 0:
        top = np.where(scores.max(axis=1) >= min_score, top, -1)
    top = _drop_short_runs(top, scores, edges, min_segment)
    segs = []
    for lab, a, b in _runs(top):
        if lab < 0 or lab == bg:
            continue
        segs.append({"start": float(edges[a]), "end": float(edges[b]), "label": labels[lab],
                     "score": float(scores[a:b, lab].mean())})
    return segs


def multilabel_segments(scores: np.ndarray, centres: Sequence[float], duration: float, labels: Sequence[str],
                        thresholds: Sequence[float], background: str | None = None,
                        min_segment: float = 0.0) -> list[dict]:
    """Per-label segments where the (smoothed) score reaches the label's threshold; they may overlap.

    Gaps shorter than ``min_segment`` inside a label's activity are bridged, then active stretches
    shorter than ``min_segment`` are dropped.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return []
    edges = window_edges(centres, duration)
    segs = []
    for j, name in enumerate(labels):
        if name == background:
            continue
        on = scores[:, j] >= float(thresholds[j])
        runs = _runs(on.astype(int))
        for v, a, b in runs[1:-1]:  # bridge short inner gaps
            if v == 0 and edges[b] - edges[a] < min_segment:
                on[a:b] = True
        for v, a, b in _runs(on.astype(int)):
            if v == 1 and edges[b] - edges[a] >= min_segment:
                segs.append({"start": float(edges[a]), "end": float(edges[b]), "label": name,
                             "score": float(scores[a:b, j].mean())})
    segs.sort(key=lambda s: (s["start"], s["label"]))
    return segs


def snap_segments(segments: list[dict], boundaries: Sequence[float], tolerance: float, duration: float) -> list[dict]:
    """Move each segment edge to the nearest shot boundary within ``tolerance`` seconds.

    The same time always moves to the same boundary, so segments that touched still touch.
    Segments that collapse are dropped.
    """
    b = np.sort(np.asarray(list(boundaries), dtype=np.float64))
    if tolerance <= 0 or len(b) == 0:
        return [dict(s) for s in segments]

    def snap(t: float) -> float:
        if t <= 0 or t >= duration:
            return t
        j = int(np.argmin(np.abs(b - t)))
        return float(b[j]) if abs(b[j] - t) <= tolerance else t

    out = []
    for s in segments:
        start, end = snap(s["start"]), snap(s["end"])
        if end - start > 1e-6:
            out.append({**s, "start": start, "end": end})
    return out


def round_segments(segments: list[dict], ndigits: int = 3) -> list[dict]:
    return [{**s, "start": round(s["start"], ndigits), "end": round(s["end"], ndigits),
             "score": round(s["score"], 4)} for s in segments]
