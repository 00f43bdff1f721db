"""vidtune's results as a FiftyOne dataset (extra ``fiftyone``), so ``fiftyone app launch`` shows them.

Each video is a sample with
- ``predictions``: a :class:`fiftyone.Classification` (single-label runs: the top class and its
  probability) or :class:`fiftyone.Classifications` (multi-label runs: the labels above their thresholds),
- ``timeline``: :class:`fiftyone.TemporalDetections`, the tag timeline, ``support`` in 1-based frame numbers
  (FiftyOne's convention) computed from the video's own frame times, with ``start``/``end`` seconds kept,
- ``embedding``: the clip embedding (the run's, or the index's pooled video vector) for FiftyOne Brain's
  similarity and visualisation (a similarity index ``vidtune_sim`` is computed when FiftyOne Brain is
  installed).

This module imports no torch: ``python -m vidtune.labels.fiftyone_dataset RECORDS.json --dataset NAME``
loads a records file written by ``vidtune labels export RUN VIDEOS --to fiftyone --out RECORDS.json`` in any
Python environment that has FiftyOne (and numpy).
"""

from __future__ import annotations

import argparse
import bisect
import json
import logging
import math
import sys
from pathlib import Path

from vidtune.errors import DatasetError, MissingExtraError, VidtuneError

log = logging.getLogger(__name__)
SIMILARITY_KEY = "vidtune_sim"


def read_records(path) -> dict:
    """A records file, checked before use (shape, finite numbers)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the records ({exc})") from None
    check_records(payload, str(path))
    return payload


def check_records(payload, where: str = "records") -> None:
    if not isinstance(payload, dict) or payload.get("format") != "vidtune-fiftyone" or not isinstance(
            payload.get("samples"), list):
        raise DatasetError(f"{where}: not a vidtune FiftyOne records file (write one with `vidtune labels export "
                           "RUN VIDEOS --to fiftyone --out FILE`)")
    for i, s in enumerate(payload["samples"]):
        if not isinstance(s, dict) or not isinstance(s.get("filepath"), str):
            raise DatasetError(f"{where}: sample {i} has no filepath")
        emb = s.get("embedding")
        if emb is not None and (not isinstance(emb, list) or not all(
                isinstance(x, (int, float)) and math.isfinite(x) for x in emb)):
            raise DatasetError(f"{where}: sample {i} ({s['filepath']}): the embedding must be a list of finite numbers")


def _frame_times(path: str) -> list[float]:
    """Presentation times of every frame (PyAV demux, no decoding), relative to the first frame."""
    import av

    with av.open(path, metadata_errors="ignore") as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.pts is not None and p.size > 0)
        tb = float(s.time_base)
    return [(p - pts[0]) * tb for p in pts] if pts else []


def _support(times: list[float], fps: float | None, start: float, end: float) -> list[int]:
    """1-based inclusive frame numbers covering ``[start, end)``."""
    if times:
        first = max(0, bisect.bisect_right(times, start + 1e-6) - 1)
        last = max(first, bisect.bisect_right(times, max(start, end - 1e-4) + 1e-6) - 1)
        return [first + 1, last + 1]
    rate = fps or 25.0
    return [int(start * rate) + 1, max(int(start * rate) + 1, int(math.ceil(end * rate)))]


def load_into_fiftyone(payload: dict, name: str, overwrite: bool = True, similarity: bool = True) -> dict:
    """Create (or replace) the persistent FiftyOne dataset ``name`` from records; returns a summary."""
    from vidtune.extras import require

    check_records(payload)
    fo = require("fiftyone", "exporting to FiftyOne", "fiftyone")
    import numpy as np

    if fo.dataset_exists(name) and not overwrite:
        raise DatasetError(f"FiftyOne dataset {name!r} exists; choose another --dataset name")
    ds = fo.Dataset(name, overwrite=True, persistent=True)
    ds.info = {"vidtune_source": payload.get("source"), "labels": payload.get("labels", [])}
    multilabel_run = any(len(s.get("labels") or []) != 1 for s in payload["samples"] if s.get("predictions"))
    samples, n_segments, n_embedded = [], 0, 0
    for rec in payload["samples"]:
        sample = fo.Sample(filepath=rec["filepath"])
        preds = rec.get("predictions") or []
        scores = {p["label"]: float(p["score"]) for p in preds}
        if preds:
            if multilabel_run:
                sample["predictions"] = fo.Classifications(classifications=[
                    fo.Classification(label=lab, confidence=scores.get(lab)) for lab in rec.get("labels") or []])
            else:
                top = (rec.get("labels") or [preds[0]["label"]])[0]
                sample["predictions"] = fo.Classification(label=top, confidence=scores.get(top))
        segs = rec.get("segments") or []
        if segs:
            try:
                times = _frame_times(rec["filepath"])
            except Exception as exc:  # noqa: BLE001 - the video may not be readable here; fall back to its fps
                log.warning("%s: frame times unavailable (%s); using its frame rate", rec["filepath"], exc)
                times = []
            sample["timeline"] = fo.TemporalDetections(detections=[
                fo.TemporalDetection(label=s["label"], support=_support(times, rec.get("fps"), s["start"], s["end"]),
                                     confidence=s.get("score"), start=s["start"], end=s["end"]) for s in segs])
            n_segments += len(segs)
        if rec.get("embedding") is not None:
            sample["embedding"] = np.asarray(rec["embedding"], dtype=np.float32)
            n_embedded += 1
        if rec.get("duration") is not None:
            sample["duration"] = float(rec["duration"])
        samples.append(sample)
    ds.add_samples(samples)
    brain = None
    if similarity and n_embedded == len(samples) and len(samples) >= 2:
        try:
            import fiftyone.brain as fob

            fob.compute_similarity(ds, embeddings="embedding", brain_key=SIMILARITY_KEY, backend="sklearn")
            brain = SIMILARITY_KEY
        except ImportError:
            log.info("FiftyOne Brain is not installed: no similarity index computed")
    return {"name": name, "samples": len(ds), "segments": n_segments, "embedded": n_embedded,
            "similarity": brain}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vidtune.labels.fiftyone_dataset",
                                description="Load a vidtune records file into a FiftyOne dataset.")
    p.add_argument("records", type=Path, help="file written by `vidtune labels export ... --to fiftyone --out FILE`")
    p.add_argument("--dataset", required=True, help="FiftyOne dataset name (replaced if it exists)")
    p.add_argument("--no-similarity", action="store_true", help="skip FiftyOne Brain's similarity index")
    args = p.parse_args(argv)
    try:
        summary = load_into_fiftyone(read_records(args.records), args.dataset, similarity=not args.no_similarity)
    except (VidtuneError, MissingExtraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
