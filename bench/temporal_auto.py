"""``--temporal auto`` against each fixed head, on real footage: camera motion (a motion task) and scenes
(an appearance task) from bench/realworld_data.py.

Every head reads the same 3x3 token grid, so the runs share cached features: flow_linear (a linear
model on the flow cues), mean without and with flow cues, attention and transformer (flow cues on,
vidtune's default for them). Each cell: ``--shots K`` labelled training clips per class (seeded), the
manifest's validation split, scored on the test split (unseen photos / later, corrupted footage).

    python bench/temporal_auto.py                      # camera (4 classes) and scenes, K = 2 and 8, 2 seeds
    python bench/temporal_auto.py --tasks scenes --shots 2 --seeds 1

Writes ``bench/results/temporal_auto.csv`` and prints a table. ``main(argv)`` returns the rows
(bench/label_efficiency.py runs it as its part 4).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import realworld_data  # noqa: E402
from _common import CACHE, write_rows_csv  # noqa: E402
from label_semi import CAMERA4, camera_subset  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# name -> TrainConfig fields
HEADS = {
    "auto": {"temporal": "auto"},
    "flow_linear": {"temporal": "flow_linear", "grid": 3},
    "mean": {"temporal": "mean", "grid": 3, "flow": False},
    "mean+flow": {"temporal": "mean", "grid": 3, "flow": True},
    "attention+flow": {"temporal": "attention", "flow": True},
    "transformer+flow": {"temporal": "transformer", "flow": True},
}


def manifest_for(task: str, root: Path) -> Path:
    if task == "camera":
        return camera_subset(CAMERA4, root)
    if task == "scenes":
        return realworld_data.scenes(root / "scenes")
    raise SystemExit(f"unknown task {task!r}: camera | scenes")


def run_cell(manifest: Path, out: Path, head: str, shots: int, seed: int, cache: Path) -> dict:
    from vidtune.runs.inference import evaluate
    from vidtune.train.config import TrainConfig
    from vidtune.train.trainer import train

    cfg = TrainConfig(shots=shots or None, seed=seed, cache_dir=str(cache), **HEADS[head])
    t0 = time.perf_counter()
    res = train(manifest, out, cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    ev = evaluate(out, manifest, split="test", cache_dir=str(cache))
    auto = res.get("temporal_auto") or {}
    return {"top1": round(ev["top1"], 4), "mca": round(ev["mean_class_accuracy"], 4), "n_test": ev["n"],
            "val_top1": res["val"].get("top1"), "chosen": auto.get("chosen"),
            "cv": json.dumps({c["name"]: c["score"] for c in auto.get("candidates", [])}),
            "seconds": round(seconds, 1)}


def summary(rows: list[dict]) -> list[str]:
    lines = ["| task | K | head | test top-1 (mean ± sd) | seeds | auto chose |", "|---|---|---|---|---|---|"]
    for task in sorted({r["task"] for r in rows}):
        for k in sorted({int(r["shots"]) for r in rows if r["task"] == task}):
            for head in HEADS:
                cell = [r for r in rows if (r["task"], int(r["shots"]), r["head"]) == (task, k, head)]
                if not cell:
                    continue
                t = [float(r["top1"]) for r in cell]
                chose = ", ".join(r["chosen"] for r in cell) if head == "auto" else ""
                lines.append(f"| {task} | {k} | {head} | {statistics.mean(t):.3f} ± {statistics.pstdev(t):.3f} | "
                             f"{len(cell)} | {chose} |")
    return lines


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="camera,scenes")
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--shots", default="2,8")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--tag", default="temporal_auto")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cache = CACHE / "realworld-features"
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        manifest = manifest_for(task, CACHE / "realworld")
        for k in [int(x) for x in args.shots.split(",")]:
            for seed in range(args.seeds):
                for head in args.heads.split(","):
                    out = CACHE / "temporal-auto-runs" / f"{task}-{head}-k{k}-s{seed}"
                    r = run_cell(manifest, out, head, k, seed, cache)
                    rows.append({"task": task, "shots": k, "seed": seed, "head": head, **r})
                    print(f"[{task}] K={k} seed {seed} {head:16s} test top-1 {r['top1']:.3f}"
                          + (f" (chose {r['chosen']}; CV {r['cv']})" if r["chosen"] else "")
                          + f" {r['seconds']:.0f}s", flush=True)
                    write_rows_csv(args.out / f"{args.tag}.csv", rows)
    print("\n".join(summary(rows)))
    return rows


if __name__ == "__main__":
    main()
