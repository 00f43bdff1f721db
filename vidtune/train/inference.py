"""Evaluation and prediction with a trained run (features through the run's own encoder, cached)."""

from __future__ import annotations

from pathlib import Path

import torch

from vidtune.data.manifest import SPLITS, VideoItem, load_dataset, walk_videos
from vidtune.errors import DatasetError
from vidtune.progress import NullProgress, Progress
from vidtune.train.checkpoint import load_run
from vidtune.train.features import FeatureCache, Sampling, default_cache_dir, extract_features
from vidtune.train.metrics import classification_metrics
from vidtune.train.trainer import resolve_device


def _features(model, config, items, device, cache_dir, use_cache, workers, progress, description):
    cache = FeatureCache(cache_dir or default_cache_dir()) if use_cache else None
    frames = int(config["model"]["frames"])
    return extract_features(model.encoder, items, Sampling(frames, "centre"), device=device, cache=cache,
                            workers=workers, progress=progress, description=description)


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


def select_split(items: list[VideoItem], split: str | None) -> list[VideoItem]:
    """``split=None``: the test rows if the data has any, else every row."""
    if split is None:
        test = [it for it in items if it.split == "test"]
        return test or items
    if split == "all":
        return items
    if split not in SPLITS:
        raise DatasetError(f"--split must be one of {', '.join(SPLITS)} or all, got {split!r}")
    chosen = [it for it in items if (it.split or "train") == split]
    if not chosen:
        raise DatasetError(f"no rows with split={split!r} in the data")
    return chosen


def evaluate(run_dir, data, split: str | None = None, device: str = "auto", cache_dir=None, use_cache=True,
             workers: int | None = None, progress: Progress | None = None) -> dict:
    """top1, top5 (more than 5 classes), mean class accuracy, confusion matrix and skipped files."""
    progress = progress or NullProgress()
    model, config = load_run(run_dir)
    labels = config["labels"]
    items = select_split(load_dataset(data), split)
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
