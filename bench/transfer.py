"""Transfer benchmark: temporal models x initialisations x labelled videos per class.

Two target tasks from the built-in sample generator, each with a *source* task of other classes:

* motion: target classes left/right/up/down/clockwise/anticlockwise differ only in frame order;
  the source task is approach/recede/zoom_in/zoom_out/appear/disappear (also order-only).
* appearance: target classes star/cross/triangle/polka (object shape and texture); the source task
  is ball/checkerboard/stripes/ring.

For each task, head (mean, attention, transformer on frozen cached features; tsm fine-tuned end to
end) and initialisation (random weights, ImageNet, and ``--init`` from a vidtune run trained on the
source task with the same head), the target is trained on K = 2, 4, 8, 16 videos per class
(``--shots``, nested seeded choices) and scored on a held-out test set from another generator
seed. Every cell uses the same seeded data; frozen-feature cells are repeated over ``--seeds``.
Attention and transformer heads run on one vector per frame and on 3x3 space-time token grids, and the
feature pass is timed and the cache size measured for both grids.

Writes ``bench/results/transfer.csv`` and ``transfer.png`` and prints a summary table.

    python bench/transfer.py                      # everything (about an hour on 2 idle cores)
    python bench/transfer.py --quick              # K=4,16, one seed, no tsm (about 10 minutes)
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE  # noqa: E402

from vidtune.data.sample import write_sample_dataset  # noqa: E402
from vidtune.runs.inference import evaluate  # noqa: E402
from vidtune.train.config import TrainConfig  # noqa: E402
from vidtune.train.trainer import train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {
    "motion": {"kind": "motion", "target": ["left", "right", "up", "down", "clockwise", "anticlockwise"],
               "source": ["approach", "recede", "zoom_in", "zoom_out", "appear", "disappear"]},
    "appearance": {"kind": "appearance", "target": ["star", "cross", "triangle", "polka"],
                   "source": ["ball", "checkerboard", "stripes", "ring"]},
}
INITS = ("random", "imagenet", "source")


def make_data(root: Path, task: str, pool: int, test: int) -> dict[str, Path]:
    spec = TASKS[task]
    out = {}
    for name, classes, per_class, seed in (("train", spec["target"], pool, 0), ("test", spec["target"], test, 1),
                                           ("source", spec["source"], pool, 2)):
        d = root / task / name
        marker = d / ".complete"
        if not marker.exists():
            shutil.rmtree(d, ignore_errors=True)
            write_sample_dataset(d, classes=classes, per_class=per_class, seed=seed, kind=spec["kind"])
            marker.write_text("")
        out[name] = d
    return out


def cache_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.safetensors"))


def cell_epochs(n_train: int, batch: int, strategy: str) -> int:
    """About 300 optimiser steps for heads on cached features (few-shot sets are a handful of
    batches per epoch), 12 epochs end to end."""
    if strategy != "linear":
        return 12
    return max(40, math.ceil(300 / math.ceil(n_train / batch)))


def run_cell(data: dict, out: Path, head: str, grid: int, init: str, shots: int, seed: int,
             source_runs: dict, n_classes: int, cache_dir: Path, flip: bool) -> dict:
    strategy = "partial" if head == "tsm" else "linear"
    cfg = TrainConfig(temporal=head, grid=None if init == "source" else grid, strategy=strategy, shots=shots,
                      val_split=0.0, seed=seed, pretrained=init != "random", cache_dir=str(cache_dir),
                      init=str(source_runs[(head, grid)]) if init == "source" else None,
                      epochs=cell_epochs(shots * n_classes, 16, strategy), batch_size=16 if strategy == "linear" else 8,
                      flip=flip)
    t0 = time.perf_counter()
    train(data["train"], out, cfg)
    seconds = time.perf_counter() - t0
    m = evaluate(out, data["test"], split="all", cache_dir=str(cache_dir))
    shutil.rmtree(out, ignore_errors=True)
    return {"top1": m["top1"], "mean_class_accuracy": m["mean_class_accuracy"],
            "direction_accuracy": direction_accuracy(m), "train_seconds": round(seconds, 1)}


def direction_accuracy(m: dict) -> float | None:
    """Motion tasks: of the clips put in the right time-reversed pair (left/right, ...), the share
    given the right direction. An order-blind model scores 50% here whatever else it gets right."""
    from vidtune.data.sample import motion_pairs

    labels, cm = m["labels"], m["confusion"]
    right = swapped = 0
    for a, b in motion_pairs(labels):
        i, j = labels.index(a), labels.index(b)
        right += cm[i][i] + cm[j][j]
        swapped += cm[i][j] + cm[j][i]
    return round(right / (right + swapped), 4) if right + swapped else None


def source_run(data: dict, out: Path, head: str, grid: int, seed: int, cache_dir: Path, flip: bool) -> Path:
    if (out / "model.safetensors").exists():
        return out
    strategy = "partial" if head == "tsm" else "linear"
    cfg = TrainConfig(temporal=head, grid=grid, strategy=strategy, val_split=0.0, seed=seed,
                      cache_dir=str(cache_dir), epochs=12 if strategy != "linear" else 60,
                      batch_size=16 if strategy == "linear" else 8, flip=flip)
    train(data["source"], out, cfg)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows}, key=list(TASKS).index)
    inits = [i for i in INITS if any(r["init"] == i for r in rows)]
    fig, axes = plt.subplots(len(tasks), len(inits), figsize=(4.2 * len(inits), 3.4 * len(tasks)), squeeze=False,
                             sharey=True)
    for ti, task in enumerate(tasks):
        for ii, init in enumerate(inits):
            ax = axes[ti][ii]
            sel = [r for r in rows if r["task"] == task and r["init"] == init]
            for model in sorted({(r["head"], r["grid"]) for r in sel}):
                pts = sorted({r["shots"] for r in sel if (r["head"], r["grid"]) == model})
                ys = [_mean([r["top1"] for r in sel if (r["head"], r["grid"]) == model and r["shots"] == k]) for k in pts]
                ax.plot(pts, ys, marker="o", label=model[0] + (f" {model[1]}x{model[1]}" if model[1] > 1 else ""))
            ax.axhline(1 / len(TASKS[task]["target"]), color="grey", ls="--", lw=1, label="chance")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{task}: {init} init")
            ax.set_xlabel("labelled videos per class (K)")
            ax.set_ylim(0, 1.02)
            if ii == 0:
                ax.set_ylabel("test top-1")
            if ti == 0 and ii == len(inits) - 1:
                ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="motion,appearance")
    ap.add_argument("--heads", default="mean,attention,transformer,tsm")
    ap.add_argument("--grids", default="1,3", help="token grids for attention/transformer")
    ap.add_argument("--inits", default=",".join(INITS))
    ap.add_argument("--shots", default="2,4,8,16")
    ap.add_argument("--tsm-shots", default="4,16", help="K values for tsm (end-to-end training is slow on CPU)")
    ap.add_argument("--tsm-inits", default="imagenet,source")
    ap.add_argument("--seeds", type=int, default=3, help="repeats of each frozen-feature cell")
    ap.add_argument("--pool", type=int, default=16, help="training videos per class generated (max K)")
    ap.add_argument("--test", type=int, default=10, help="test videos per class")
    ap.add_argument("--quick", action="store_true", help="K=4,16, one seed, no tsm")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--combine", nargs="+", type=Path, default=None,
                    help="only merge these transfer.csv files (e.g. tasks run in parallel) into --out's CSV, PNG "
                         "and summary")
    args = ap.parse_args()
    if args.combine:
        rows = []
        for path in args.combine:
            with open(path, newline="") as fh:
                for r in csv.DictReader(fh):
                    for k in ("grid", "shots", "seed"):
                        r[k] = int(r[k])
                    for k in ("top1", "mean_class_accuracy", "train_seconds"):
                        r[k] = float(r[k])
                    r["direction_accuracy"] = float(r["direction_accuracy"]) if r["direction_accuracy"] else None
                    rows.append(r)
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "transfer.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        plot(rows, args.out / "transfer.png")
        _summary(rows)
        return
    logging.basicConfig(level=logging.WARNING)
    if args.quick:
        args.shots, args.seeds, args.heads = "4,16", 1, args.heads.replace(",tsm", "")
    shots = [int(k) for k in args.shots.split(",")]
    grids = [int(g) for g in args.grids.split(",")]
    heads = args.heads.split(",")
    inits = args.inits.split(",")
    root = CACHE / "transfer"
    cache_dir = root / "features"
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    grid_costs = []

    for task in args.tasks.split(","):
        data = make_data(root, task, args.pool, args.test)
        n_classes = len(TASKS[task]["target"])
        flip = TASKS[task]["kind"] != "motion"  # a mirrored "left" clip is a "right" clip
        # what a token grid costs: feature pass time and cache bytes, same videos, grid 1 vs 2
        for g in grids:
            before = cache_size(cache_dir) if cache_dir.exists() else 0
            t0 = time.perf_counter()
            warm = root / "runs" / f"{task}-warm-g{g}"
            train(data["train"], warm, TrainConfig(temporal="mean", grid=g, val_split=0.0, epochs=1,
                                                   cache_dir=str(cache_dir)))
            evaluate(warm, data["test"], split="all", cache_dir=str(cache_dir))
            shutil.rmtree(warm, ignore_errors=True)
            grid_costs.append({"task": task, "grid": g, "seconds": round(time.perf_counter() - t0, 1),
                               "cache_mb": round((cache_size(cache_dir) - before) / 2**20, 1)})
            print(f"[{task}] grid {g}: feature pass {grid_costs[-1]['seconds']} s, cache {grid_costs[-1]['cache_mb']} MB",
                  flush=True)
        models = [(h, g) for h in heads for g in (grids if h in ("attention", "transformer") else [1])]
        sources = {}
        if "source" in inits:
            for h, g in models:
                if h == "tsm" and "source" not in args.tsm_inits.split(","):
                    continue
                sources[(h, g)] = source_run(data, root / "runs" / f"{task}-source-{h}-g{g}", h, g, 0, cache_dir, flip)
        for h, g in models:
            for init in inits:
                if h == "tsm" and init not in args.tsm_inits.split(","):
                    continue
                ks = [int(k) for k in args.tsm_shots.split(",")] if h == "tsm" else shots
                for k in ks:
                    for seed in range(1 if h == "tsm" else args.seeds):
                        r = run_cell(data, root / "runs" / f"{task}-cell", h, g, init, k, seed, sources, n_classes, cache_dir, flip)
                        row = {"task": task, "head": h, "grid": g, "init": init, "shots": k, "seed": seed, **r}
                        rows.append(row)
                        dirn = f", direction {r['direction_accuracy']:.3f}" if r["direction_accuracy"] is not None else ""
                        print(f"[{task}] {h:<11} grid {g} {init:<8} K={k:<2} seed {seed}: top-1 {r['top1']:.3f}{dirn} "
                              f"({r['train_seconds']} s)", flush=True)
                        _write(rows, grid_costs, args.out)
    _write(rows, grid_costs, args.out)
    plot(rows, args.out / "transfer.png")
    _summary(rows)


def _write(rows, grid_costs, out: Path) -> None:
    if rows:
        with open(out / "transfer.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    with open(out / "transfer_grid_cost.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["task", "grid", "seconds", "cache_mb"])
        w.writeheader()
        w.writerows(grid_costs)


def _summary(rows) -> None:
    shots = sorted({r["shots"] for r in rows})
    print("\n| task | head | grid | init | " + " | ".join(f"K={k}" for k in shots) + " |")
    print("|---|---|---|---|" + "---|" * len(shots))
    keys = sorted({(r["task"], r["head"], r["grid"], r["init"]) for r in rows},
                  key=lambda t: (list(TASKS).index(t[0]), t[1], t[2], INITS.index(t[3])))
    for task, head, grid, init in keys:
        cells = []
        for k in shots:
            v = [r["top1"] for r in rows if (r["task"], r["head"], r["grid"], r["init"], r["shots"]) ==
                 (task, head, grid, init, k)]
            cells.append(f"{100 * _mean(v):.0f}%" if v else "-")
        print(f"| {task} | {head} | {grid} | {init} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
