"""Label efficiency on real footage: which clips to label (``vidtune suggest``), which labels are wrong
(``vidtune mistakes``), the unlabelled pool and ``--temporal auto``.

Tasks (bench/realworld_data.py): ``camera`` (camera motion over real photos, 8 classes, test photos never
seen; with the optical-flow cues, since appearance says nothing about the class), ``scenes`` (which real
video a clip is from, 7 classes, corrupted test clips; one source is 45% of the pool) and ``imbalanced``
(the scenes pool rebuilt so that one source, vtest, is 60% of it). The pool is each task's train+val
clips (labels hidden until a strategy "buys" them); the test split scores.

Parts:

1. Learning curves: labels spent vs test top-1, in rounds, for ``random``, ``cold`` (cold-start suggest:
   typicality x diversity on backbone embeddings, no model) and ``run`` (the first round cold, then each
   round suggest with the current head: its uncertainty x diversity, anchored on what is labelled). After
   every round a head is trained on the labels bought so far and scored on the test split. The head is
   the logistic-regression head of ``vidtune mistakes`` on each clip's pooled cached features; the
   selection is :func:`vidtune.labels.suggest.rank`, the code ``vidtune suggest`` runs. Seeds differ in
   the pool (a seeded 90% of it) and in random's draws.
2. Wrong labels: flip 10% of the pool's labels (seeded), run :func:`vidtune.labels.mistakes.find_mistakes`
   on the noisy manifest (grouped folds: the manifests have a group column), and report precision among
   the top n (n = flipped) and cleanlab's own flags.
3. Unlabelled pool (``bench/label_semi.py``) and 4. ``--temporal auto`` (``bench/temporal_auto.py``):
   run when those scripts are present (their ``main(argv)``).

    python bench/label_efficiency.py --parts 1,2            # writes bench/results/label_efficiency*
    python bench/label_efficiency.py --parts 1 --tasks scenes --seeds 3

Features come from the feature cache (``bench/.cache/features``): a rerun decodes nothing.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import numpy as np  # noqa: E402
import realworld_data  # noqa: E402
from _common import CACHE  # noqa: E402

from vidtune.data.manifest import load_dataset  # noqa: E402
from vidtune.labels.features import BackboneOptions, backbone_features, l2n  # noqa: E402
from vidtune.labels.mistakes import find_mistakes, fit_linear_head  # noqa: E402
from vidtune.labels.suggest import rank, reduce  # noqa: E402

RESULTS = HERE / "results"
FEATURES = CACHE / "features"
TASKS = {"camera": True, "scenes": False, "imbalanced": False}  # task -> flow cues
PER_CLASS = (1, 2, 3, 4, 6, 8)  # labels per class (on average) after each round
STRATEGIES = ("random", "cold", "run")


def build(task: str) -> Path:
    root = CACHE / "realworld"
    if task == "camera":
        return realworld_data.camera_motion(root / "camera_motion")
    if task == "scenes":
        return realworld_data.scenes(root / "scenes")
    if task == "imbalanced":  # one source (vtest) 60% of the pool: 9x the train/val clips of the others
        return realworld_data.scenes(root / "scenes_imbalanced", imbalance=9)
    raise SystemExit(f"unknown task {task!r}; known: {', '.join(TASKS)}")


class Task:
    """A task's pool and test clips with their cached features."""

    def __init__(self, name: str, workers: int | None):
        self.name = name
        self.manifest = build(name)
        items = load_dataset(self.manifest)
        opts = BackboneOptions(flow=TASKS[name], frames=8, cache_dir=str(FEATURES), workers=workers)
        t0 = time.perf_counter()
        feats = backbone_features(items, opts)
        self.seconds = time.perf_counter() - t0
        if feats.skipped:
            raise SystemExit(f"{name}: unreadable clips {feats.skipped[:3]}")
        self.opts = opts
        self.items = [items[i] for i in feats.index]
        self.classes = sorted({it.label for it in self.items})
        self.y = np.array([self.classes.index(it.label) for it in self.items])
        self.x = feats.pooled()  # what the head reads
        self.motion = 2 * feats.flow_channels
        self.emb = reduce(feats.embeddings())  # what cold start compares (backbone appearance)
        self.pool = np.array([i for i, it in enumerate(self.items) if it.split in ("train", "val", None)])
        self.test = np.array([i for i, it in enumerate(self.items) if it.split == "test"])
        counts = np.bincount(self.y[self.pool], minlength=len(self.classes))
        self.major_share = float(counts.max() / counts.sum())


def accuracy(task: Task, labelled: list[int]) -> float:
    ys = task.y[labelled]
    if len(set(ys.tolist())) < 2:
        return float(np.mean(task.y[task.test] == ys[0]))
    head = fit_linear_head(task.x[labelled], ys, motion=task.motion)
    return float(np.mean(head.predict(task.x[task.test]) == task.y[task.test]))


def run_embedding(task: Task, labelled: list[int], pool: np.ndarray) -> np.ndarray:
    """The head's input space (standardised on the labelled clips), L2-normalised: how the run sees clips."""
    mu, sd = task.x[labelled].mean(0), task.x[pool].std(0) + 1e-6
    z = (task.x - mu) / sd
    if task.motion:  # the motion block weighs as much as the appearance block, as in the head
        z[:, -task.motion:] *= np.sqrt((z.shape[1] - task.motion) / task.motion)
    return l2n(z)


def curve(task: Task, strategy: str, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 7])
    pool = np.sort(rng.choice(task.pool, size=int(round(0.9 * len(task.pool))), replace=False))
    budgets = [b * len(task.classes) for b in PER_CLASS]
    budgets = [min(b, len(pool)) for b in budgets]
    rows = []
    labelled: list[int] = []
    if strategy == "random":
        order = list(rng.permutation(pool))
    elif strategy == "cold":
        picks, _ = rank(task.emb[pool], budgets[-1])
        order = [int(pool[j]) for j in picks]
    for r, b in enumerate(budgets):
        if strategy in ("random", "cold"):
            labelled = [int(i) for i in order[:b]]
        elif r == 0:  # no model yet: the cold start
            picks, _ = rank(task.emb[pool], b)
            labelled = [int(pool[j]) for j in picks]
        else:
            have = set(labelled)
            rest = np.array([i for i in pool if i not in have])
            ys = task.y[labelled]
            emb = run_embedding(task, labelled, pool)
            if len(set(ys.tolist())) < 2:
                probs = None
            else:
                head = fit_linear_head(task.x[labelled], ys, motion=task.motion)
                p = head.predict_proba(task.x[rest])
                probs = np.zeros((len(rest), len(task.classes)))
                probs[:, head.classes_] = p
            picks, _ = rank(emb[rest], b - len(labelled), probs=probs, anchors=emb[labelled])
            labelled = labelled + [int(rest[j]) for j in picks]
        rows.append({"task": task.name, "strategy": strategy, "seed": seed, "labels": len(labelled),
                     "per_class": round(len(labelled) / len(task.classes), 2),
                     "classes_covered": len(set(task.y[labelled].tolist())),
                     "top1": round(accuracy(task, labelled), 4)})
    return rows


def part1(tasks: list[Task], seeds: int) -> list[dict]:
    rows = []
    for task in tasks:
        for strategy in STRATEGIES:
            for seed in range(seeds):
                rows += curve(task, strategy, seed)
        _print_curves([r for r in rows if r["task"] == task.name])
    return rows


def _stats(vals: list[float]) -> tuple[float, float]:
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _print_curves(rows: list[dict]) -> None:
    task = rows[0]["task"]
    print(f"\n{task}: test top-1 (mean ± sd over seeds) by labels per class")
    print(f"  {'strategy':<8}" + "".join(f"{pc:>14}" for pc in PER_CLASS))
    for s in STRATEGIES:
        cells = []
        for pc in PER_CLASS:
            vals = [r["top1"] for r in rows if r["strategy"] == s and r["per_class"] == pc]
            m, sd = _stats(vals) if vals else (float("nan"), 0.0)
            cells.append(f"{m:.3f}±{sd:.3f}")
        print(f"  {s:<8}" + "".join(f"{c:>14}" for c in cells))


def targets(rows: list[dict]) -> list[dict]:
    """Does suggest at 4 labels per class reach random's accuracy at 8 (half the labels)?"""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        def at(strategy, pc, task=task):
            return _stats([r["top1"] for r in rows if r["task"] == task and r["strategy"] == strategy
                           and r["per_class"] == pc])
        rnd8 = at("random", 8)
        for s in ("cold", "run"):
            m4 = at(s, 4)
            first = next((pc for pc in PER_CLASS if at(s, pc)[0] >= rnd8[0]), None)
            out.append({"task": task, "strategy": s, "random_at_8": round(rnd8[0], 4), "at_4": round(m4[0], 4),
                        "at_4_sd": round(m4[1], 4), "reaches_random_8_at": first, "target_met": m4[0] >= rnd8[0]})
    return out


def part2(tasks: list[Task], seeds: int, tmp: Path) -> list[dict]:
    rows = []
    for task in tasks:
        for seed in range(seeds):
            rng = np.random.default_rng([seed, 11])
            pool = task.pool
            n = int(round(0.1 * len(pool)))
            flip = set(rng.choice(pool, size=n, replace=False).tolist())
            path = tmp / f"{task.name}_noisy_{seed}.csv"
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "label", "group"])
                for i in pool:
                    it = task.items[i]
                    lab = it.label
                    if i in flip:
                        lab = task.classes[int(rng.choice([c for c in range(len(task.classes)) if c != task.y[i]]))]
                    w.writerow([str(it.path), lab, it.group or ""])
            flipped = {str(task.items[i].path) for i in flip}
            t0 = time.perf_counter()
            rep = find_mistakes(path, flow=task.opts.flow, frames=task.opts.frames, cache_dir=task.opts.cache_dir,
                                workers=task.opts.workers, seed=seed)
            seconds = time.perf_counter() - t0
            top = [m.path for m in rep.ranked[:n]]
            hit = sum(p in flipped for p in top)
            issues = rep.issues
            rows.append({"task": task.name, "seed": seed, "pool": len(pool), "flipped": n,
                         "precision_at_n": round(hit / n, 4),
                         "flagged": len(issues), "flagged_precision": round(
                             sum(m.path in flipped for m in issues) / len(issues), 4) if issues else None,
                         "flagged_recall": round(sum(m.path in flipped for m in issues) / n, 4),
                         "estimated_noise": round(rep.estimated_noise, 4), "folds": rep.folds,
                         "seconds": round(seconds, 1)})
            print(f"{task.name} seed {seed}: precision@{n} {hit / n:.3f}; cleanlab flagged {len(issues)} "
                  f"(estimated noise {rep.estimated_noise:.3f}); {seconds:.1f} s")
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for s, colour in zip(STRATEGIES, ("tab:grey", "tab:blue", "tab:red")):
            xs, ms, sds = [], [], []
            for pc in PER_CLASS:
                vals = [r["top1"] for r in rows if r["task"] == task and r["strategy"] == s and r["per_class"] == pc]
                if vals:
                    m, sd = _stats(vals)
                    xs.append(pc)
                    ms.append(m)
                    sds.append(sd)
            ms, sds = np.array(ms), np.array(sds)
            label = {"random": "random", "cold": "suggest (cold start)", "run": "suggest with the run"}[s]
            ax.plot(xs, ms, marker="o", color=colour, label=label)
            ax.fill_between(xs, ms - sds, ms + sds, color=colour, alpha=0.15)
        ax.set_title(task)
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test top-1")
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def markdown(summary: dict, rows: list[dict], rows2: list[dict]) -> str:
    """The tables of bench/results/label_efficiency.md (and docs/labelling.md)."""
    lines = [f"`{summary['command']}` ({summary['seeds']} seeds; mean ± sd)", ""]
    if rows:
        lines += ["Test top-1 by labels spent per class:", "",
                  "| task | strategy | " + " | ".join(str(pc) for pc in PER_CLASS) + " |",
                  "|---|---|" + "---:|" * len(PER_CLASS)]
        for task in dict.fromkeys(r["task"] for r in rows):
            for s in STRATEGIES:
                cells = []
                for pc in PER_CLASS:
                    m, sd = _stats([r["top1"] for r in rows if r["task"] == task and r["strategy"] == s
                                    and r["per_class"] == pc])
                    cells.append(f"{m:.3f} ± {sd:.3f}")
                lines.append(f"| {task} | {s} | " + " | ".join(cells) + " |")
        lines += ["", "| task | strategy | top-1 at 4/class | random at 8/class | half the labels? | "
                      "reaches random@8 at (per class) |", "|---|---|---:|---:|---|---:|"]
        for t in summary["part1"]["targets"]:
            lines.append(f"| {t['task']} | {t['strategy']} | {t['at_4']:.3f} ± {t['at_4_sd']:.3f} | "
                         f"{t['random_at_8']:.3f} | {'yes' if t['target_met'] else 'no'} | "
                         f"{t['reaches_random_8_at'] or 'not reached'} |")
    if rows2:
        lines += ["", "Wrong labels (10% of the pool flipped):", "",
                  "| task | pool | flipped | precision among top n | cleanlab flagged | flagged precision | "
                  "flagged recall | estimated noise |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for task in dict.fromkeys(r["task"] for r in rows2):
            rs = [r for r in rows2 if r["task"] == task]

            def ms(key, rs=rs):
                vals = [r[key] for r in rs if r[key] is not None]
                m, sd = _stats(vals) if vals else (float("nan"), 0.0)
                return f"{m:.3f} ± {sd:.3f}"
            lines.append(f"| {task} | {rs[0]['pool']} | {rs[0]['flipped']} | {ms('precision_at_n')} | "
                         f"{ms('flagged')} | {ms('flagged_precision')} | {ms('flagged_recall')} | "
                         f"{ms('estimated_noise')} |")
    return "\n".join(lines) + "\n"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k in ("task", "strategy"):
                continue
            try:
                r[k] = None if v == "" else (int(v) if v.lstrip("-").isdigit() else float(v))
            except ValueError:
                pass
    return rows


def combine(names: list[str]) -> None:
    """Merge the results of runs on separate tasks (``label_efficiency_<name>.{csv,json}`` and
    ``label_efficiency_mistakes_<name>.csv``) into the combined table, plot and summary."""
    rows, rows2, summary = [], [], {"command": [], "tasks": {}, "seeds": None, "part1": {"targets": []}}
    for n in names:
        rows += _read_csv(RESULTS / f"label_efficiency_{n}.csv")
        m = RESULTS / f"label_efficiency_mistakes_{n}.csv"
        if m.exists():
            rows2 += _read_csv(m)
        js = json.loads((RESULTS / f"label_efficiency_{n}.json").read_text())
        summary["command"].append(js["command"])
        summary["tasks"].update(js["tasks"])
        summary["seeds"] = js["seeds"]
    summary["part1"]["targets"] = targets(rows)
    summary["command"] = "; ".join(summary["command"])
    _write_csv(rows, RESULTS / "label_efficiency.csv")
    _write_csv(rows2, RESULTS / "label_efficiency_mistakes.csv")
    plot(rows, RESULTS / "label_efficiency.png")
    (RESULTS / "label_efficiency.json").write_text(json.dumps(summary, indent=1) + "\n")
    (RESULTS / "label_efficiency.md").write_text(markdown(summary, rows, rows2))


def external(part: int, script: str, argv: list[str]) -> int:
    """Parts 3 and 4 live in their own scripts; run one when it is there."""
    path = HERE / f"{script}.py"
    if not path.exists():
        print(f"part {part}: {path.name} is not in bench/ (not run)")
        return 0
    spec = importlib.util.spec_from_file_location(script, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return int(mod.main(argv) or 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="1,2", help="comma-separated parts to run (1,2,3,4)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="parts 1 and 2: " + ", ".join(TASKS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--mistakes-seeds", type=int, default=None, help="part 2 seeds (default: --seeds)")
    ap.add_argument("--workers", type=int, default=None, help="decoding processes for the features")
    ap.add_argument("--part-args", default="", help="extra arguments passed to the scripts of parts 3 and 4")
    ap.add_argument("--combine", default=None, metavar="A,B",
                    help="only merge the saved results label_efficiency_A.* and _B.* into the combined files")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.combine:
        combine([n.strip() for n in args.combine.split(",")])
        return 0
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    code = 0
    if parts & {1, 2}:
        rows, rows2 = [], []
        tasks = []
        for name in args.tasks.split(","):
            t = Task(name.strip(), args.workers)
            print(f"{t.name}: pool {len(t.pool)} clips ({len(t.classes)} classes, largest {t.major_share:.0%}), "
                  f"test {len(t.test)}; features {t.seconds:.1f} s")
            tasks.append(t)
        summary = {"command": "python bench/label_efficiency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "tasks": {t.name: {"pool": len(t.pool), "test": len(t.test), "classes": len(t.classes),
                                      "largest_share": round(t.major_share, 3), "flow": TASKS[t.name]}
                             for t in tasks}, "seeds": args.seeds}
        if 1 in parts:
            t0 = time.perf_counter()
            rows = part1(tasks, args.seeds)
            _write_csv(rows, RESULTS / "label_efficiency.csv")
            plot(rows, RESULTS / "label_efficiency.png")
            summary["part1"] = {"targets": targets(rows), "seconds": round(time.perf_counter() - t0, 1)}
            for t in summary["part1"]["targets"]:
                print(f"{t['task']} {t['strategy']}: top-1 at 4/class {t['at_4']:.3f}±{t['at_4_sd']:.3f} vs random "
                      f"at 8/class {t['random_at_8']:.3f} -> target {'met' if t['target_met'] else 'NOT met'} "
                      f"(reaches random@8 at {t['reaches_random_8_at']} per class)")
        if 2 in parts:
            tmp = CACHE / "label_efficiency"
            tmp.mkdir(parents=True, exist_ok=True)
            rows2 = part2(tasks, args.mistakes_seeds or args.seeds, tmp)
            _write_csv(rows2, RESULTS / "label_efficiency_mistakes.csv")
            summary["part2"] = {t.name: {
                "precision_at_n": _stats([r["precision_at_n"] for r in rows2 if r["task"] == t.name]),
                "flagged_recall": _stats([r["flagged_recall"] for r in rows2 if r["task"] == t.name])}
                for t in tasks}
        (RESULTS / "label_efficiency.json").write_text(json.dumps(summary, indent=1) + "\n")
        (RESULTS / "label_efficiency.md").write_text(markdown(summary, rows, rows2))
    extra = args.part_args.split()
    if 3 in parts:
        code |= external(3, "label_semi", extra)
    if 4 in parts:
        code |= external(4, "temporal_auto", extra)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
