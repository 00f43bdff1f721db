"""Evaluation and prediction with a trained run (features through the run's own encoder, cached)."""

from __future__ import annotations

from pathlib import Path

import torch

from vidtune.data.manifest import SPLITS, VideoItem, load_dataset, stratified_split, walk_videos
from vidtune.errors import DatasetError
from vidtune.progress import NullProgress, Progress
from vidtune.train.checkpoint import load_run
from vidtune.train.features import Sampling, extract_features, open_cache
from vidtune.train.metrics import classification_metrics
from vidtune.train.trainer import resolve_device


def _features(model, config, items, device, cache_dir, use_cache, workers, progress, description):
    cache = open_cache(cache_dir, use_cache)
    frames = int(config["model"]["frames"])
    views = config.get("sampling", {}).get("views")
    return extract_features(model.encoder, items, Sampling(frames, "centre"), device=device, cache=cache,
                            workers=workers, progress=progress, description=description,
                            grid_views=int(views) if views else None)


def expand_video_args(videos) -> list[Path]:
    """Video paths from arguments: files as given (even with odd extensions), folders searched recursively."""
    paths: list[Path] = []
    for v in videos:
        p = Path(v)
        if p.is_dir():
            found = walk_videos(p)
            if not found:
                raise DatasetError(f"{p}: folder holds no video files")
            paths.extend(found)
        else:
            paths.append(p)
    return paths


def select_split(items: list[VideoItem], split: str | None, config: dict | None = None) -> list[VideoItem]:
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
        raise DatasetError(f"--split must be one of {', '.join(SPLITS)} or all, got {split!r}")
    train_cfg = (config or {}).get("train", {})
    chosen = stratified_split(items, float(train_cfg.get("val_split", 0.2)), int(train_cfg.get("seed", 0)))[split]
    if not chosen:
        raise DatasetError(f"no {split} rows in the data")
    return chosen


def evaluate(run_dir, data, split: str | None = None, device: str = "auto", cache_dir=None, use_cache=True,
             workers: int | None = None, progress: Progress | None = None) -> dict:
    """top1, top5 (more than 5 classes), mean class accuracy, confusion matrix and skipped files."""
    progress = progress or NullProgress()
    model, config = load_run(run_dir)
    labels = config["labels"]
    items = select_split(load_dataset(data), split, config)
    unknown = sorted({it.label for it in items} - set(labels))
    if unknown:
        raise DatasetError(f"labels not known to the run: {', '.join(map(repr, unknown[:10]))}. "
                           f"The run was trained on: {', '.join(labels)}")
    dev = resolve_device(device)
    feats, skipped = _features(model, config, items, dev, cache_dir, use_cache, workers, progress, "eval features")
    if not feats:
        raise DatasetError(f"no readable videos to evaluate ({len(skipped)} skipped)")
    idx = sorted(feats)
    x = torch.stack([feats[i][:, 0] for i in idx])  # (N, T, D)
    y = torch.tensor([labels.index(items[i].label) for i in idx])
    with torch.no_grad():
        logits = model.head.eval()(x)
    m = classification_metrics(logits, y, labels)
    return {"run": str(run_dir), "labels": labels, **m, "skipped": skipped}


def predict(run_dir, videos, k: int = 5, device: str = "auto", cache_dir=None, use_cache=True,
            workers: int | None = None, progress: Progress | None = None) -> dict:
    """Top-k labels per video: ``{"results": [{"path", "predictions": [{"label", "score"}]} | {"path", "error"}]}``."""
    progress = progress or NullProgress()
    model, config = load_run(run_dir)
    labels = config["labels"]
    paths = expand_video_args(videos)
    items = [VideoItem(path=p, label="") for p in paths]
    dev = resolve_device(device)
    feats, skipped = _features(model, config, items, dev, cache_dir, use_cache, workers, progress, "predict")
    reasons = {s["path"]: s["reason"] for s in skipped}
    results = []
    k = max(1, min(k, len(labels)))
    with torch.no_grad():
        for i, p in enumerate(paths):
            if i not in feats:
                results.append({"path": str(p), "error": reasons.get(str(p), "could not be decoded")})
                continue
            probs = model.head.eval()(feats[i][:, 0][None]).softmax(-1)[0]
            top = probs.topk(k)
            results.append({"path": str(p), "predictions": [
                {"label": labels[j], "score": round(float(s), 6)} for s, j in zip(top.values, top.indices)]})
    return {"run": str(run_dir), "results": results}
