"""Clip features for choosing and checking labels, through the runs layer's feature cache.

Two sources, both cached per clip (:mod:`vidtune.runs.cache`), so ranking a pool a second time, or a
pool whose clips were already used for training, decodes nothing:

* a backbone alone (cold start, label checking): the frozen encoder's per-frame features at the
  centres of ``frames`` segments of each clip (the sampling ``vidtune train`` caches), optionally with
  the optical-flow cues (:mod:`vidtune.data.flow`);
* a trained run: its own predict path (:func:`vidtune.runs.inference.run_clips`) for class scores and
  the head's pooled clip embedding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidtune.data.manifest import VideoItem
from vidtune.defaults import DEFAULT_BACKBONE
from vidtune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

GRID_VIEWS = 3  # `vidtune train`'s default cached views: centre features are read from its training grids


@dataclass
class BackboneOptions:
    """The frozen encoder whose features describe clips when no run is given."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    pretrained: bool = True
    frames: int = 8
    flow: bool = False  # also the optical-flow cues (how content moves), appended to every frame
    device: str = "auto"
    workers: int | None = None
    cache_dir: str | None = None
    use_cache: bool = True


@dataclass
class ClipFeatures:
    """Per-clip features of the readable items (``index``: their positions in the input list)."""

    index: list[int]
    frames: np.ndarray  # (N, T, D [+ C]) per-frame features (flow cues last when present)
    flow_channels: int = 0
    skipped: list[dict] = field(default_factory=list)

    def pooled(self) -> np.ndarray:
        """``(N, D [+ 2C])``: the mean frame feature, L2-normalised, then (with flow cues) their mean and
        standard deviation over time."""
        c = self.flow_channels
        x = self.frames[..., : self.frames.shape[-1] - c] if c else self.frames
        app = l2n(x.reshape(len(x), x.shape[1], -1, x.shape[-1]).mean(axis=(1, 2)))
        if not c:
            return app
        fl = self.frames[..., -c:].reshape(len(x), x.shape[1], -1, c)[:, :, 0]  # (N, T, C), the same on every token
        return np.concatenate([app, fl.mean(axis=1), fl.std(axis=1)], axis=1)

    def embeddings(self) -> np.ndarray:
        """``(N, D)`` L2-normalised mean appearance features (what the clips show)."""
        c = self.flow_channels
        x = self.frames[..., : self.frames.shape[-1] - c] if c else self.frames
        return l2n(x.reshape(len(x), x.shape[1], -1, x.shape[-1]).mean(axis=(1, 2)))


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def backbone_features(items: list[VideoItem], opts: BackboneOptions | None = None,
                      progress: Progress | None = None, description: str = "features") -> ClipFeatures:
    """Frozen-backbone features of every readable clip; unreadable files come back in ``skipped``."""
    import torch

    from vidtune.data.flow import FLOW_CHANNELS
    from vidtune.models.backbones import create_backbone
    from vidtune.runs.device import resolve_device
    from vidtune.runs.features import extract_features, open_cache, sampling_for

    opts = opts or BackboneOptions()
    device = resolve_device(opts.device)
    with torch.random.fork_rng(devices=[]):  # a random-init encoder (tests, baselines): the same one every call,
        torch.manual_seed(0)  # so its features are comparable across calls and found in the cache
        encoder = create_backbone(opts.backbone, pretrained=opts.pretrained, weights=opts.weights)
    flow = bool(opts.flow) and getattr(encoder, "clip_len", 1) == 1
    sampling = sampling_for(encoder, opts.frames, "centre", flow=flow)
    feats, skipped = extract_features(encoder, items, sampling, device=device,
                                      cache=open_cache(opts.cache_dir, opts.use_cache), workers=opts.workers,
                                      progress=progress or NullProgress(), description=description,
                                      grid_views=GRID_VIEWS)
    idx = sorted(feats)
    if not idx:
        return ClipFeatures([], np.zeros((0, opts.frames, encoder.num_features), np.float32), 0, skipped)
    arr = torch.stack([feats[i][:, 0] for i in idx]).float().numpy()  # (N, T, D [+ C]) or (N, T, G, D [+ C])
    return ClipFeatures(idx, arr, FLOW_CHANNELS if flow else 0, skipped)


@dataclass
class RunOutputs:
    """A trained run applied to clips: class scores and clip embeddings of the readable items."""

    index: list[int]
    probs: np.ndarray  # (N, K) softmax (single-label) or sigmoid (multi-label) scores
    embeddings: np.ndarray  # (N, E) L2-normalised
    labels: list[str]
    multilabel: bool
    thresholds: list[float] | None
    skipped: list[dict] = field(default_factory=list)


def run_outputs(run_dir, items: list[VideoItem], *, device: str = "auto", cache_dir=None, use_cache: bool = True,
                workers: int | None = None, progress: Progress | None = None) -> RunOutputs:
    """The run's scores and pooled clip embeddings for ``items`` (its own predict path; cached features)."""
    import torch

    from vidtune.runs.device import resolve_device
    from vidtune.runs.inference import run_clips
    from vidtune.runs.store import load_run

    dev = resolve_device(device)
    model, config = load_run(Path(run_dir))
    common = dict(device=dev, cache_dir=cache_dir, use_cache=use_cache, workers=workers,
                  progress=progress or NullProgress())
    logits, skipped = run_clips(model, config, items, output="logits", description="run scores", **common)
    emb, _ = run_clips(model, config, [items[i] for i in sorted(logits)], output="embedding",
                       description="run embeddings", **common)
    idx = [i for j, i in enumerate(sorted(logits)) if j in emb]
    if not idx:
        k = len(config.labels)
        return RunOutputs([], np.zeros((0, k), np.float32), np.zeros((0, 1), np.float32), list(config.labels),
                          config.multilabel, None, skipped)
    x = torch.stack([logits[i] for i in idx]).float()
    probs = (x.sigmoid() if config.multilabel else x.softmax(-1)).numpy()
    e = torch.stack([emb[j] for j in sorted(emb)]).float().numpy()
    return RunOutputs(idx, probs, l2n(e), list(config.labels), config.multilabel,
                      config.label_thresholds() if config.multilabel else None, skipped)


def run_clip_seconds(run_dir) -> float | None:
    """A run's training clip length (the length long pool videos are cut to), if it is known."""
    from vidtune.runs.config import RunConfig

    return RunConfig.read(Path(run_dir)).training_clip_seconds()
