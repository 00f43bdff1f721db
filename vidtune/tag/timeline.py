"""PNG timeline: labelled segments as coloured bands over time, score curves below, shot boundaries."""

from __future__ import annotations

import numpy as np

from vidtune.utils import atomic_path


def plot_timeline(result, path, title: str | None = None) -> None:
    """Write ``result`` (a :class:`vidtune.tag.tagger.TagResult`) as a PNG to ``path``, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labels = list(result.labels)
    shown = [lab for lab in labels if lab != result.background]
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colour = {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}
    multi = result.task == "multilabel"
    rows = shown if multi else ["segments"]
    fig, (ax_bands, ax_scores) = plt.subplots(
        2, 1, figsize=(12, 2.0 + 0.35 * len(rows) + 2.6), sharex=True,
        gridspec_kw={"height_ratios": [max(1.0, 0.35 * len(rows)), 2.6]})
    duration = max(result.duration, 1e-3)
    for seg in result.segments:
        y = rows.index(seg["label"]) if multi else 0
        ax_bands.broken_barh([(seg["start"], seg["end"] - seg["start"])], (y - 0.4, 0.8),
                             facecolors=colour[seg["label"]], alpha=0.35 + 0.6 * float(seg["score"]))
        if not multi and seg["end"] - seg["start"] > duration / 40:
            ax_bands.text((seg["start"] + seg["end"]) / 2, 0, seg["label"], ha="center", va="center", fontsize=8,
                          clip_on=True)
    ax_bands.set_yticks(range(len(rows)))
    ax_bands.set_yticklabels(rows, fontsize=8)
    ax_bands.set_ylim(-0.6, len(rows) - 0.4)
    ax_bands.invert_yaxis()
    centres = result.centres
    for j, lab in enumerate(labels):
        style = ":" if lab == result.background else "-"
        ax_scores.plot(centres, result.smoothed[:, j], style, color=colour[lab], lw=1.4, label=lab)
        if multi and result.thresholds:
            ax_scores.axhline(result.thresholds[j], color=colour[lab], lw=0.6, ls="--", alpha=0.6)
    boundaries = result.shots.boundaries if result.shots else []
    for ax in (ax_bands, ax_scores):
        for b in boundaries:
            ax.axvline(b, color="0.3", lw=0.6, alpha=0.6)
    ax_scores.set_ylim(0, 1.02)
    ax_scores.set_xlim(0, duration)
    ax_scores.set_xlabel("time (s)" + ("; grey lines: shot boundaries" if len(boundaries) else ""))
    ax_scores.set_ylabel("sigmoid" if multi else "softmax")
    handles = [Patch(color=colour[lab], label=lab) for lab in labels]
    ax_scores.legend(handles=handles, fontsize=7, ncol=min(6, len(labels)), loc="upper right", framealpha=0.8)
    ax_bands.set_title(title or str(result.path), fontsize=9, loc="left")
    if len(centres):
        ax_scores.set_xticks(np.linspace(0, duration, 11))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
