"""Unlabelled footage: camera motion at K = 1 and 2 labelled clips per class, with and without ``--unlabeled``.

The task is bench/realworld_data.py's camera motion over real photos (test photos never seen in training),
restricted to ``--classes``. The labelled clips are ``--shots K`` of the training split (seeded choice), the
validation split stays labelled (it is what the guard of ``--unlabeled`` checks), and the pool is every
training clip with its label dropped. Each cell trains ``--temporal`` (default auto) twice, without and with
the pool, and scores both on the test split.

    python bench/label_semi.py                         # K = 1, 2; 3 seeds
    python bench/label_semi.py --shots 1 --seeds 1 --augment robust

Writes ``bench/results/label_semi.csv`` and prints a table. ``main(argv)`` returns the rows
(bench/label_efficiency.py runs it as its part 3).
"""

from __future__ import annotations

import argparse
import csv
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

RESULTS = Path(__file__).resolve().parent / "results"
CAMERA4 = ("pan_left", "pan_right", "zoom_in", "zoom_out")


def camera_subset(classes, root: Path = CACHE / "realworld") -> Path:
    """The camera-motion manifest restricted to ``classes`` (written beside the full one)."""
    full = realworld_data.camera_motion(root / "camera_motion")
    rows = [r for r in realworld_data.read_manifest(full) if r["label"] in classes]
    out = full.parent / f"manifest_{'-'.join(classes)}.csv"
    write_rows(out, rows, ("path", "label", "split", "group"))
    return out


def write_rows(path: Path, rows: list[dict], fields) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def pool_manifest(manifest: Path) -> Path:
    """Every training clip, label dropped: what a user has lying around unlabelled."""
    rows = [{"path": r["path"], "group": r["group"]} for r in realworld_data.read_manifest(manifest)
            if r["split"] == "train"]
    out = manifest.with_name(manifest.stem + "_pool.csv")
    write_rows(out, rows, ("path", "group"))
    return out


def run_cell(manifest: Path, out: Path, shots: int, seed: int, temporal: str, cache: Path, pool: Path | None,
             augment: str | None) -> dict:
    from vidtune.runs.inference import evaluate
    from vidtune.train.config import TrainConfig
    from vidtune.train.trainer import train

    cfg = TrainConfig(temporal=temporal, shots=shots, seed=seed, cache_dir=str(cache), augment=augment,
                      unlabeled=str(pool) if pool else None)
    t0 = time.perf_counter()
    res = train(manifest, out, cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    ev = evaluate(out, manifest, split="test", cache_dir=str(cache))
    semi = res.get("semi") or {}
    auto = res.get("temporal_auto") or {}
    head = json.loads((out / "config.json").read_text())["model"]
    return {"top1": round(ev["top1"], 4), "mca": round(ev["mean_class_accuracy"], 4), "n_test": ev["n"],
            "val_top1": res["val"].get("top1"), "head": head["temporal"] + ("+flow" if head["head"].get("flow") and
                                                                              head["temporal"] != "flow_linear" else ""),
            "auto_chosen": auto.get("chosen"), "kept": semi.get("kept"),
            "base_val": (semi.get("baseline_val") or {}).get("mean_class_accuracy"),
            "semi_val": (semi.get("semi_val") or {}).get("mean_class_accuracy"),
            "pseudo_labelled": semi.get("pseudo_labelled"),
            "candidates": json.dumps({m: {"n": c["pseudo_labelled"], "val": (c["val"] or {}).get("mean_class_accuracy")}
                                      for m, c in (semi.get("candidates") or {}).items()}),
            "seconds": round(seconds, 1)}


def summary(rows: list[dict]) -> list[str]:
    lines = ["| K | pool | test top-1 (mean ± sd) | seeds | kept | head |", "|---|---|---|---|---|---|"]
    for k in sorted({int(r["shots"]) for r in rows}):
        for pool in ("without", "with"):
            cell = [r for r in rows if int(r["shots"]) == k and r["pool"] == pool]
            if not cell:
                continue
            t = [float(r["top1"]) for r in cell]
            kept = ", ".join(str(r["kept"]) for r in cell) if pool == "with" else ""
            lines.append(f"| {k} | {pool} | {statistics.mean(t):.3f} ± {statistics.pstdev(t):.3f} | {len(cell)} | "
                         f"{kept} | {', '.join(sorted({r['head'] for r in cell}))} |")
    return lines


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", default="1,2")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--classes", default=",".join(CAMERA4))
    ap.add_argument("--temporal", default="auto")
    ap.add_argument("--augment", default=None, help="training augmentation (default: vidtune's, robust)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--tag", default="label_semi")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cache = CACHE / "realworld-features"
    manifest = camera_subset(tuple(args.classes.split(",")))
    pool = pool_manifest(manifest)
    print(f"camera task {manifest} ({args.classes}); pool {pool}", flush=True)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for k in [int(x) for x in args.shots.split(",")]:
        for seed in range(args.seeds):
            for name, p in (("without", None), ("with", pool)):
                out = CACHE / "label-semi-runs" / f"k{k}-s{seed}-{name}"
                r = run_cell(manifest, out, k, seed, args.temporal, cache, p, args.augment)
                rows.append({"task": "camera", "shots": k, "seed": seed, "pool": name, "temporal": args.temporal, **r})
                print(f"K={k} seed {seed} {name:7s} pool: test top-1 {r['top1']:.3f} head {r['head']} "
                      f"kept {r['kept']} (val {r['base_val']} -> {r['semi_val']}, {r['pseudo_labelled']} pseudo) "
                      f"{r['seconds']:.0f}s", flush=True)
                write_rows_csv(args.out / f"{args.tag}.csv", rows)
    print("\n".join(summary(rows)))
    return rows


if __name__ == "__main__":
    main()
