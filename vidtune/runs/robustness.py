"""Robustness report: accuracy of a trained run under every corruption and severity.

Definitions follow the video robustness benchmarks (Mini Kinetics-C, UCF101-C/P; after
Hendrycks & Dietterich's ImageNet-C and Michaelis et al.'s mPC/rPC):

- ``P_clean``: top-1 on the clean clips;
- ``P_{c,s}``: top-1 under corruption ``c`` at severity ``s``;
- ``mPC = 1/N_c * sum_c 1/N_s * sum_s P_{c,s}`` (mean performance under corruption);
- ``rPC = mPC / P_clean`` (relative robustness: 1.0 means no loss at all).

Every pass goes through :func:`vidtune.runs.inference.run_clips` with the corruption as its
``frame_op``, so it works for every model kind the trainer builds, and corrupted features are
cached under their own key (a rerun of the report decodes nothing).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vidtune.data.corruptions import SEVERITIES, get_corruption, parse_corruptions
from vidtune.data.manifest import load_dataset
from vidtune.errors import DatasetError, VidtuneError
from vidtune.progress import NullProgress, Progress
from vidtune.runs.metrics import classification_metrics

log = logging.getLogger(__name__)


def summarize(clean_top1: float | None, top1: dict[str, dict[int, float]]) -> dict:
    """mPC and rPC from per-corruption, per-severity top-1 (``{name: {severity: top1}}``).

    Returns ``{"mPC", "rPC", "per_corruption": {name: {"mPC", "rPC"}}}``; each corruption is first
    averaged over its severities, then the corruptions are averaged, so a corruption evaluated at
    fewer severities still weighs the same.
    """
    if not top1 or any(not sev for sev in top1.values()):
        raise ValueError("need at least one severity for every corruption")
    per = {}
    for name, by_sev in top1.items():
        m = sum(by_sev.values()) / len(by_sev)
        per[name] = {"mPC": m, "rPC": _ratio(m, clean_top1)}
    mpc = sum(p["mPC"] for p in per.values()) / len(per)
    return {"mPC": mpc, "rPC": _ratio(mpc, clean_top1), "per_corruption": per}


def _ratio(x: float, clean: float | None) -> float | None:
    return None if not clean else x / clean


def robustness_report(run_dir, data, *, split: str | None = None, corruptions=None, severities=None,
                      device: str = "auto", cache_dir=None, use_cache: bool = True, workers: int | None = None,
                      progress: Progress | None = None, seed: int = 0, plot=None) -> dict:
    """Evaluate ``run_dir`` on the clean clips of ``data`` and under each corruption x severity.

    ``corruptions``: names (default: all); ``severities``: levels 1-5 (default: all five);
    ``seed``: seeds the corruptions (same seed, same corrupted clips); ``plot``: PNG heat map path.
    A clip that cannot be decoded at all is skipped (listed in ``skipped``); a clip that decodes
    clean but fails under a corruption counts as wrong for that cell and is listed in ``errors``.
    """
    from vidtune.runs.device import resolve_device
    from vidtune.runs.inference import run_clips, select_split
    from vidtune.runs.light import load_light, remember_run_engine
    from vidtune.runs.store import load_run

    progress = progress or NullProgress()
    names = parse_corruptions(",".join(corruptions) if isinstance(corruptions, (list, tuple)) else corruptions)
    levels = sorted({int(s) for s in (severities or SEVERITIES)})
    if not levels or any(s not in SEVERITIES for s in levels):
        raise VidtuneError(f"severities must be between 1 and 5, got {severities!r}")
    dev = resolve_device(device)
    light = load_light(run_dir, dev)  # an engine built for this run earlier: no PyTorch backbone to build
    model, config = light or load_run(run_dir)
    labels = config.labels
    items = select_split(load_dataset(data), split, config)
    unknown = sorted({it.label for it in items} - set(labels))
    if unknown:
        raise DatasetError(f"labels not known to the run: {', '.join(map(repr, unknown[:10]))}. "
                           f"The run was trained on: {', '.join(labels)}")
    common = dict(device=dev, cache_dir=cache_dir, use_cache=use_cache, workers=workers, progress=NullProgress(),
                  seed=seed)
    passes = [(None, 0)] + [(n, s) for n in names for s in levels]
    cells: dict[str, dict[int, dict]] = {n: {} for n in names}
    errors: list[dict] = []
    with progress.task(f"robustness: clean + {len(names)} corruptions x {len(levels)} severities",
                       total=len(passes)) as task:
        out, skipped = run_clips(model, config, items, description="clean", **common)
        if light is None:
            remember_run_engine(run_dir, model.encoder)
        if not out:
            raise DatasetError(f"no readable videos to evaluate ({len(skipped)} skipped)")
        keep = sorted(out)  # clips readable when clean: the fixed denominator of every cell
        target = torch.tensor([labels.index(items[i].label) for i in keep])
        clean = classification_metrics(torch.stack([out[i] for i in keep]), target, labels)
        task.advance(1)
        subset = [items[i] for i in keep]
        for name, sev in passes[1:]:
            task.update(description=f"robustness: {name} severity {sev}")
            op = get_corruption(name, sev, seed=seed)
            res, failed = run_clips(model, config, subset, frame_op=op, description=f"{name} s{sev}", **common)
            for f in failed:
                errors.append({"corruption": name, "severity": sev, **f})
            # a clip the corruption broke counts as wrong: logits that never pick its class
            wrong = torch.full((len(labels),), float("-inf"))
            rows = []
            for j in range(len(subset)):
                if j in res:
                    rows.append(res[j])
                else:
                    w = wrong.clone()
                    w[(int(target[j]) + 1) % len(labels)] = 0.0
                    rows.append(w)
            m = classification_metrics(torch.stack(rows), target, labels)
            cells[name][sev] = {"top1": m["top1"], "mean_class_accuracy": m["mean_class_accuracy"]}
            task.advance(1)
    summary = summarize(clean["top1"], {n: {s: c["top1"] for s, c in cells[n].items()} for n in names})
    report = {
        "run": str(run_dir),
        "data": str(data),
        "split": split,
        "n": clean["n"],
        "labels": labels,
        "seed": seed,
        "clean_top1": clean["top1"],
        "clean_mean_class_accuracy": clean["mean_class_accuracy"],
        "mPC": summary["mPC"],
        "rPC": summary["rPC"],
        "corruptions": names,
        "severities": levels,
        "results": {
            n: {
                "top1": {str(s): cells[n][s]["top1"] for s in levels},
                "mean_class_accuracy": {str(s): cells[n][s]["mean_class_accuracy"] for s in levels},
                "mPC": summary["per_corruption"][n]["mPC"],
                "rPC": summary["per_corruption"][n]["rPC"],
            }
            for n in names
        },
        "skipped": skipped,
        "errors": errors,
    }
    if plot is not None:
        plot_robustness(report, plot)
        report["plot"] = str(plot)
    return report


def plot_robustness(report: dict, path) -> None:
    """Heat map PNG: corruptions (rows) x severities (columns) of top-1, with clean and mean columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from vidtune.utils import atomic_path

    names = report["corruptions"]
    levels = report["severities"]
    grid = np.array([[report["results"][n]["top1"][str(s)] for s in levels] + [report["results"][n]["mPC"]]
                     for n in names])
    cols = [str(s) for s in levels] + ["mean"]
    fig, ax = plt.subplots(figsize=(1.0 * len(cols) + 3.2, 0.42 * len(names) + 1.8))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_xlabel("severity")
    ax.axvline(len(levels) - 0.5, color="white", lw=2)
    for i in range(len(names)):
        for j in range(len(cols)):
            ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="black" if grid[i, j] > 0.6 else "white")
    rpc = report["rPC"]
    ax.set_title(f"top-1 under corruption: clean {100 * report['clean_top1']:.1f}%, "
                 f"mPC {100 * report['mPC']:.1f}%, rPC " + ("-" if rpc is None else f"{100 * rpc:.1f}%"),
                 fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="top-1")
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    except OSError as exc:
        raise VidtuneError(f"cannot write the heat map {path} ({exc.strerror or exc}); pick another --plot") from None
    finally:
        plt.close(fig)
