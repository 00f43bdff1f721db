"""The model a training run starts from: a pretrained backbone and a new head, or an earlier run
(``--init``) with its backbone, its temporal head when the kind matches, and a classifier rebuilt
for the new labels."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch
from torch import nn

from vidtune.data.flow import FLOW_CHANNELS
from vidtune.errors import ConfigError
from vidtune.models.backbones import create_backbone
from vidtune.models.classifier import VideoClassifier
from vidtune.runs.config import ModelSpec
from vidtune.runs.store import assemble, load_run
from vidtune.train.config import TrainConfig

log = logging.getLogger(__name__)


def build(cfg: TrainConfig, labels: list[str]) -> tuple[VideoClassifier, ModelSpec, dict | None]:
    """The model to train, its config section and (with ``--init``) its lineage."""
    from vidtune.models.temporal_shift import add_temporal_shift

    if cfg.init:
        return _build_from_run(cfg, labels)
    if cfg.temporal == "auto":  # the richest features any candidate reads (vidtune.train.auto chooses the head)
        cfg = replace(cfg, temporal="attention", flow=None)
    encoder = create_backbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights)
    tsm = None
    if cfg.temporal == "tsm":
        if encoder.clip_len > 1:
            raise ConfigError("temporal", f"tsm adds time to an image backbone; {cfg.backbone} is a video model that "
                                          "already sees time: use mean/attention/transformer over its clips")
        within = None if cfg.strategy == "full" else _top_stages(encoder, cfg.unfreeze)
        blocks = add_temporal_shift(encoder, cfg.frames, cfg.tsm_fold_div, within=within)
        tsm = {"fold_div": cfg.tsm_fold_div, "blocks": blocks}
    audio = audio_spec(cfg)
    spec = ModelSpec(backbone=cfg.backbone, source=encoder.source, arch=encoder.arch,
                     feature_dim=encoder.num_features, temporal=cfg.temporal, frames=cfg.frames,
                     grid=cfg.grid or default_grid(cfg.temporal, encoder),
                     head=head_options(cfg, uses_flow(cfg, encoder), audio), tsm=tsm, audio=audio)
    return assemble(encoder, spec, len(labels), shift=False), spec, None


def _build_from_run(cfg: TrainConfig, labels: list[str]) -> tuple[VideoClassifier, ModelSpec, dict]:
    """Start from an earlier run: its backbone (and temporal head when the kind matches); the
    classifier is rebuilt for ``labels``, keeping the rows of labels both tasks share."""
    source, src_cfg = load_run(cfg.init)
    src_model = src_cfg.model
    if cfg.modalities is None and src_model.audio is not None:  # a fused run: keep hearing, the same way
        if cfg.strategy != "linear":
            raise ConfigError("modalities", f"defaults to the init run's video,audio ({cfg.init} hears), which trains "
                                            f"on cached features: pass --strategy linear, or --modalities video "
                                            f"to train a video-only head on its backbone")
        cfg = replace(cfg, modalities="video,audio", audio_encoder=src_model.audio["encoder"],
                      fusion=src_model.head.get("fusion", "mid"))
    src_labels = list(src_cfg.labels)
    temporal = cfg.temporal or src_model.temporal
    if temporal == "tsm" and src_model.temporal != "tsm":
        raise ConfigError("temporal", f"tsm needs its shifts from the start, but the init run {cfg.init} was trained "
                                      f"with {src_model.temporal}: train the source run with tsm")
    if cfg.grid is not None and cfg.grid != src_model.grid:
        raise ConfigError("grid", f"{cfg.grid} differs from the init run's grid {src_model.grid}; leave it out to "
                                  "use the run's")
    audio = audio_spec(cfg)
    # the head carries over when it reads the same inputs: same kind, same sound (or none) fused the same way
    keep_head = temporal == src_model.temporal and audio == src_model.audio and (
        audio is None or src_model.head.get("fusion") == cfg.fusion)
    head = head_options(cfg, uses_flow(cfg, source.encoder), audio)
    if keep_head:
        head = {**src_model.head, **({"modality_dropout": cfg.modality_dropout} if audio else {})}
    spec = replace(src_model, temporal=temporal, frames=cfg.frames, head=head, audio=audio)
    model = assemble(source.encoder, spec, len(labels), shift=False)
    carried = ["encoder"]
    if keep_head:
        state = {k: v for k, v in source.head.state_dict().items() if not k.startswith(("fc.", "audio_fc."))}
        model.head.load_state_dict(state, strict=False)
        shared = [lab for lab in labels if lab in src_labels]
        with torch.no_grad():
            for j, lab in enumerate(labels):
                if lab in src_labels:
                    i = src_labels.index(lab)
                    model.head.fc.weight[j] = source.head.fc.weight[i]
                    model.head.fc.bias[j] = source.head.fc.bias[i]
                    if hasattr(model.head, "audio_fc"):  # late fusion: the audio classifier's row too
                        model.head.audio_fc.weight[j] = source.head.audio_fc.weight[i]
                        model.head.audio_fc.bias[j] = source.head.audio_fc.bias[i]
        carried.append("temporal head" + (f" and classifier rows of {len(shared)} shared label(s)" if shared else ""))
    model.encoder.invalidate_fingerprint()
    lineage = {
        "init": str(cfg.init), "run_id": src_cfg.run_id, "labels": src_labels,
        "data": src_cfg.data, "backbone": src_model.backbone, "temporal": src_model.temporal,
        "carried": carried, "ancestors": [src_cfg.lineage] if src_cfg.lineage else [],
    }
    log.info("initialised from %s: %s", cfg.init, ", ".join(carried))
    return model, spec, lineage


def default_grid(temporal: str | None, encoder=None) -> int:
    """Token grid when ``--grid`` is not given: 3x3 for heads that attend over tokens (where things
    are is what tells motion apart; bench/transfer.py measures it), one vector otherwise, and for
    backbones without a spatial feature map (video models, ViTs)."""
    if temporal not in ("attention", "transformer"):
        return 1
    if encoder is not None and not encoder.supports_grid:
        return 1
    return 3


def uses_flow(cfg: TrainConfig, encoder) -> bool:
    """``--flow``, or by default: on for heads that read frame order (attention, transformer) over an
    image backbone with cached features. On real footage they learned what the training clips show
    instead of how it moves without it (camera motion over unseen photos: 0.20-0.50 top-1 without
    flow cues, 0.89-0.99 with them; bench/realworld.py)."""
    if cfg.temporal == "flow_linear":  # the flow cues are all it reads
        if getattr(encoder, "clip_len", 1) > 1:
            raise ConfigError("temporal", f"flow_linear reads optical-flow cues of frames, for image backbones; "
                                          f"{cfg.backbone} is a video model: use mean/attention/transformer")
        return True
    if cfg.flow is not None:
        if cfg.flow and getattr(encoder, "clip_len", 1) > 1:
            raise ConfigError("flow", f"is for image backbones; {cfg.backbone} is a video model that sees motion itself")
        return cfg.flow
    return (cfg.temporal in ("attention", "transformer") and cfg.strategy == "linear"
            and getattr(encoder, "clip_len", 1) == 1)


def head_options(cfg: TrainConfig, flow: bool = False, audio: dict | None = None) -> dict:
    opts = {"dropout": cfg.dropout, "dim": cfg.head_dim, "depth": cfg.depth, "motion": cfg.motion_tokens}
    if flow:
        opts["flow"] = FLOW_CHANNELS
    if audio is not None:
        opts.update(audio=audio["dim"], fusion=cfg.fusion, modality_dropout=cfg.modality_dropout)
    return opts


def audio_spec(cfg: TrainConfig) -> dict | None:
    """A fused run's audio encoder (``model.audio`` in config.json), or None for video only. Builds the
    encoder, so a missing extra fails here, before any video is decoded."""
    if not cfg.audio:
        return None
    from vidtune.audio.features import create_audio_encoder

    enc = create_audio_encoder(cfg.audio_encoder)
    return {"encoder": cfg.audio_encoder, "id": enc.id, "dim": int(enc.dim)}


def _top_stages(encoder, n: int) -> list[nn.Module]:
    stages = encoder.stages()
    return [m for group in stages[max(0, len(stages) - n):] for m in group] if n else []
