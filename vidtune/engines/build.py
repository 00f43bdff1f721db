"""A frozen frame encoder as an engine file in the engine cache, and the engine running it.

The fp32 graph ``<weights fingerprint>-<input size>.onnx`` is written once per weights (in
``<feature cache>/engines/``, :func:`vidtune.engines.runtime.engine_dir`) and checked against its record
whenever it is opened (:mod:`vidtune.engines.cache`); a damaged one is written again from the encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vidtune.engines import cache
from vidtune.engines.runtime import engine_dir, engine_threads

log = logging.getLogger(__name__)


def engine_path(encoder) -> Path:
    """Where the fp32 engine of ``encoder`` (anything with ``fingerprint()`` and ``cfg.input_size``) lives."""
    return engine_dir() / f"{encoder.fingerprint()}-{encoder.cfg.input_size}.onnx"


def exportable(encoder, device: torch.device) -> bool:
    """Frame-by-frame encoders on CPU; temporal shifts and video backbones need PyTorch."""
    return device.type == "cpu" and encoder.frame_independent and int(getattr(encoder, "clip_len", 1)) == 1


def built(encoder, runtime: str) -> bool:
    """The engine is open in this process, or its ONNX graph is on disk (only a session to open)."""
    path = engine_path(encoder)
    return cache.is_open(path, runtime) or path.is_file()


def write_engine(module: torch.nn.Module, example: torch.Tensor, path, input_name: str, output_name: str) -> Path:
    """``module`` as an engine file at ``path`` (ONNX, checked against the module at two batch sizes),
    sealed with its record; an existing sound file is kept, a damaged one written again."""
    from vidtune.engines.formats import write_onnx

    def write(target: Path) -> None:
        write_onnx(module.eval(), example, target, input_name, output_name)
        log.info("exported %s to %s", type(module).__name__, target)

    return cache.ensure(path, write)


class TorchEngine:
    """An ONNX Runtime / OpenVINO session over an encoder's graph: torch ``(N, 3, S, S)`` in, torch out."""

    def __init__(self, session, runtime: str):
        self.session = session
        self.runtime = runtime

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session(x.contiguous().numpy()))


def open_engine(path, runtime: str) -> TorchEngine | None:
    """The engine file at ``path`` run by ``runtime`` at the job's thread count, or None when the file is
    missing or damaged (removed then: see :func:`vidtune.engines.cache.verified`)."""
    if not cache.verified(path):
        return None
    return TorchEngine(cache.session(path, runtime, engine_threads()), runtime)


def build_engine(encoder, runtime: str, calibration=None, int8: bool = False) -> TorchEngine:
    """The engine running ``encoder`` in ``runtime``: its fp32 graph written (or repaired) first, then for
    ``int8`` the int8 graph quantised on ``calibration`` (:func:`vidtune.engines.int8.quantised`)."""
    size = encoder.cfg.input_size
    path = write_engine(encoder, torch.zeros(2, 3, size, size), engine_path(encoder), "frames", "features")
    if int8:  # built once per weights, calibrated on frames the first int8 job provides
        from vidtune.engines.int8 import quantised

        path = quantised(path, calibration)
    engine = open_engine(path, runtime)
    if engine is None:
        raise RuntimeError(f"the engine {path} was removed while it was being opened")
    return engine
