"""Robust training: clean top-1, mPC and rPC of a model trained without vs with ``--augment robust``.

On a sample task (``vidtune sample-data``: a training set and a held-out test set from another
seed), trains the same model twice (identical options and seed, the second adding
``--augment robust``), then runs ``vidtune robustness`` on the test set for both and prints them side
by side, with the per-corruption mean top-1. Target (issue 5): rPC +10 points or more at no more
than 2 points of clean top-1. If this vidtune has no ``--augment robust`` yet, only the baseline is
measured and the script says so.

    python bench/robustness.py [--kind appearance] [--backbone efficientnet_lite0] [--severities 1,3,5]
                               [--corruptions all] [--per-class 20] [--test-per-class 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE  # noqa: E402


def vidtune(*argv, json_out: bool = True) -> dict:
    cmd = [sys.executable, "-m", "vidtune", *map(str, argv)] + (["--json"] if json_out else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout) if json_out else {"stdout": proc.stdout}


def augment_robust_available() -> bool:
    proc = subprocess.run([sys.executable, "-m", "vidtune", "train", "--help"], capture_output=True, text=True)
    return "--augment" in proc.stdout and "robust" in proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="appearance", help="sample task: appearance | motion")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--test-per-class", type=int, default=5)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--severities", default="1,3,5", help="1-5 for the full benchmark grid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--train-args", default="", help="extra options for both trainings, e.g. '--epochs 20'")
    ap.add_argument("--out", type=Path, default=CACHE / "robustness", help="working folder (data, runs, reports)")
    args = ap.parse_args()

    out = args.out
    data = out / f"data_{args.kind}_{args.classes}x{args.per_class}_s{args.seed}"
    test = out / f"test_{args.kind}_{args.classes}x{args.test_per_class}_s{args.seed + 1}"
    for folder, per_class, seed in ((data, args.per_class, args.seed), (test, args.test_per_class, args.seed + 1)):
        if not folder.exists():
            vidtune("sample-data", folder, "--kind", args.kind, "--classes", args.classes, "--per-class", per_class,
                    "--seed", seed, "--quiet")
    cache = out / "features"
    common = ["--backbone", args.backbone, "--seed", args.seed, "--cache-dir", cache, "--quiet",
              *args.train_args.split()]
    if args.workers is not None:
        common += ["--workers", args.workers]
    variants = [("baseline", [])]
    if augment_robust_available():
        variants.append(("--augment robust", ["--augment", "robust"]))
    else:
        print("note: this vidtune has no `train --augment robust` yet; measuring the baseline only\n")

    results = {}
    for name, extra in variants:
        run = out / ("run_" + ("robust" if extra else "baseline"))
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.perf_counter()
        trained = vidtune("train", data, "--out", run, *common, *extra)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        rep = vidtune("robustness", run, test, "--corruptions", args.corruptions, "--severities", args.severities,
                      "--cache-dir", cache, "--quiet", "--plot", out / f"heatmap_{run.name}.png",
                      *(["--workers", args.workers] if args.workers is not None else []))
        t_rob = time.perf_counter() - t0
        results[name] = {"report": rep, "train_s": t_train, "robustness_s": t_rob, "val": trained["val"]["top1"]}
        (out / f"report_{run.name}.json").write_text(json.dumps(rep, indent=1))

    pct = lambda x: "-" if x is None else f"{100 * x:5.1f}%"  # noqa: E731
    print(f"task: sample-data --kind {args.kind}, {args.classes} classes, {args.per_class}/class training, "
          f"{args.test_per_class}/class test (seed {args.seed + 1}); backbone {args.backbone}; "
          f"corruptions {args.corruptions}, severities {args.severities}\n")
    print(f"{'model':<18} {'clean top-1':>11} {'mPC':>8} {'rPC':>8} {'train s':>8} {'report s':>9}")
    for name, r in results.items():
        rep = r["report"]
        print(f"{name:<18} {pct(rep['clean_top1']):>11} {pct(rep['mPC']):>8} {pct(rep['rPC']):>8} "
              f"{r['train_s']:>8.0f} {r['robustness_s']:>9.0f}")
    first = next(iter(results.values()))["report"]
    names = first["corruptions"]
    print("\nmean top-1 over severities, per corruption:")
    print(f"{'corruption':<16}" + "".join(f"{n:>18}" for n in results))
    for c in names:
        print(f"{c:<16}" + "".join(f"{pct(r['report']['results'][c]['mPC']):>18}" for r in results.values()))
    if len(results) == 2:
        base, rob = (r["report"] for r in results.values())
        d_rpc = 100 * ((rob["rPC"] or 0) - (base["rPC"] or 0))
        d_clean = 100 * (rob["clean_top1"] - base["clean_top1"])
        d_mpc = 100 * (rob["mPC"] - base["mPC"])
        ok = d_rpc >= 10 and d_clean >= -2
        print(f"\n--augment robust: rPC {d_rpc:+.1f} points, mPC {d_mpc:+.1f} points, clean top-1 {d_clean:+.1f} "
              f"points -> target (rPC +10, clean -2 at most) {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
