"""A trained run served by its backbone's built engine: the run's engine record, and loading the run with
that engine in place of the PyTorch backbone.

Once an engine ran a run's backbone, a small JSON record in the engine cache (keyed by the run id and a
digest of its weights: :func:`run_record_path`) says which engine and fingerprint belong to those exact
weights, and names the head's ONNX graph when the run can be applied by engines alone, so later commands
load the engine without building the PyTorch backbone (:func:`load_light`), or skip torch altogether
(:mod:`vidtune.runs.lean`). Engine files are checked before use (:mod:`vidtune.engines.cache`): a
damaged one makes these paths step aside to the full load, which builds it again.

Importing this module imports no torch (the engine-only path reads :func:`run_record_path`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from vidtune.engines.runtime import (
    check_runtime,
    default_int8,
    default_runtime,
    engine_dir,
)
from vidtune.errors import CheckpointError, VidtuneError
from vidtune.runs.config import RunConfig
from vidtune.utils import atomic_write_json, file_digest, stable_hash

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def run_record_path(run_dir) -> Path:
    """Where the record of a run's built engines lives: keyed by its id and a digest of its weights."""
    config = RunConfig.read(run_dir)
    return engine_dir() / f"run-{stable_hash([config.run_id, file_digest(Path(run_dir) / 'model.safetensors')])}.json"


def remember_run_engine(run_dir, encoder, head: torch.nn.Module | None = None) -> None:
    """After a run's feature pass used an exported engine: note which one, for :func:`load_light`.

    ``head``: the run's temporal head, also exported to ONNX beside the record (once) when the run can be
    applied by engines alone (frame features in, logits out: no flow cues, no sound), so that the next
    ``predict`` runs without torch (:mod:`vidtune.runs.lean`).
    """
    import torch

    from vidtune.engines.build import engine_path

    if not isinstance(encoder, torch.nn.Module) or not engine_path(encoder).is_file():
        return
    try:
        record_path = run_record_path(run_dir)
        record = {"fingerprint": encoder.fingerprint(), "onnx": engine_path(encoder).name, "name": encoder.name,
                  "num_features": encoder.num_features, "grid": encoder.grid, "input_size": encoder.cfg.input_size}
        if head is not None:
            head_onnx = _export_head(run_dir, encoder, head, record_path.with_name(record_path.stem + "-head.onnx"))
            if head_onnx is not None:
                record["head_onnx"] = head_onnx.name
        atomic_write_json(record_path, record)
    except (OSError, VidtuneError) as exc:
        log.debug("engine record not written: %s", exc)


def _export_head(run_dir, encoder, head: torch.nn.Module, path: Path) -> Path | None:
    """The head as ONNX: frame features ``(batch, T, D)`` (tokens ``(batch, T, G, D)``) in, logits out."""
    import torch

    from vidtune.engines.build import write_engine

    config = RunConfig.read(run_dir)
    if not config.model.per_frame or config.model.audio is not None or config.model.flow > 0:
        return None
    per_frame = (encoder.grid * encoder.grid, encoder.num_features) if encoder.grid > 1 else (encoder.num_features,)
    example = torch.zeros(2, config.frames, *per_frame)
    try:
        write_engine(head, example, path, "features", "logits")  # a damaged head engine is written again
    except (VidtuneError, RuntimeError) as exc:
        log.info("the head of %s was not exported (%s); predict keeps loading it in PyTorch", run_dir, exc)
        return None
    return path


def read_run_record(run_dir) -> dict | None:
    """The run's engine record (:func:`remember_run_engine`), or None before one was written. Raises
    :class:`OSError` / :class:`ValueError` for an unreadable one (the callers then take the full path)."""
    record_path = run_record_path(run_dir)
    if not record_path.is_file():
        return None
    record = json.loads(record_path.read_text(encoding="utf-8"))
    return record if isinstance(record, dict) else None


def load_light(run_dir, device: torch.device, runtime: str | None = None):
    """The run with its backbone as an already-built engine (:class:`~vidtune.engines.backbone.EngineEncoder`)
    and its head in PyTorch, or None when that does not apply (not CPU, runtime torch, no sound engine built
    for it yet, temporal shifts); the caller then loads the run in full."""
    from vidtune.engines.cache import verified
    from vidtune.engines.choice import engine_order

    runtime = check_runtime(runtime or default_runtime())
    if device.type != "cpu" or runtime == "torch" or default_int8():
        return None
    try:
        record = read_run_record(run_dir)
        if record is None or not (engine_dir() / record["onnx"]).is_file():
            return None
        if "head_onnx" in record and not verified(engine_dir() / record["head_onnx"]):
            return None  # a damaged head engine (removed now): the full load exports it again
        names = engine_order(runtime, record)  # for auto: the engines measured faster than PyTorch, fastest first
        if not names:
            return None
        return _assemble_light(run_dir, record, engine_dir() / record["onnx"], names[0])
    except (OSError, ValueError, KeyError, TypeError, CheckpointError) as exc:
        log.debug("light load of %s not possible (%s); loading the full run", run_dir, exc)
        return None


def _assemble_light(run_dir, record: dict, onnx: Path, runtime: str):
    import torch
    from safetensors.torch import load_file

    from vidtune.engines.backbone import EngineEncoder
    from vidtune.engines.build import open_engine
    from vidtune.models.classifier import VideoClassifier
    from vidtune.models.heads import create_head
    from vidtune.runs.store import LoadedRun

    config = RunConfig.read(run_dir)
    if (not config.model.per_frame or config.model.audio is not None  # fused runs: their audio encoder too
            or config.transform.input_size != int(record["input_size"])):
        return None
    engine = open_engine(onnx, runtime)
    if engine is None:  # damaged (removed now): the full load builds it again
        return None
    state = load_file(str(Path(run_dir) / "model.safetensors"))
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    spec = config.model
    head = create_head(spec.head_kind, int(record["num_features"]), len(config.labels), spec.frames, grid=spec.grid,
                       **spec.head)
    head.load_state_dict(head_state, strict=True)
    encoder = EngineEncoder(engine, runtime, record, config.transform)
    model = VideoClassifier.__new__(VideoClassifier)
    torch.nn.Module.__init__(model)
    model.head = head.eval()
    object.__setattr__(model, "encoder", encoder)
    model.audio = None
    return LoadedRun(model.eval(), config)
