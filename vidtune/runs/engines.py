"""Which engine runs the frozen backbone of a feature pass: PyTorch, ONNX Runtime or OpenVINO.

``torch``: eager PyTorch, or a traced and frozen TorchScript graph for big CPU jobs
(:func:`vidtune.runs.features.inference_encoder`). ``onnxruntime`` / ``openvino``: the encoder is
exported once per weights fingerprint to ONNX (``<feature cache>/engines/``) and run there; the
compiled session is kept for the life of the process. ``auto``: for frame-by-frame encoders on CPU,
the engine measured fastest for that encoder on this machine (:mod:`vidtune.runs.engine_choice`);
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
# ``auto`` measures (vidtune.runs.engine_choice); this order only serves small jobs before any measurement,
# among engines already built: OpenVINO ran Lite0 at 162 frames/s against ONNX Runtime's 140 (bench/runtime.py).
AUTO_ORDER = ("openvino", "onnxruntime")
# The largest |difference| between an fp32 engine's features and PyTorch's, relative to the feature scale
# (max |feature|), that still counts as "the same features" (test_runtimes checks it).
FEATURE_TOLERANCE = 1e-3
_AUTO_MIN_FRAMES = 256  # below this, exporting the engine (seconds) costs more than it saves, unless cached

_default = "torch"
_default_int8 = False
_engines: dict[tuple, object] = {}
_lock = threading.Lock()


def set_default_runtime(name: str, int8: bool = False) -> None:
    """The runtime feature passes use when they are not given one (the CLI's ``--runtime``, ``--int8``)."""
    global _default, _default_int8
    check_runtime(name)
    if int8 and name == "torch":
        raise ConfigError("int8", "needs an int8 engine: --runtime onnxruntime, openvino or auto")
    _default, _default_int8 = name, bool(int8)


def default_runtime() -> str:
    return _default


def default_int8() -> bool:
    return _default_int8


@contextlib.contextmanager
def using_runtime(name: str | None, int8: bool = False):
    """Make ``name`` (and ``int8``) the default for the duration of a block (one CLI command), then restore."""
    before = (_default, _default_int8)
    if name:
        set_default_runtime(name, int8)
    try:
        yield
    finally:
        set_default_runtime(*before)


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


def resolve(runtime: str | None, encoder, device: torch.device, n_frames: int, int8: bool = False) -> str:
    """The concrete runtime for a job of ``n_frames`` frames: ``torch``, ``onnxruntime`` or ``openvino``.

    ``int8``: an int8 engine is wanted; ``auto`` then picks an installed engine whatever the job size,
    and when none can run the encoder it is an error (never a silent fp32 run)."""
    chosen = _resolve(runtime, encoder, device, n_frames if not int8 else max(n_frames, _AUTO_MIN_FRAMES), int8)
    if int8 and chosen == "torch":
        raise ConfigError("int8", f"needs ONNX Runtime or OpenVINO running a frame-by-frame encoder on CPU; "
                                  f"{encoder.name} on {device.type} runs in PyTorch here")
    return chosen


def _resolve(runtime: str | None, encoder, device: torch.device, n_frames: int, int8: bool = False) -> str:
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
    from vidtune.runs.engine_choice import choose

    return choose(encoder, n_frames, _AUTO_MIN_FRAMES, exported_only=int8)


def _key(encoder, runtime: str) -> tuple:
    return (encoder.fingerprint(), encoder.cfg.input_size, runtime)


def _built(encoder, runtime: str) -> bool:
    """The engine is ready in this process, or its ONNX graph is on disk (only a session to open)."""
    return _key(encoder, runtime) in _engines or _engine_path(encoder).is_file()


def engine_threads() -> int:
    """Cores left to the engine beside the decoding workers: on 2 cores one thread for ONNX Runtime next to
    one decoding process finished a warm 8-video predict in 3.3-5.9 s against 4.9-7.5 s with two threads
    (three interleaved runs), which then fought the worker for the cores."""
    import os

    from vidtune.runs.features import default_workers

    return max(1, (os.cpu_count() or 2) - default_workers())


class _OnnxEngine:
    """An ONNX Runtime session over the encoder's graph: torch ``(N, 3, S, S)`` in, torch features out."""

    def __init__(self, path: Path):
        from vidtune.export.formats import ort_session

        self.sess = ort_session(path, engine_threads())
        self.input = self.sess.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.sess.run(None, {self.input: x.contiguous().numpy()})[0])


class _OpenVinoEngine:
    def __init__(self, path: Path):
        from vidtune.export.formats import require

        ov = require("openvino", "openvino")
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "INFERENCE_NUM_THREADS": engine_threads()}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.request.infer({0: x.contiguous().numpy()})
        return torch.from_numpy(next(iter(out.values())).copy())


def _build(encoder, runtime: str, calibration=None, int8: bool = False):
    from vidtune.export.formats import write_onnx

    path = _engine_path(encoder)
    if not path.is_file():
        size = encoder.cfg.input_size
        example = torch.zeros(2, 3, size, size)
        write_onnx(encoder.eval(), example, path, "frames", "features")
        log.info("exported %s to %s for %s", encoder.name, path, runtime)
    if int8:  # built once per weights, calibrated on frames spread over the first int8 job
        from vidtune.runs.calibration import quantised

        path = quantised(path, calibration)
    return _OnnxEngine(path) if runtime == "onnxruntime" else _OpenVinoEngine(path)


def backbone_engine(encoder, runtime: str | None, device: torch.device, n_frames: int,
                    int8: bool = False, calibration=None):
    """``(callable, runtime name)``: what runs ``encoder`` on normalised frames for this job.

    The PyTorch engine is the encoder itself (or its TorchScript graph); an fp32 engine that fails
    to build falls back to PyTorch with a warning, so a feature pass never fails for it. ``int8``:
    the engine quantised statically on ``calibration`` frames ``(N, 3, S, S)``, or a function returning
    them and their description (:mod:`vidtune.runs.calibration`), built once per weights; failing to
    build it is an error (features would silently change precision).
    """
    from vidtune.runs.features import inference_encoder

    if isinstance(encoder, EngineEncoder):
        return encoder, encoder.runtime
    chosen = resolve(runtime, encoder, device, n_frames, int8)
    if chosen == "torch":
        return inference_encoder(encoder, device, n_frames), "torch"
    key = _key(encoder, chosen) + (("int8",) if int8 else ())
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            try:
                engine = _build(encoder, chosen, calibration, int8)
            except (VidtuneError, OSError, RuntimeError) as exc:
                if int8 or (runtime not in (None, "auto") and isinstance(exc, ConfigError)):
                    raise
                log.warning("cannot run %s in %s (%s); using PyTorch", encoder.name, chosen, exc)
                return inference_encoder(encoder, device, n_frames), "torch"
            _engines[key] = engine
    return engine, chosen + ("-int8" if int8 else "")


# -- a run's backbone as an engine, without building the PyTorch backbone ----------------------------------
class EngineEncoder:
    """A run's frozen frame encoder served by its built ONNX Runtime / OpenVINO engine.

    What a short ``predict`` on a CPU pays for otherwise is mostly building the PyTorch backbone
    (``import timm`` alone takes 3-7 s here) just to hash its weights and hand them to an engine that
    was already built. The run's engine record (written the first time the run is applied with that
    engine) holds the encoder's weights fingerprint, so cached features and engines are shared with
    the full path.
    """

    frame_independent = True
    clip_len = 1
    clip_fps = 0.0

    def __init__(self, engine, runtime: str, record: dict, cfg):
        self.engine = engine
        self.runtime = runtime
        self.name = record["name"]
        self.cfg = cfg
        self.num_features = int(record["num_features"])
        self.grid = int(record.get("grid", 1))
        self._fingerprint = record["fingerprint"]

    def fingerprint(self) -> str:
        return self._fingerprint

    def eval(self):
        return self

    def to(self, *_, **__):
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine(x)


def _run_record(run_dir) -> Path:
    from vidtune.runs.config import RunConfig
    from vidtune.utils import file_digest, stable_hash

    config = RunConfig.read(run_dir)
    return engine_dir() / f"run-{stable_hash([config.run_id, file_digest(Path(run_dir) / 'model.safetensors')])}.json"


def remember_run_engine(run_dir, encoder) -> None:
    """After a run's feature pass used an exported engine: note which one, for :func:`load_light`."""
    if not isinstance(encoder, torch.nn.Module) or not _engine_path(encoder).is_file():
        return
    from vidtune.utils import atomic_write_json

    try:
        atomic_write_json(_run_record(run_dir), {
            "fingerprint": encoder.fingerprint(), "onnx": _engine_path(encoder).name, "name": encoder.name,
            "num_features": encoder.num_features, "grid": encoder.grid, "input_size": encoder.cfg.input_size})
    except (OSError, VidtuneError) as exc:
        log.debug("engine record not written: %s", exc)


def load_light(run_dir, device: torch.device, runtime: str | None = None):
    """The run with its backbone as an already-built engine (:class:`EngineEncoder`) and its head in
    PyTorch, or None when that does not apply (not CPU, runtime torch, no engine built for it yet,
    temporal shifts); the caller then loads the run in full."""
    import json

    from vidtune.errors import CheckpointError

    runtime = check_runtime(runtime or _default)
    if device.type != "cpu" or runtime == "torch" or _default_int8:
        return None
    names = [runtime] if runtime != "auto" else [n for n in AUTO_ORDER if installed(n)]
    names = [n for n in names if installed(n)]
    if not names:
        return None
    try:
        record_path = _run_record(run_dir)
        if not record_path.is_file():
            return None
        record = json.loads(record_path.read_text(encoding="utf-8"))
        onnx = engine_dir() / record["onnx"]
        if not onnx.is_file():
            return None
        if runtime == "auto":  # the engines measured faster than PyTorch for this encoder, fastest first
            from vidtune.runs.engine_choice import auto_engines

            names = auto_engines(record["fingerprint"], int(record["input_size"]), names)
            if not names:
                return None
        return _assemble_light(run_dir, record, onnx, names[0])
    except (OSError, ValueError, KeyError, CheckpointError) as exc:
        log.debug("light load of %s not possible (%s); loading the full run", run_dir, exc)
        return None


def _assemble_light(run_dir, record: dict, onnx: Path, runtime: str):
    from safetensors.torch import load_file

    from vidtune.models.classifier import VideoClassifier
    from vidtune.models.heads import create_head
    from vidtune.runs.config import RunConfig
    from vidtune.runs.store import LoadedRun

    config = RunConfig.read(run_dir)
    if (not config.model.per_frame or config.model.audio is not None  # fused runs: their audio encoder too
            or config.transform.input_size != int(record["input_size"])):
        return None
    state = load_file(str(Path(run_dir) / "model.safetensors"))
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    spec = config.model
    head = create_head(spec.head_kind, int(record["num_features"]), len(config.labels), spec.frames, grid=spec.grid,
                       **spec.head)
    head.load_state_dict(head_state, strict=True)
    key = (record["fingerprint"], int(record["input_size"]), runtime)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _OnnxEngine(onnx) if runtime == "onnxruntime" else _OpenVinoEngine(onnx)
            _engines[key] = engine
    encoder = EngineEncoder(engine, runtime, record, config.transform)
    model = VideoClassifier.__new__(VideoClassifier)
    torch.nn.Module.__init__(model)
    model.head = head.eval()
    object.__setattr__(model, "encoder", encoder)
    model.audio = None
    return LoadedRun(model.eval(), config)
