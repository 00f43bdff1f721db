"""Which engine runs the frozen backbone of a feature pass: PyTorch, ONNX Runtime or OpenVINO.

``torch``: eager PyTorch, or a traced and frozen TorchScript graph for big CPU jobs
(:func:`vidtune.runs.features.inference_encoder`). ``onnxruntime`` / ``openvino``: the encoder is
exported once per weights fingerprint to ONNX (``<feature cache>/engines/``) and run there; the
compiled session is kept for the life of the process. ``auto``: the fastest engine measured on a
2-core AVX2 CPU (``bench/runtime.py``), among those installed, for frame-by-frame encoders on CPU;
PyTorch otherwise (GPUs, temporal-shift and video backbones, whose frames are not independent).

Features of the fp32 engines agree within :data:`FEATURE_TOLERANCE` (a test checks it), so the
feature cache does not tell them apart: a cached feature serves every fp32 runtime.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import torch

from vidtune.errors import ConfigError, VidtuneError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
# ``auto``'s order of preference on CPU, fastest first, from bench/runtime.py on this project's 2-core
# machine (README, "Export and fast CPU inference").
AUTO_ORDER = ("onnxruntime", "openvino")
# The largest |difference| between an fp32 engine's features and PyTorch's, relative to the feature scale
# (max |feature|), that still counts as "the same features" (test_runtimes checks it).
FEATURE_TOLERANCE = 1e-3
_AUTO_MIN_FRAMES = 256  # below this, exporting the engine (seconds) costs more than it saves, unless cached

_default = "torch"
_engines: dict[tuple, object] = {}
_lock = threading.Lock()


def set_default_runtime(name: str) -> None:
    """The runtime feature passes use when they are not given one (the CLI's ``--runtime``)."""
    global _default
    check_runtime(name)
    _default = name


def default_runtime() -> str:
    return _default


@contextlib.contextmanager
def using_runtime(name: str | None):
    """Make ``name`` the default for the duration of a block (one CLI command), then restore it."""
    before = _default
    if name:
        set_default_runtime(name)
    try:
        yield
    finally:
        set_default_runtime(before)


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise ConfigError("runtime", f"must be one of {', '.join(RUNTIMES)}, got {name!r}")
    return name


def installed(runtime: str) -> bool:
    from vidtune.export.formats import runtime_installed

    return runtime_installed(runtime)


def engine_dir() -> Path:
    from vidtune.runs.features import default_cache_dir

    return default_cache_dir() / "engines"


def _engine_path(encoder) -> Path:
    size = encoder.cfg.input_size
    return engine_dir() / f"{encoder.fingerprint()}-{size}.onnx"


def exportable(encoder, device: torch.device) -> bool:
    """Frame-by-frame encoders on CPU; temporal shifts and video backbones need PyTorch."""
    return device.type == "cpu" and encoder.frame_independent and int(getattr(encoder, "clip_len", 1)) == 1


def resolve(runtime: str | None, encoder, device: torch.device, n_frames: int) -> str:
    """The concrete runtime for a job of ``n_frames`` frames: ``torch``, ``onnxruntime`` or ``openvino``."""
    runtime = check_runtime(runtime or _default)
    if runtime == "torch":
        return "torch"
    if not exportable(encoder, device):
        if runtime != "auto":
            log.info("%s runs in PyTorch: --runtime %s is for frame-by-frame encoders on CPU", encoder.name, runtime)
        return "torch"
    if runtime != "auto":
        if not installed(runtime):
            from vidtune.export.formats import RUNTIME_EXTRAS

            raise ConfigError("runtime", f"{runtime} is not installed; pip install 'vidtune[{RUNTIME_EXTRAS[runtime]}]' "
                                         "or use --runtime torch")
        return runtime
    for name in AUTO_ORDER:
        if installed(name) and (n_frames >= _AUTO_MIN_FRAMES or _built(encoder, name)):
            return name
    return "torch"


def _key(encoder, runtime: str) -> tuple:
    return (encoder.fingerprint(), encoder.cfg.input_size, runtime)


def _built(encoder, runtime: str) -> bool:
    """The engine is ready in this process, or its ONNX graph is on disk (only a session to open)."""
    return _key(encoder, runtime) in _engines or _engine_path(encoder).is_file()


class _OnnxEngine:
    """An ONNX Runtime session over the encoder's graph: torch ``(N, 3, S, S)`` in, torch features out."""

    def __init__(self, path: Path):
        from vidtune.export.formats import ort_session

        self.sess = ort_session(path)
        self.input = self.sess.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.sess.run(None, {self.input: x.contiguous().numpy()})[0])


class _OpenVinoEngine:
    def __init__(self, path: Path):
        from vidtune.export.formats import require

        ov = require("openvino", "openvino")
        self.compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.request.infer({0: x.contiguous().numpy()})
        return torch.from_numpy(next(iter(out.values())).copy())


def _build(encoder, runtime: str):
    from vidtune.export.formats import write_onnx

    path = _engine_path(encoder)
    if not path.is_file():
        size = encoder.cfg.input_size
        example = torch.zeros(2, 3, size, size)
        write_onnx(encoder.eval(), example, path, "frames", "features")
        log.info("exported %s to %s for %s", encoder.name, path, runtime)
    return _OnnxEngine(path) if runtime == "onnxruntime" else _OpenVinoEngine(path)


def backbone_engine(encoder, runtime: str | None, device: torch.device, n_frames: int):
    """``(callable, runtime name)``: what runs ``encoder`` on normalised frames for this job.

    The PyTorch engine is the encoder itself (or its TorchScript graph); an exported engine that
    fails to build falls back to PyTorch with a warning, so a feature pass never fails for it.
    """
    from vidtune.runs.features import inference_encoder

    chosen = resolve(runtime, encoder, device, n_frames)
    if chosen == "torch":
        return inference_encoder(encoder, device, n_frames), "torch"
    key = _key(encoder, chosen)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            try:
                engine = _build(encoder, chosen)
            except (VidtuneError, OSError, RuntimeError) as exc:
                if runtime not in (None, "auto") and isinstance(exc, ConfigError):
                    raise
                log.warning("cannot run %s in %s (%s); using PyTorch", encoder.name, chosen, exc)
                return inference_encoder(encoder, device, n_frames), "torch"
            _engines[key] = engine
    return engine, chosen
