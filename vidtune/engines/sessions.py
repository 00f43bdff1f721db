"""Open a written ONNX / OpenVINO file for inference on CPU, without importing torch.

Used by the exported-model runner (:mod:`vidtune.engines.formats`), the feature-pass engines
(:mod:`vidtune.engines.backbone`) and the engine-only ``predict`` path. onnxruntime and openvino are
optional extras (``pip install 'vidtune[onnx]'``, ``'vidtune[openvino]'``).
"""

from __future__ import annotations

import atexit
from pathlib import Path

import numpy as np

from vidtune.errors import VidtuneError

FORMATS = ("onnx", "openvino", "torchscript")  # what a module can be written as (vidtune.engines.formats)
# what to install for each runtime / format (optional extras of the vidtune package)
RUNTIME_EXTRAS = {"onnxruntime": "onnx", "onnx": "onnx", "openvino": "openvino"}


def require(module: str, extra: str):
    """Import an optional dependency or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise VidtuneError(f"{module} is not installed ({exc}); install it with: pip install 'vidtune[{extra}]'") from None


def runtime_installed(runtime: str) -> bool:
    import importlib.util

    module = {"onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "torch"}[runtime]
    return importlib.util.find_spec(module) is not None


def ort_session(path_or_bytes, threads: int | None = None, spin: bool = True):
    """``spin=False``: idle intra-op threads sleep instead of spinning, leaving the cores to decoding
    workers between engine calls."""
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    src = str(path_or_bytes) if isinstance(path_or_bytes, (str, Path)) else path_or_bytes
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


# Every OpenVINO model compiled in this process, kept until exit. OpenVINO 2026.4's CPU plugin installs a
# signal stack (sigaltstack) for the thread that compiles a model and puts back the one it found when
# that model is destroyed: models destroyed in any order but the reverse of their compiling leave the
# thread on a freed stack, and the next signal with a Python handler (the SIGCHLD of a DataLoader worker,
# Ctrl-C) kills the process with SIGSEGV. Kept models are never destroyed out of order (and are reused
# instead of compiled again); at exit they go newest first.
_compiled: dict[tuple, object] = {}
_core = None


def openvino_compiled(path, threads: int | None = None, latency: bool = True):
    """An OpenVINO model (ONNX or IR file) compiled for the CPU in fp32, once per file and settings."""
    global _core
    ov = require("openvino", "openvino")
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, threads, latency)
    model = _compiled.get(key)
    if model is None:
        if _core is None:
            _core = ov.Core()
            atexit.register(_release_compiled)
        config = {"INFERENCE_PRECISION_HINT": "f32", **({"PERFORMANCE_HINT": "LATENCY"} if latency else {}),
                  **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        model = _compiled[key] = _core.compile_model(str(path), "CPU", config)
    return model


def _release_compiled() -> None:
    while _compiled:
        _compiled.pop(next(reversed(_compiled)))


# Frames per engine call on CPU. A batch of 32 costs a 1-2 s warm-up on its first call (ONNX Runtime's and
# OpenVINO's memory arenas sized for it; 935 MB peak RSS against 211 MB at batch 1) and is no faster after
# it: EfficientNet-Lite0, 1 thread, frames/s at batch 1/2/4/8/16: ONNX Runtime 67/64/60/52/53, OpenVINO
# 80/75/75/68/61; 2 threads OpenVINO 47/89/92/92/72 (best of 3 interleaved passes over 64 frames, 2 busy cores).
ENGINE_BATCH = 2


class EngineSession:
    """One ONNX graph run by ONNX Runtime or OpenVINO: float32 ndarray in, first output as ndarray.

    ``max_batch``: longer inputs are run ``max_batch`` rows at a time (see :data:`ENGINE_BATCH`); None:
    whole."""

    def __init__(self, path, runtime: str, threads: int | None = None, max_batch: int | None = ENGINE_BATCH):
        self.path = Path(path)
        self.runtime = runtime
        self.max_batch = max_batch
        if runtime == "onnxruntime":
            self._sess = ort_session(self.path, threads, spin=False)
            self._input = self._sess.get_inputs()[0].name
        elif runtime == "openvino":
            self._request = openvino_compiled(self.path, threads).create_infer_request()
        else:
            raise ValueError(f"no engine session for runtime {runtime!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.max_batch and len(x) > self.max_batch:
            return np.concatenate([self._run(x[i : i + self.max_batch]) for i in range(0, len(x), self.max_batch)])
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.runtime == "onnxruntime":
            return self._sess.run(None, {self._input: x})[0]
        out = self._request.infer({0: x})
        return np.array(next(iter(out.values())))  # a copy: the request reuses its output buffer
