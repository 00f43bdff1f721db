"""Which runtime a command asked for (``--runtime``, ``--int8``), where engines live, and how many threads
they get, without torch.

The engines themselves are in :mod:`vidtune.engines.backbone` (which imports torch); the engine-only
``predict`` path needs only what is here and :mod:`vidtune.engines.sessions`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from vidtune.errors import ConfigError

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
# ``auto``'s order of preference on CPU, fastest first: OpenVINO runs Lite0 at 162 frames/s against ONNX
# Runtime's 140 (batch 32, bench/runtime.py) and finished `vidtune predict` on 8 real videos first in four of
# five bench/sidebyside.py runs, with less memory (README, "Export and fast CPU inference").
AUTO_ORDER = ("openvino", "onnxruntime")

_default = "torch"
_default_int8 = False


def check_runtime(name: str) -> str:
    if name not in RUNTIMES:
        raise ConfigError("runtime", f"must be one of {', '.join(RUNTIMES)}, got {name!r}")
    return name


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


def installed(runtime: str) -> bool:
    from vidtune.engines.sessions import runtime_installed

    return runtime_installed(runtime)


def engine_dir() -> Path:
    """``<feature cache>/engines``: the engine files, their records and the speed measurements."""
    from vidtune.utils import default_cache_dir

    return default_cache_dir() / "engines"


ENGINE_THREADS_ENV = "VIDTUNE_ENGINE_THREADS"


def engine_threads() -> int:
    """Threads of an ONNX Runtime / OpenVINO engine: ``$VIDTUNE_ENGINE_THREADS``, else every core. The
    decoding workers beside it run at a lower priority and the engine's threads sleep between calls
    instead of spinning, so they share the cores instead of fighting for them: on 2 cores 2 engine threads
    fed 104-106 frames/s of short H.264 clips against 76-83 with 1, and the same on long real videos
    (``bench/pipeline.py --threads 1,2``)."""
    text = os.environ.get(ENGINE_THREADS_ENV, "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    return max(1, os.cpu_count() or 2)


_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")  # CUDA, WSL, ROCm


def cpu_only(device: str) -> bool:
    """``device`` is the CPU: asked for, or ``auto`` on a machine where PyTorch could not find a GPU
    (told without importing torch when it is not imported yet)."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    if "torch" in sys.modules:  # already paid for: ask it
        return not sys.modules["torch"].cuda.is_available()
    return not any(os.path.exists(node) for node in _GPU_NODES)
