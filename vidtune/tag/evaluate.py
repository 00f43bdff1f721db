"""Timeline evaluation against ground-truth segments (CSV of ``path,start,end,label``).

* segment level: a predicted segment is a true positive when it has the label of an unmatched
  ground-truth segment of the same video with temporal IoU >= ``iou`` (0.5; pairs matched best IoU
  first, one to one, like ActivityNet's detection metric at one threshold); precision, recall, F1
  overall and per label, and the mean boundary error (|start - start| and |end - end| of matches);
* frame level, on a 10 Hz grid over each video: accuracy of the single label shown (background,
  the run's background label or "none", where no segment is) for single-label runs, and mean average
  precision of the per-label score curves for multi-label runs.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from vidtune.errors import DatasetError

NONE = ""  # "no label here" on the frame grid


def _key(path) -> str:
    return str(Path(path).resolve())


def read_ground_truth(path) -> dict[str, list[dict]]:
    """``{resolved video path: [{"start", "end", "label"}]}`` from a CSV with ``path,start,end,label``.

    Relative paths resolve against the CSV's folder. Extra columns (``score``) are ignored, so a
    ``vidtune tag --format csv`` export reads back as ground truth.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ground-truth file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    rows = list(csv.DictReader(text.splitlines()))
    need = {"path", "start", "end", "label"}
    if not rows or not need <= set(rows[0]):
        raise DatasetError(f"{path}: needs a header with columns path,start,end,label (got "
                           f"{', '.join(rows[0]) if rows else 'no rows'})")
    out: dict[str, list[dict]] = defaultdict(list)
    for n, r in enumerate(rows, 2):
        if not (r.get("path") or "").strip():
            continue
        try:
            start, end = float(r["start"]), float(r["end"])
        except (TypeError, ValueError):
            raise DatasetError(f"{path}:{n}: start and end must be seconds, got {r['start']!r}, {r['end']!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start or start < 0:
            raise DatasetError(f"{path}:{n}: need 0 <= start < end, got {start}, {end}")
        video = Path(r["path"].strip())
        if not video.is_absolute():
            video = path.parent / video
        out[_key(video)].append({"start": start, "end": end, "label": (r["label"] or "").strip()})
    if not out:
        raise DatasetError(f"{path}: no ground-truth rows")
    return dict(out)


def tiou(a: dict, b: dict) -> float:
    inter = max(0.0, min(a["end"], b["end"]) - max(a["start"], b["start"]))
    union = max(a["end"], b["end"]) - min(a["start"], b["start"])
    return inter / union if union > 0 else 0.0


def match_segments(pred: list[dict], truth: list[dict], iou: float = 0.5) -> list[tuple[int, int, float]]:
    """One-to-one ``(pred index, truth index, tIoU)`` pairs with equal labels and tIoU >= ``iou``."""
    pairs = sorted(((tiou(p, g), i, j) for i, p in enumerate(pred) for j, g in enumerate(truth)
                    if p["label"] == g["label"]), reverse=True)
    used_p, used_g, out = set(), set(), []
    for v, i, j in pairs:
        if v + 1e-9 < iou:
            break
        if i not in used_p and j not in used_g:
            used_p.add(i)
            used_g.add(j)
            out.append((i, j, v))
    return out


def _prf(tp: int, n_pred: int, n_truth: int) -> dict:
    p = tp / n_pred if n_pred else (1.0 if not n_truth else 0.0)
    r = tp / n_truth if n_truth else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp,
            "pred": n_pred, "truth": n_truth}


def label_at(segments: list[dict], times: np.ndarray) -> list[str]:
    """The label shown at each time (the best-scoring segment covering it), or :data:`NONE`."""
    out = [NONE] * len(times)
    best = [-1.0] * len(times)
    for s in segments:
        lo, hi = np.searchsorted(times, s["start"], "left"), np.searchsorted(times, s["end"], "left")
        sc = float(s.get("score", 1.0))
        for k in range(lo, hi):
            if sc > best[k]:
                out[k], best[k] = s["label"], sc
    return out


def average_precision(scores: np.ndarray, target: np.ndarray) -> float:
    """Area under the precision-recall curve (mean precision at each positive), NaN with no positives."""
    target = np.asarray(target, dtype=bool)
    if not target.any():
        return math.nan
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = target[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def score_curves(result, times: np.ndarray) -> np.ndarray:
    """``(len(times), L)`` smoothed window scores, each time taking the window it falls under."""
    from vidtune.tag.segments import window_edges

    edges = window_edges(result.centres, result.duration)
    idx = np.clip(np.searchsorted(edges, times, "right") - 1, 0, len(result.smoothed) - 1)
    return result.smoothed[idx]


def evaluate_results(results: list, truth: dict[str, list[dict]], iou: float = 0.5, hz: float = 10.0,
                     background: str | None = None) -> dict:
    """Metrics of :class:`~vidtune.tag.tagger.TagResult` objects against :func:`read_ground_truth` output."""
    if not results:
        raise DatasetError("nothing to evaluate: no video could be tagged")
    tp = n_pred = n_truth = 0
    per_label: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    errors: list[float] = []
    frame_hits = frame_total = 0
    curves, targets = [], []
    labels = list(results[0].labels)
    multi = results[0].task == "multilabel"
    videos = []
    for r in results:
        gt = [g for g in truth.get(_key(r.path), []) if g["label"] != background]
        pred = [{"start": s["start"], "end": s["end"], "label": s["label"], "score": s["score"]} for s in r.segments]
        pairs = match_segments(pred, gt, iou)
        tp += len(pairs)
        n_pred += len(pred)
        n_truth += len(gt)
        for s in pred:
            per_label[s["label"]][1] += 1
        for g in gt:
            per_label[g["label"]][2] += 1
        for i, j, _ in pairs:
            per_label[pred[i]["label"]][0] += 1
            for edge in ("start", "end"):
                errors.append(abs(pred[i][edge] - gt[j][edge]))
        times = (np.arange(int(math.floor(r.duration * hz))) + 0.5) / hz
        v = {"path": r.path, **_prf(len(pairs), len(pred), len(gt))}
        if multi:
            curves.append(score_curves(r, times))
            targets.append(np.stack([np.asarray([any(g["label"] == lab and g["start"] <= t < g["end"] for g in gt)
                                                 for t in times]) for lab in labels], axis=1)
                           if len(times) else np.zeros((0, len(labels)), bool))
        else:
            want, got = label_at(gt, times), label_at(pred, times)
            hits = sum(a == b for a, b in zip(want, got))
            frame_hits += hits
            frame_total += len(times)
            v["frame_accuracy"] = hits / len(times) if len(times) else None
        videos.append(v)
    out = {**_prf(tp, n_pred, n_truth), "iou": iou,
           "boundary_error": float(np.mean(errors)) if errors else None,
           "per_label": {lab: _prf(*per_label[lab]) for lab in sorted(per_label)}, "videos": videos}
    if multi:
        c = np.concatenate(curves) if curves else np.zeros((0, len(labels)))
        t = np.concatenate(targets) if targets else np.zeros((0, len(labels)), bool)
        aps = {lab: average_precision(c[:, j], t[:, j]) for j, lab in enumerate(labels) if lab != background}
        valid = [v for v in aps.values() if not math.isnan(v)]
        out["frame_map"] = float(np.mean(valid)) if valid else None
        out["frame_ap"] = {k: (None if math.isnan(v) else v) for k, v in aps.items()}
    else:
        out["frame_accuracy"] = frame_hits / frame_total if frame_total else None
    return out
