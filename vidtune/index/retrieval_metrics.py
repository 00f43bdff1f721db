"""Retrieval / copy-detection metrics: micro AP (VSC22 descriptor track), recall@k, localisation IoU.

muAP (micro average precision, as in the Video Similarity Challenge 2022 descriptor track and the
Image Similarity Challenge): every ``(query, database video, score)`` prediction of every query is
pooled into one list ranked by score (one prediction per pair: its highest score); precision and
recall are computed along that list with recall relative to *all* ground-truth pairs, and AP is
``sum over ranks of (recall_r - recall_{r-1}) * precision_r``. Because the ranking is global, the
scores must be comparable across queries: a distractor query's best score has to fall below a true
copy's, which is what makes the metric strict.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from vidtune.errors import DatasetError


def micro_ap(predictions, positives) -> float:
    """``predictions``: iterable of ``(query, db, score)``; ``positives``: set of ``(query, db)``.

    Returns 0 when there are no positives (nothing can be found).
    """
    positives = set(positives)
    if not positives:
        return 0.0
    best: dict[tuple, float] = {}
    for q, d, s in predictions:
        if (q, d) not in best or s > best[(q, d)]:
            best[(q, d)] = float(s)
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    hits = 0
    ap = 0.0
    for rank, (pair, _) in enumerate(ranked, 1):
        if pair in positives:
            hits += 1
            ap += hits / rank  # (recall step 1/|P|) * precision at this rank
    return ap / len(positives)


def interval_iou(a0, a1, b0, b1) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def retrieval_metrics(results: dict, ground_truth: dict, ks=(1, 10)) -> dict:
    """Metrics of ranked search results against ground truth.

    Args:
        results: ``{query: [{"path", "score", "start", "end", "query_start", "query_end"}, ...]}``
            ranked best first (the ``results`` of ``vidtune search --json``).
        ground_truth: ``{query: {db path: (q_start, q_end, db_start, db_end) or None}}``; a query
            with no match maps to ``{}``.

    ``recall@k``: fraction of queries with at least one match that have a true match among their
    first ``k`` results. Localisation IoU: for each query's highest-ranked true match whose ground
    truth has times, the IoU of the reported and true spans, in the database video and in the query.
    """
    preds = [(q, r["path"], r["score"]) for q, rs in results.items() for r in rs]
    positives = {(q, d) for q, ms in ground_truth.items() for d in ms}
    with_match = [q for q, ms in ground_truth.items() if ms]
    out = {"queries": len(ground_truth), "queries_with_match": len(with_match), "positives": len(positives),
           "muAP": round(micro_ap(preds, positives), 6)}
    for k in ks:
        hit = [any(r["path"] in ground_truth[q] for r in results.get(q, [])[:k]) for q in with_match]
        out[f"recall@{k}"] = round(float(np.mean(hit)), 6) if hit else None
    iou_db, iou_q = [], []
    for q in with_match:
        for r in results.get(q, []):
            if r["path"] in ground_truth[q]:
                t = ground_truth[q][r["path"]]
                if t is not None and r.get("start") is not None:
                    if t[2] is not None and t[3] is not None:
                        iou_db.append(interval_iou(r["start"], r["end"], t[2], t[3]))
                    if t[0] is not None and t[1] is not None and r.get("query_start") is not None:
                        iou_q.append(interval_iou(r["query_start"], r["query_end"], t[0], t[1]))
                break
    out["iou_db"] = round(float(np.mean(iou_db)), 6) if iou_db else None
    out["iou_query"] = round(float(np.mean(iou_q)), 6) if iou_q else None
    out["localised"] = len(iou_db)
    return out


def _num(v, where: str):
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {v!r} is not a number of seconds") from None
    if not math.isfinite(x):
        raise DatasetError(f"{where}: {v!r} is not a finite number")
    return x


def _key(p, base: Path) -> str:
    p = Path(p)
    if not p.is_absolute() and (base / p).exists():
        p = base / p
    return str(p.resolve())


def load_ground_truth(path) -> dict:
    """CSV or JSONL rows ``query, match`` (empty match: a query with no copy in the database) and
    optional ``query_start, query_end, match_start, match_end`` (seconds). Relative paths resolve
    against the file's folder when they exist there, else against the working directory."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"ground truth not found: {path}")
    base = path.parent
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
    gt: dict[str, dict] = {}
    for n, row in enumerate(rows, 2):
        where = f"{path}:{n}"
        if not isinstance(row, dict) or not row.get("query"):
            raise DatasetError(f"{where}: every row needs a 'query' (and 'match', empty for none)")
        q = _key(row["query"], base)
        gt.setdefault(q, {})
        m = row.get("match")
        if m:
            times = tuple(_num(row.get(c), where) for c in ("query_start", "query_end", "match_start", "match_end"))
            gt[q][_key(m, base)] = times if any(t is not None for t in times) else None
    if not gt:
        raise DatasetError(f"{path}: no ground-truth rows")
    return gt


def evaluate_retrieval(ground_truth, index_dir=None, predictions=None, k: int = 10, save_predictions=None,
                       device: str = "auto", cache_dir=None, use_cache: bool = True, progress=None) -> dict:
    """Search every ground-truth query in ``index_dir`` (or read saved ``predictions``) and score them."""
    from vidtune.errors import VidtuneError
    from vidtune.progress import NullProgress

    progress = progress or NullProgress()
    gt = load_ground_truth(ground_truth)
    results: dict[str, list[dict]] = {}
    skipped: list[dict] = []
    if predictions is not None:
        p = Path(predictions)
        if not p.is_file():
            raise DatasetError(f"predictions not found: {p}")
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                    results[str(Path(obj["query"]).resolve())] = [
                        {**r, "path": str(Path(r["path"]).resolve())} for r in obj["results"]]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise DatasetError(f"{p}:{n}: not a `vidtune search --json` object ({exc})") from None
    else:
        from vidtune.index.search import Searcher
        from vidtune.utils import atomic_write_text

        lines = []
        with Searcher(index_dir, device, cache_dir, use_cache, many=len(gt) > 1) as s, \
                progress.task(f"searching {len(gt)} queries", total=len(gt)) as task:
            for q in gt:
                try:
                    r = s.search(q, k=max(k, 10))
                except VidtuneError as exc:
                    skipped.append({"path": q, "reason": getattr(exc, "reason", None) or str(exc)})
                    task.advance(1)
                    continue
                lines.append(json.dumps(r))
                results[q] = [{**x, "path": str(Path(x["path"]).resolve())} for x in r["results"]]
                task.advance(1)
        if save_predictions:
            atomic_write_text(save_predictions, "".join(line + "\n" for line in lines))
    results = {q: rs[: max(k, 10)] for q, rs in results.items()}
    out = retrieval_metrics(results, gt)
    out["k"] = k
    out["skipped"] = skipped
    return out
