"""Run folders: ``model.safetensors`` + ``config.json``, written atomically, loaded without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vidtune.errors import CheckpointError, VidtuneError
from vidtune.models.backbones import PretrainedConfig, create_backbone
from vidtune.models.classifier import VideoClassifier
from vidtune.models.heads import create_head
from vidtune.utils import atomic_path, atomic_write_json

FORMAT = "vidtune-run"
FORMAT_VERSION = 1


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


def save_config(config: dict, path) -> None:
    atomic_write_json(path, {"format": FORMAT, "format_version": FORMAT_VERSION, **config})


def read_config(run_dir) -> dict:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}. Train one with `vidtune train DATA --out {run_dir}`.")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a vidtune run: config.json is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: damaged config ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vidtune run config (format tag missing)")
    version = config.get("format_version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer vidtune (format {config['format_version']}); upgrade vidtune")
    for key in ("labels", "model", "transform"):
        if key not in config:
            raise CheckpointError(f"{path}: missing {key!r}")
    return config


def assemble(encoder, model_cfg: dict, num_classes: int, shift: bool = True) -> VideoClassifier:
    """Encoder + head as ``model_cfg`` (a config's ``model`` section) describes them.

    ``tsm`` runs get their temporal shifts re-inserted in the saved blocks (unless ``shift=False``:
    the caller already added them) and a mean head; ``grid > 1`` makes the encoder emit tokens.
    """
    from vidtune.models.temporal_shift import add_temporal_shift

    frames = int(model_cfg["frames"])
    grid = int(model_cfg.get("grid", 1))
    tsm = model_cfg.get("tsm")
    if tsm and shift:
        add_temporal_shift(encoder, frames, int(tsm["fold_div"]), blocks=list(tsm["blocks"]))
    if grid > 1:
        encoder.set_grid(grid)
    kind = "mean" if model_cfg["temporal"] == "tsm" else model_cfg["temporal"]
    head = create_head(kind, encoder.num_features, num_classes, frames, grid=grid, **model_cfg.get("head", {}))
    return VideoClassifier(encoder, head)


def build_model(config: dict, pretrained: bool = False) -> VideoClassifier:
    """The architecture a config describes (weights random unless ``pretrained``)."""
    m = config["model"]
    encoder = create_backbone(m["backbone"], pretrained=pretrained)
    encoder.cfg = PretrainedConfig.from_dict(config["transform"])
    return assemble(encoder, m, len(config["labels"]))


def load_run(run_dir, weights: str = "model.safetensors") -> tuple[VideoClassifier, dict]:
    """Rebuild a trained model from its run folder (no download, no unpickling)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    path = run_dir / weights
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: {weights} is missing; the run may not have finished")
    try:
        state = load_file(str(path))
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint ({exc}); damaged or tampered with") from None
    if config.get("run_id") and meta.get("run_id") != config["run_id"]:
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
    return model, config
