"""Which engine runs the frozen backbone of a feature pass: PyTorch, ONNX Runtime or OpenVINO.

``torch``: eager PyTorch, or a traced and frozen TorchScript graph for big CPU jobs
(:func:`vidtune.runs.features.inference_encoder`). ``onnxruntime`` / ``openvino``: the encoder is
exported once per weights fingerprint to ONNX (``<feature cache>/engines/``) and run there; the
compiled session is kept for the life of the process. ``auto``: for frame-by-frame encoders on CPU,
the engine measured fastest for that encoder on this machine (:mod:`vidtune.runs.engine_choice`);
PyTorch otherwise (GPUs, temporal-shift and video backbones, whose frames are not independent).

Features of the fp32 engines agree within :data:`FEATURE_TOLERANCE` (a test checks it), so the
feature cache does not tell them apart: a cached feature serves every fp32 runtime.

The light load path: once an engine ran a run's backbone (or a plain backbone: embed, index, search), a
small JSON record beside the engine says which engine and fingerprint belong to those exact weights, so
later commands load the engine without building the PyTorch backbone (:func:`load_light`,
:func:`load_light_backbone`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch

from vidtune.errors import ConfigError, VidtuneError
from vidtune.runs.runtime import (  # noqa: F401 (re-exported: their home before vidtune.runs.runtime)
    AUTO_ORDER,
    RUNTIMES,
    check_runtime,
    default_int8,
    default_runtime,
    engine_dir,
    engine_threads,
    installed,
    run_record_path,
    set_default_runtime,
    using_runtime,
)

log = logging.getLogger(__name__)

# The largest |difference| between an fp32 engine's features and PyTorch's, relative to the feature scale
# (max |feature|), that still counts as "the same features" (test_runtimes checks it).
FEATURE_TOLERANCE = 1e-3
_AUTO_MIN_FRAMES = 256  # below this, exporting the engine (seconds) costs more than it saves, unless cached

_engines: dict[tuple, object] = {}
_lock = threading.Lock()


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
    runtime = check_runtime(runtime or default_runtime())
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


class _Engine:
    """An ONNX Runtime / OpenVINO session over the encoder's graph: torch ``(N, 3, S, S)`` in, torch out."""

    def __init__(self, path: Path, runtime: str):
        from vidtune.export.sessions import EngineSession

        self.session = EngineSession(path, runtime, engine_threads())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session(x.contiguous().numpy()))


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
    return _Engine(path, runtime)


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


def remember_run_engine(run_dir, encoder, head: torch.nn.Module | None = None) -> None:
    """After a run's feature pass used an exported engine: note which one, for :func:`load_light`.

    ``head``: the run's temporal head, also exported to ONNX beside the record (once) when the run can be
    applied by engines alone (frame features in, logits out: no flow cues, no sound), so that the next
    ``predict`` runs without torch (:mod:`vidtune.runs.lean`).
    """
    if not isinstance(encoder, torch.nn.Module) or not _engine_path(encoder).is_file():
        return
    from vidtune.utils import atomic_write_json

    try:
        record_path = run_record_path(run_dir)
        record = {"fingerprint": encoder.fingerprint(), "onnx": _engine_path(encoder).name, "name": encoder.name,
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
    from vidtune.runs.config import RunConfig

    config = RunConfig.read(run_dir)
    if not config.model.per_frame or config.model.audio is not None or config.model.flow > 0:
        return None
    if path.is_file():
        return path
    from vidtune.export.formats import write_onnx

    per_frame = (encoder.grid * encoder.grid, encoder.num_features) if encoder.grid > 1 else (encoder.num_features,)
    example = torch.zeros(2, config.frames, *per_frame)
    try:
        write_onnx(head.eval(), example, path, "features", "logits")
    except (VidtuneError, RuntimeError) as exc:
        log.info("the head of %s was not exported (%s); predict keeps loading it in PyTorch", run_dir, exc)
        return None
    return path


def load_light(run_dir, device: torch.device, runtime: str | None = None):
    """The run with its backbone as an already-built engine (:class:`EngineEncoder`) and its head in
    PyTorch, or None when that does not apply (not CPU, runtime torch, no engine built for it yet,
    temporal shifts); the caller then loads the run in full."""
    import json

    from vidtune.errors import CheckpointError

    runtime = check_runtime(runtime or default_runtime())
    if device.type != "cpu" or runtime == "torch" or default_int8():
        return None
    names = [runtime] if runtime != "auto" else [n for n in AUTO_ORDER if installed(n)]
    names = [n for n in names if installed(n)]
    if not names:
        return None
    try:
        record_path = run_record_path(run_dir)
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
            engine = _Engine(onnx, runtime)
            _engines[key] = engine
    encoder = EngineEncoder(engine, runtime, record, config.transform)
    model = VideoClassifier.__new__(VideoClassifier)
    torch.nn.Module.__init__(model)
    model.head = head.eval()
    object.__setattr__(model, "encoder", encoder)
    model.audio = None
    return LoadedRun(model.eval(), config)


# -- a plain backbone (no run) as an engine: embed, index build|add and search without a run -----------------
_RECORD_VERSION = 1


def _backbone_identity(name: str, pretrained: bool, weights) -> dict | None:
    """What makes ``create_backbone(name, pretrained, weights)`` the same model in another process, known
    without building it: the weights file's digest, the registered offline weights' identity, or a seeded
    random init; plus the versions of the libraries that build it. None when only building it tells
    (weights downloaded from a hub): that backbone always takes the full path."""
    from importlib import metadata

    from vidtune.utils import file_digest

    ident: dict = {"v": _RECORD_VERSION, "name": name}
    if weights is not None:  # file_digest samples big files: a rewrite that it misses still changes the mtime
        st = Path(weights).stat()
        ident["weights"] = [file_digest(weights), st.st_size, st.st_mtime_ns]
    elif pretrained:
        from vidtune.models.backbones import registered_backbones

        spec = registered_backbones().get(name)
        if spec is None or spec.offline_id is None:
            return None
        ident["offline"] = spec.offline_id()
    else:
        ident["init"] = "seed0"  # vidtune.index.embed builds random-init baselines under torch.manual_seed(0)
    versions = {}
    for package in ("vidtune", "torch", "timm", "torchvision"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    ident["versions"] = versions
    return ident


def _backbone_record(name: str, pretrained: bool, weights) -> Path | None:
    from vidtune.utils import stable_hash

    ident = _backbone_identity(name, pretrained, weights)
    return None if ident is None else engine_dir() / f"backbone-{stable_hash(ident)}.json"


def remember_backbone_engine(name: str, pretrained: bool, weights, encoder) -> None:
    """After a feature pass ran the plain backbone ``name`` in an exported engine: note the engine, the
    fingerprint and the pretrained config, for :func:`load_light_backbone`."""
    if not isinstance(encoder, torch.nn.Module) or not exportable(encoder, torch.device("cpu")) \
            or not _engine_path(encoder).is_file():
        return
    from vidtune.utils import atomic_write_json

    try:
        path = _backbone_record(name, pretrained, weights)
        if path is None:
            return
        atomic_write_json(path, {
            "fingerprint": encoder.fingerprint(), "onnx": _engine_path(encoder).name, "name": encoder.name,
            "num_features": encoder.num_features, "grid": encoder.grid, "input_size": encoder.cfg.input_size,
            "cfg": encoder.cfg.to_dict()})
    except (OSError, VidtuneError) as exc:
        log.debug("backbone engine record not written: %s", exc)


def load_light_backbone(name: str, pretrained: bool, weights, device: torch.device,
                        runtime: str | None = None) -> EngineEncoder | None:
    """The plain backbone ``name`` as its already-built engine (no PyTorch model built, timm not imported),
    or None when that does not apply (not CPU, runtime torch, int8, no record or engine for these exact
    weights, weights only a download identifies); the caller then builds the backbone."""
    import json

    from vidtune.models.backbones import PretrainedConfig

    runtime = check_runtime(runtime or default_runtime())
    if device.type != "cpu" or runtime == "torch" or default_int8():
        return None
    try:
        path = _backbone_record(name, pretrained, weights)
        if path is None or not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        cfg = PretrainedConfig.from_dict(record["cfg"])
        if int(record.get("grid", 1)) != 1 or cfg.input_size != int(record["input_size"]):
            return None
        probe = EngineEncoder(None, "", record, cfg)
        chosen = _resolve(runtime, probe, device, 0)  # the runtime a feature pass would pick: same rules
        onnx = _engine_path(probe)
        if chosen == "torch" or not onnx.is_file():
            return None
        key = _key(probe, chosen)
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _Engine(onnx, chosen)
                _engines[key] = engine
        return EngineEncoder(engine, chosen, record, cfg)
    except (OSError, ValueError, KeyError, TypeError, VidtuneError) as exc:
        log.debug("light load of backbone %s not possible (%s); building it", name, exc)
        return None
