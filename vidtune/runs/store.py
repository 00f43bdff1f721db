"""Run folders: ``model.safetensors`` + ``config.json``, written atomically, loaded without pickle."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from vidtune.errors import CheckpointError, VidtuneError
from vidtune.models.backbones import create_backbone
from vidtune.models.classifier import VideoClassifier
from vidtune.models.heads import create_head
from vidtune.runs.config import FORMAT, ModelSpec, RunConfig
from vidtune.utils import atomic_path


class LoadedRun(NamedTuple):
    """A trained model with its validated config (unpacks as ``model, config``)."""

    model: VideoClassifier
    config: RunConfig


def save_weights(model: torch.nn.Module | dict, path, run_id: str = "") -> None:
    """Write a module's (or a state dict's) tensors to safetensors, atomically.

    ``run_id`` (also in config.json) ties the weights to their config: a crash between rewriting
    the two files of an existing run folder is detected on load instead of mixing two runs.
    """
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "run_id": run_id})


def assemble(encoder, spec: ModelSpec, num_classes: int, shift: bool = True) -> VideoClassifier:
    """Encoder + head as ``spec`` (a config's ``model`` section) describes them.

    ``tsm`` runs get their temporal shifts re-inserted in the saved blocks (unless ``shift=False``:
    the caller already added them) and a mean head; ``grid > 1`` makes the encoder emit tokens.
    """
    from vidtune.models.temporal_shift import add_temporal_shift

    if spec.tsm and shift:
        add_temporal_shift(encoder, spec.frames, int(spec.tsm["fold_div"]), blocks=list(spec.tsm["blocks"]))
    if spec.grid > 1:
        encoder.set_grid(spec.grid)
    head = create_head(spec.head_kind, encoder.num_features, num_classes, spec.frames, grid=spec.grid, **spec.head)
    audio = None
    if spec.audio is not None:  # a fused run: its audio encoder (a missing extra fails here, clearly)
        from vidtune.audio.features import create_audio_encoder

        audio = create_audio_encoder(spec.audio["encoder"])
        if spec.audio.get("id") not in (None, audio.id):
            raise CheckpointError(f"the run's audio features came from {spec.audio['id']}, this vidtune computes "
                                  f"{audio.id}; retrain the run")
    return VideoClassifier(encoder, head, audio)


def build_model(config: RunConfig, pretrained: bool = False) -> VideoClassifier:
    """The architecture a config describes (weights random unless ``pretrained``)."""
    encoder = create_backbone(config.model.backbone, pretrained=pretrained)
    encoder.cfg = config.transform
    return assemble(encoder, config.model, len(config.labels))


def load_run(run_dir, weights: str = "model.safetensors") -> LoadedRun:
    """Rebuild a trained model from its run folder (no download, no unpickling)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config = RunConfig.read(run_dir)
    path = run_dir / weights
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: {weights} is missing; the run may not have finished")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint ({exc}); damaged or tampered with") from None
    if config.run_id and meta.get("run_id") != config.run_id:
        raise CheckpointError(f"{path} and config.json come from different runs (an interrupted rewrite of "
                              f"{run_dir}?); train again into this folder or use another --out")
    try:
        model = build_model(config, pretrained=False)
    except VidtuneError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_dir}/config.json does not describe a model vidtune can build ({exc})") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{path} does not match config.json ({str(exc).splitlines()[-1].strip()[:200]})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path} does not match config.json ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected tensors, e.g. "
            f"{(result.missing_keys + result.unexpected_keys)[:3]}); the files come from different runs"
        )
    model.eval()
    return LoadedRun(model, config)
