"""Evaluation and prediction with a trained run (features through the run's own encoder, cached)."""

from __future__ import annotations

import logging

import torch

from vidtune.data.manifest import SPLITS, VideoItem, expand_video_args, item_labels, load_dataset  # noqa: F401
from vidtune.data.splits import stratified_split
from vidtune.errors import ConfigError, DatasetError
from vidtune.progress import NullProgress, Progress
from vidtune.runs.config import RunConfig
from vidtune.runs.device import resolve_device
from vidtune.runs.features import extract_features, open_cache, sampling_for
from vidtune.runs.leakage import shared_with_training
from vidtune.runs.metrics import average_precision, classification_metrics, multilabel_metrics
from vidtune.runs.store import load_run
from vidtune.utils import require_finite

log = logging.getLogger(__name__)


def run_clips(model, config: RunConfig, items: list[VideoItem], *, device: torch.device, output: str = "logits",
              cache_dir=None, use_cache: bool = True, workers: int | None = None,
              progress: Progress | None = None, description: str = "clips", frame_op=None,
              seed: int = 0, reuse: bool = False) -> tuple[dict[int, torch.Tensor], list[dict]]:
    """Run a trained model on clips: ``{item index: tensor}`` plus skipped files ``{"path", "reason"}``.

    The one entry point for everything that applies a run to videos (eval, predict, tagging,
    robustness, embeddings), so each works with every kind of model the trainer builds.
    ``output``: ``logits`` ``(K,)``, ``embedding`` (the head's pooled clip vector ``(E,)``) or
    ``frames`` (per-frame features ``(T, D)`` before the head). Each item's clip is sampled at the
    centres of ``frames`` segments between its ``start`` and ``end``. ``frame_op`` changes decoded
    frames first (see :class:`vidtune.runs.features.FrameOp`). ``reuse``: the run will be applied again
    (predict): ``--runtime auto`` builds its backbone engine even for a small job.
    """
    if output not in ("logits", "embedding", "frames"):
        raise ValueError(f"output must be logits, embedding or frames, not {output!r}")
    cache = open_cache(cache_dir, use_cache)
    feats, skipped = extract_features(model.encoder, items, sampling_for(model.encoder, config.frames, "centre",
                                                                                flow=config.model.flow > 0),
                                      device=device, cache=cache, workers=workers, progress=progress,
                                      description=description, grid_views=config.views, frame_op=frame_op, seed=seed,
                                      reuse=reuse)
    if output == "frames" or not feats:
        return {i: f[:, 0] for i, f in feats.items()}, skipped
    head = model.head.eval().to(device)
    idx = sorted(feats)
    if getattr(model, "audio", None) is not None:  # a fused run: each clip's sound after its frame features
        from vidtune.runs.sound import append_audio, extract_audio_features

        snd = extract_audio_features(model.audio, [items[i] for i in idx], config.frames, cache=cache,
                                     progress=progress, description=f"{description} (audio)")
        feats = {i: append_audio(feats[i][None], snd[j][None])[0] for j, i in enumerate(idx)}
    results: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for lo in range(0, len(idx), 256):
            chunk = idx[lo : lo + 256]
            x = torch.stack([feats[i][:, 0] for i in chunk]).to(device)  # (N, T, D)
            y = head(x) if output == "logits" else head.pool(x)
            require_finite(y, f"the run's head, for {items[chunk[0]].path}" if len(chunk) == 1 else
                           f"the run's head, for {len(chunk)} clips from {items[chunk[0]].path} on,")
            results.update(zip(chunk, y.float().cpu()))
    return results, skipped


def select_split(items: list[VideoItem], split: str | None, config: RunConfig | None = None) -> list[VideoItem]:
    """``split=None``: the test rows if the data has any, else every row.

    ``train``/``val`` on data without a split column recompute the run's own seeded stratified
    split (its ``val_split`` and ``seed``), so ``--split val`` is exactly the validation hold-out.
    """
    if split is None:
        test = [it for it in items if it.split == "test"]
        return test or items
    if split == "all":
        return items
    if split not in SPLITS:
        raise ConfigError("split", f"must be one of {', '.join(SPLITS)} or all, got {split!r}")
    train_cfg = config.train if config is not None else {}
    chosen = stratified_split(items, float(train_cfg.get("val_split", 0.2)), int(train_cfg.get("seed", 0)))[split]
    if not chosen:
        raise DatasetError(f"no {split} rows in the data")
    return chosen


def _check_labels(items: list[VideoItem], config: RunConfig) -> list[str]:
    """Labels of ``items`` the run never saw: refused for multi-label runs, returned for single-label ones
    (their clips count as wrong: the run cannot predict them)."""
    labels, background = config.labels, config.background
    if config.multilabel:
        found = {lab for it in items for lab in item_labels(it, background)}
    else:
        found = {it.label for it in items}
    unknown = sorted(found - set(labels))
    if unknown and not config.multilabel:
        log.warning("the data holds %d class(es) the run never saw (%s): their clips count as wrong", len(unknown),
                    ", ".join(unknown[:10]))
        return unknown
    if unknown:
        raise DatasetError(f"labels not known to the run: {', '.join(map(repr, unknown[:10]))}. "
                           f"The run was trained on: {', '.join(labels)}")
    return []


def evaluate(run_dir, data, split: str | None = None, device: str = "auto", cache_dir=None, use_cache=True,
             workers: int | None = None, progress: Progress | None = None) -> dict:
    """Metrics of a run on labelled data, plus the skipped files.

    Single-label runs: top1, top5 (more than 5 classes), mean class accuracy, per-class accuracy,
    confusion matrix, and mAP / per-class AP of the softmax scores (one class against the rest).
    Multi-label runs (``"task": "multilabel"``): mAP, per-class AP and F1 (micro, macro) at the
    run's tuned thresholds (see :func:`vidtune.runs.metrics.multilabel_metrics`).
    """
    from vidtune.runs.light import load_light, remember_run_engine

    progress = progress or NullProgress()
    dev = resolve_device(device)
    light = load_light(run_dir, dev)  # an engine built for this run earlier: no PyTorch backbone to build
    model, config = light or load_run(run_dir)
    labels = config.labels
    multilabel = config.multilabel
    items = select_split(load_dataset(data, multilabel=multilabel or None), split, config)
    unseen = _check_labels(items, config)
    shared = [] if split in ("train", "val") else shared_with_training(run_dir, items, open_cache(cache_dir, use_cache))
    if shared:
        log.warning("%d of the %d evaluation clips were in the run's training or validation data (e.g. %s: %s as "
                    "%s); the scores are optimistic. Evaluate on clips from other sources", len(shared), len(items),
                    shared[0]["path"], shared[0]["how"], shared[0]["seen_as"])
    out, skipped = run_clips(model, config, items, device=dev, cache_dir=cache_dir, use_cache=use_cache,
                             workers=workers, progress=progress, description="eval features")
    if light is None:
        remember_run_engine(run_dir, model.encoder, model.head)
    if not out:
        raise DatasetError(f"no readable videos to evaluate ({len(skipped)} skipped)")
    idx = sorted(out)
    logits = torch.stack([out[i] for i in idx])
    if multilabel:
        y = torch.zeros(len(idx), len(labels))
        for row, i in enumerate(idx):
            for lab in item_labels(items[i], config.background):
                y[row, labels.index(lab)] = 1.0
        m = multilabel_metrics(logits, y, labels, config.label_thresholds())
        return {"run": str(run_dir), "task": "multilabel", "labels": labels, **m, "skipped": skipped,
                "shared_with_training": shared}
    # classes the run never saw: extra rows (never predicted) so that their clips count as wrong
    every = list(labels) + unseen
    y = torch.tensor([every.index(items[i].label) for i in idx])
    padded = torch.cat([logits, torch.full((len(idx), len(unseen)), -torch.inf)], dim=1) if unseen else logits
    m = classification_metrics(padded, y, every)
    probs = logits.softmax(-1)
    aps = {lab: average_precision(probs[:, j], y == j) for j, lab in enumerate(labels)}
    valid = [v for v in aps.values() if v == v]  # classes with positives (AP is NaN without)
    m["mAP"] = sum(valid) / len(valid) if valid else None
    m["per_class_ap"] = {lab: (v if v == v else None) for lab, v in aps.items()}
    counts = {lab: int((y == every.index(lab)).sum()) for lab in unseen}
    return {"run": str(run_dir), "task": "single_label", "labels": every, **m, "skipped": skipped,
            "shared_with_training": shared, "unseen_labels": counts}


def predict(run_dir, videos, k: int = 5, device: str = "auto", cache_dir=None, use_cache=True,
            workers: int | None = None, progress: Progress | None = None) -> dict:
    """Top-k labels per video: ``{"results": [{"path", "labels", "predictions": [{"label", "score"}]} |
    {"path", "error"}]}``.

    ``labels``: the predicted labels. Multi-label runs: every label whose sigmoid score reaches its
    tuned threshold (highest first; may be empty), and ``predictions`` holds the top-k sigmoid scores.
    Single-label runs: the top-1 class, with softmax probabilities in ``predictions``.
    """
    from vidtune.runs.lean import format_predictions
    from vidtune.runs.light import load_light, remember_run_engine

    progress = progress or NullProgress()
    dev = resolve_device(device)
    light = load_light(run_dir, dev)  # an engine built for this run earlier: no PyTorch backbone to build
    model, config = light or load_run(run_dir)
    labels = config.labels
    paths = expand_video_args(videos)
    items = [VideoItem(path=p, label="") for p in paths]
    out, skipped = run_clips(model, config, items, device=dev, cache_dir=cache_dir, use_cache=use_cache,
                             workers=workers, progress=progress, description="predict", reuse=True)
    if light is None:
        remember_run_engine(run_dir, model.encoder, model.head)

    multilabel = config.multilabel
    results = format_predictions(paths, {i: y.numpy() for i, y in out.items()}, skipped, labels, k, multilabel,
                                 config.label_thresholds() if multilabel else None)
    return {"run": str(run_dir), "task": "multilabel" if multilabel else "single_label", "results": results}
