"""Real clips for an exported model: the tensor layout its input has, decoded the way vidtune samples them."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "clips", "logits"


def decode_clips(model, config, items, workers: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Normalised clips ``(N, T, 3, S, S)`` of the readable ``items`` and their indices (centre sampling)."""
    from vidtune.data.transforms import Normalize
    from vidtune.runs.decoding import ClipDataset, clip_loader
    from vidtune.runs.features import sampling_for

    sampling = sampling_for(model.encoder, config.frames, "centre")
    ds = ClipDataset(items, sampling, config.transform)
    norm = Normalize(config.transform)
    clips, kept = [], []
    for sample in clip_loader(ds, workers):
        if sample["error"] is not None:
            log.warning("parity check: skipping %s: %s", items[sample["index"]].path, sample["error"])
            continue
        clips.append(norm(sample["frames"]))  # (T, 3, S, S)
        kept.append(sample["index"])
    if not clips:
        return torch.zeros(0), []
    return torch.stack(clips), kept
