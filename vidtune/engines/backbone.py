"""Which engine runs the frozen backbone of a feature pass: PyTorch, ONNX Runtime or OpenVINO.

``torch``: eager PyTorch, or a traced and frozen TorchScript graph for big CPU jobs
(:func:`vidtune.engines.jit.inference_encoder`). ``onnxruntime`` / ``openvino``: the encoder is exported
once per weights fingerprint to ONNX (``<feature cache>/engines/``, :mod:`vidtune.engines.build`) and run
there; the session is kept for the life of the process. ``auto``: for frame-by-frame encoders on CPU, the
engine measured fastest for that encoder on this machine (:mod:`vidtune.engines.choice`); PyTorch
otherwise (GPUs, temporal-shift and video backbones, whose frames are not independent).

Features of the fp32 engines agree within :data:`FEATURE_TOLERANCE` (a test checks it), so the
feature cache does not tell them apart: a cached feature serves every fp32 runtime.

The light load path: once an engine ran a plain backbone (embed, index, search), a small JSON record
beside the engine says which engine and fingerprint belong to those exact weights, so later commands load
the engine without building the PyTorch backbone (:func:`load_light_backbone`). A trained run's record is
the runs layer's (:mod:`vidtune.runs.light`), served by the same :class:`EngineEncoder`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vidtune.engines.build import build_engine, engine_path, exportable, open_engine
from vidtune.engines.runtime import check_runtime, default_int8, default_runtime, engine_dir, installed
from vidtune.errors import ConfigError, VidtuneError

log = logging.getLogger(__name__)

# The largest |difference| between an fp32 engine's features and PyTorch's, relative to the feature scale
# (max |feature|), that still counts as "the same features" (test_runtimes checks it).
FEATURE_TOLERANCE = 1e-3
AUTO_MIN_FRAMES = 256  # below this, exporting the engine (seconds) costs more than it saves, unless cached


def resolve(runtime: str | None, encoder, device: torch.device, n_frames: int, int8: bool = False) -> str:
    """The concrete runtime for a job of ``n_frames`` frames: ``torch``, ``onnxruntime`` or ``openvino``.

    ``int8``: an int8 engine is wanted; ``auto`` then picks an installed engine whatever the job size,
    and when none can run the encoder it is an error (never a silent fp32 run)."""
    chosen = _resolve(runtime, encoder, device, n_frames if not int8 else max(n_frames, AUTO_MIN_FRAMES), int8)
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
            from vidtune.engines.sessions import RUNTIME_EXTRAS

            raise ConfigError("runtime", f"{runtime} is not installed; pip install 'vidtune[{RUNTIME_EXTRAS[runtime]}]' "
                                         "or use --runtime torch")
        return runtime
    from vidtune.engines.choice import choose

    return choose(encoder, n_frames, AUTO_MIN_FRAMES, exported_only=int8)


def backbone_engine(encoder, runtime: str | None, device: torch.device, n_frames: int,
                    int8: bool = False, calibration=None):
    """``(callable, runtime name)``: what runs ``encoder`` on normalised frames for this job.

    The PyTorch engine is the encoder itself (or its TorchScript graph); an fp32 engine that fails
    to build falls back to PyTorch with a warning, so a feature pass never fails for it. ``int8``:
    the engine quantised statically on ``calibration`` frames ``(N, 3, S, S)``, or a function returning
    them and their description, built once per weights (:func:`vidtune.engines.int8.quantised`); failing
    to build it is an error (features would silently change precision).
    """
    from vidtune.engines.jit import inference_encoder

    if isinstance(encoder, EngineEncoder):
        return encoder, encoder.runtime
    chosen = resolve(runtime, encoder, device, n_frames, int8)
    if chosen == "torch":
        return inference_encoder(encoder, device, n_frames), "torch"
    try:
        engine = build_engine(encoder, chosen, calibration, int8)
    except (VidtuneError, OSError, RuntimeError) as exc:
        if int8 or (runtime not in (None, "auto") and isinstance(exc, ConfigError)):
            raise
        log.warning("cannot run %s in %s (%s); using PyTorch", encoder.name, chosen, exc)
        return inference_encoder(encoder, device, n_frames), "torch"
    return engine, chosen + ("-int8" if int8 else "")


# -- a backbone served by its built engine, without building it in PyTorch ----------------------------------
class EngineEncoder:
    """A frozen frame encoder (a run's, or a plain backbone) served by its built ONNX Runtime / OpenVINO
    engine.

    What a short ``predict`` on a CPU pays for otherwise is mostly building the PyTorch backbone
    (``import timm`` alone takes 3-7 s here) just to hash its weights and hand them to an engine that
    was already built. The engine record (written the first time the encoder ran in that engine) holds
    the encoder's weights fingerprint, so cached features and engines are shared with the full path.
    ``record``: ``name``, ``num_features``, ``fingerprint`` and optionally ``grid``.
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


def backbone_record_path(name: str, pretrained: bool, weights) -> Path | None:
    from vidtune.utils import stable_hash

    ident = _backbone_identity(name, pretrained, weights)
    return None if ident is None else engine_dir() / f"backbone-{stable_hash(ident)}.json"


def remember_backbone_engine(name: str, pretrained: bool, weights, encoder) -> None:
    """After a feature pass ran the plain backbone ``name`` in an exported engine: note the engine, the
    fingerprint and the pretrained config, for :func:`load_light_backbone`."""
    if not isinstance(encoder, torch.nn.Module) or not exportable(encoder, torch.device("cpu")) \
            or not engine_path(encoder).is_file():
        return
    from vidtune.utils import atomic_write_json

    try:
        path = backbone_record_path(name, pretrained, weights)
        if path is None:
            return
        atomic_write_json(path, {
            "fingerprint": encoder.fingerprint(), "onnx": engine_path(encoder).name, "name": encoder.name,
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
        path = backbone_record_path(name, pretrained, weights)
        if path is None or not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        cfg = PretrainedConfig.from_dict(record["cfg"])
        if int(record.get("grid", 1)) != 1 or cfg.input_size != int(record["input_size"]):
            return None
        probe = EngineEncoder(None, "", record, cfg)
        chosen = _resolve(runtime, probe, device, 0)  # the runtime a feature pass would pick: same rules
        if chosen == "torch":
            return None
        engine = open_engine(engine_path(probe), chosen)  # None: not built, or damaged (removed: rebuilt later)
        return None if engine is None else EngineEncoder(engine, chosen, record, cfg)
    except (OSError, ValueError, KeyError, TypeError, VidtuneError) as exc:
        log.debug("light load of backbone %s not possible (%s); building it", name, exc)
        return None
