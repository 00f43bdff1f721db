"""Real-footage benchmark: few labelled clips cut from real videos and photos that ship in packages.

The sample tasks vidtune generates are saturated; these are not. Datasets (bench/realworld_data.py):

* camera: camera motion over real photos (zoom in/out, pan left/right, rotate cw/ccw, fade in/out);
  every photo appears under every label, and test photos are never seen in training. Appearance says
  nothing about the label: only change does.
* arrow: real clips played forward or backward; training and test clips come from different videos.
* scenes: one class per real video, test clips from later parts of each video and corrupted (noise,
  blur, shake, low bitrate), one class with 5x the clips of the others.

Each cell trains a run on the task's training split (``--shots K`` clips per class, nested seeded
choices; validation from the manifest's own val split) with the frozen default backbone on CPU, and
scores it on the test split. Cells repeat over ``--seeds``; the table shows mean and spread.

    python bench/realworld.py                         # the default grid (see --help)
    python bench/realworld.py --tasks scenes --variants default,sampler,logit_adjust,none_balance
    python bench/realworld.py --robustness            # also vidtune robustness (1,3,5) on scenes
    python bench/realworld.py --combine a.csv b.csv   # merge result files into one table and plot

Writes ``bench/results/realworld.csv`` and ``realworld.png`` and prints a summary table.
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
from _common import CACHE  # noqa: E402

from vidtune.runs.inference import evaluate  # noqa: E402
from vidtune.train.config import TrainConfig  # noqa: E402
from vidtune.train.trainer import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# K clips per class; 0: every training clip (scenes: the imbalanced set as it is, 40 vs 8)
SHOTS = {"camera": (2, 4, 8, 14), "arrow": (2, 4, 8, 16), "scenes": (2, 4, 8, 0)}
# Training recipes compared on every task (TrainConfig fields); "default" is what `vidtune train` does.
VARIANTS = {
    "default": {},
    "old_default": {"min_steps": 0, "select": "accuracy", "ema": 0.0, "balance": "loss"},
    "steps": {"min_steps": 300},
    "steps_loss": {"min_steps": 300, "select": "loss"},
    "steps_ema": {"min_steps": 300, "ema": 0.99, "select": "last"},
    "sampler": {"balance": "sampler"},
    "logit_adjust": {"balance": "logit_adjust"},
    "none_balance": {"balance": "none"},
    "robust": {"augment": "robust"},
    "flow": {"flow": True},
    "no_flow": {"flow": False},
    "reverse": {"reverse_pairs": True},
    "flow_reverse": {"flow": True, "reverse_pairs": True},
    "flow_reverse_steps": {"flow": True, "reverse_pairs": True, "min_steps": 300},
    "no_hflip": {"flip": False},  # end to end (tsm): a mirrored pan/rotation is the other class
}
# classes that are each other played backwards (--reverse-pairs), for the variants that use them
PAIRS = {"camera": "zoom_in:zoom_out,pan_left:pan_right,rotate_cw:rotate_ccw,fade_in:fade_out",
         "arrow": "forward:backward", "scenes": None}


def build(task: str, root: Path) -> Path:
    out = root / task
    if task == "camera":
        return realworld_data.camera_motion(out)
    if task == "arrow":
        return realworld_data.arrow_of_time(out)
    if task == "scenes":
        return realworld_data.scenes(out)
    raise SystemExit(f"unknown task {task!r}")


def run_cell(manifest: Path, out: Path, head: str, variant: str, shots: int, seed: int, cache: Path,
             pairs: str | None) -> dict:
    opts = dict(VARIANTS[variant])
    if opts.get("reverse_pairs"):
        opts["reverse_pairs"] = pairs
    cfg = TrainConfig(temporal=head, shots=shots or None, seed=seed, cache_dir=str(cache), **opts)
    t0 = time.perf_counter()
    res = train(manifest, out, cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    ev = evaluate(out, manifest, split="test", cache_dir=str(cache))
    metrics = json.loads((out / "metrics.json").read_text())
    return {"top1": ev["top1"], "mca": ev["mean_class_accuracy"], "n_test": ev["n"],
            "val_top1": res["val"].get("top1"), "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"],
            "steps": metrics.get("steps"), "train_top1": res["train"].get("top1"), "seconds": round(seconds, 1),
            "per_class": json.dumps({k: round(v["accuracy"], 3) for k, v in ev["per_class"].items()})}


def robustness(manifest: Path, run: Path, cache: Path) -> dict:
    from vidtune.runs.robustness import robustness_report

    rep = robustness_report(run, manifest, split="test", severities=[1, 3, 5], cache_dir=str(cache))
    worst = sorted(((c, round(statistics.mean(cells["top1"].values()), 3)) for c, cells in rep["results"].items()),
                   key=lambda x: x[1])[:3]
    return {"clean": rep["clean_top1"], "mPC": rep["mPC"], "rPC": rep["rPC"], "worst": worst}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        series = sorted({(r["head"], r["variant"]) for r in rows if r["task"] == task})
        for head, variant in series:
            pts = {}
            for r in rows:
                if (r["task"], r["head"], r["variant"]) == (task, head, variant):
                    pts.setdefault(int(r["shots"]), []).append(float(r["top1"]))
            ks = sorted(pts)
            means = [statistics.mean(pts[k]) for k in ks]
            errs = [statistics.pstdev(pts[k]) for k in ks]
            ax.errorbar(ks, means, yerr=errs, marker="o", capsize=3, label=f"{head} ({variant})")
        ax.set_title(task)
        ax.set_xlabel("training clips per class (K)")
        ax.set_ylabel("test top-1")
        ax.set_ylim(0, 1.02)
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summary(rows: list[dict]) -> list[str]:
    keys = sorted({(r["task"], r["head"], r["variant"], int(r["shots"])) for r in rows})
    lines = ["| task | head | recipe | K | test top-1 | mean class acc. | best epoch / run | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for task, head, variant, k in keys:
        cell = [r for r in rows if (r["task"], r["head"], r["variant"], int(r["shots"])) == (task, head, variant, k)]
        t = [float(r["top1"]) for r in cell]
        m = [float(r["mca"]) for r in cell]
        be = "/".join(f"{r['best_epoch']}:{r['epochs_run']}" for r in cell)
        lines.append(f"| {task} | {head} | {variant} | {k} | {statistics.mean(t):.3f} ± {statistics.pstdev(t):.3f} | "
                     f"{statistics.mean(m):.3f} ± {statistics.pstdev(m):.3f} | {be} | {len(cell)} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="camera,arrow,scenes")
    ap.add_argument("--heads", default="mean,attention,transformer")
    ap.add_argument("--variants", default="default")
    ap.add_argument("--shots", default=None, help="K values, 0 for all (default per task: camera 2,4,8,14; "
                                                   "arrow 2,4,8,16; scenes 2,4,8,0)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--robustness", action="store_true", help="vidtune robustness (severities 1,3,5) on scenes")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--tag", default="realworld", help="file name stem of the CSV/PNG")
    ap.add_argument("--combine", nargs="+", type=Path, default=None,
                    help="only merge these result CSVs into one table and plot (<out>/<tag>.png)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.combine:
        rows = [r for path in args.combine for r in csv.DictReader(open(path, encoding="utf-8"))]
        plot(rows, args.out / f"{args.tag}.png")
        print("\n".join(summary(rows)))
        return
    root = CACHE / "realworld"
    cache = CACHE / "realworld-features"
    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out / f"{args.tag}.csv"
    for task in args.tasks.split(","):
        t0 = time.perf_counter()
        manifest = build(task, root)
        print(f"[{task}] data ready in {time.perf_counter() - t0:.0f}s: {manifest}", flush=True)
        shots = [int(k) for k in args.shots.split(",")] if args.shots else SHOTS[task]
        for head in args.heads.split(","):
            for variant in args.variants.split(","):
                for k in shots:
                    for seed in range(args.seeds):
                        out = CACHE / "realworld-runs" / f"{task}-{head}-{variant}-k{k}-s{seed}"
                        r = run_cell(manifest, out, head, variant, k, seed, cache, PAIRS[task])
                        row = {"task": task, "head": head, "variant": variant, "shots": k, "seed": seed, **r}
                        rows.append(row)
                        print(f"[{task}] {head:11s} {variant:12s} K={k:2d} seed {seed}: top-1 {r['top1']:.3f} "
                              f"mca {r['mca']:.3f} (best epoch {r['best_epoch']}/{r['epochs_run']}, "
                              f"{r['steps']} steps, train {r['train_top1']:.2f}, {r['seconds']:.0f}s)", flush=True)
                        _write(rows, csv_path)
                if args.robustness and task == "scenes":
                    out = CACHE / "realworld-runs" / f"{task}-{head}-{variant}-k{shots[-1]}-s0"
                    rb = robustness(manifest, out, cache)
                    print(f"[{task}] {head} {variant} K={shots[-1]} robustness: clean {rb['clean']:.3f} "
                          f"mPC {rb['mPC']:.3f} rPC {rb['rPC']:.3f}; weakest {rb['worst']}", flush=True)
    plot(rows, args.out / f"{args.tag}.png")
    print("\n".join(summary(rows)))


def _write(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
