"""``--runtime auto``: the backbone engine measured fastest on this machine, remembered on disk.

The first time ``auto`` chooses for an encoder (weights fingerprint + input size) on a machine, every
installed engine (ONNX Runtime, OpenVINO, and PyTorch's TorchScript graph as the baseline) runs the same
batch of :data:`BATCH` frames: one warm-up call each, then :data:`REPEATS` timed calls each, interleaved
(round ``r`` starts at a different engine, so a burst of load from another process hits all of them),
at the thread count the job uses (:func:`vidtune.engines.runtime.engine_threads`). The median call gives
frames/s; engines within :data:`TIE` of the fastest count as tied (:func:`ranked`). The result goes
to ``<feature cache>/engines/speed-<hash>.json``, the hash over the encoder fingerprint, input size,
thread count, runtime versions and CPU identity (model name, core count, OS and architecture), so an
upgrade or another machine measures again and later jobs only read it.
An engine that is not installed, or that fails to build or run, is not a candidate (the file says why).

Small jobs (under :data:`vidtune.engines.backbone.AUTO_MIN_FRAMES`) never pay for a measurement (it
exports the encoder): with a measurement on file they take its fastest engine (already exported by then),
without one an engine already built in :data:`vidtune.engines.runtime.AUTO_ORDER`, else PyTorch.
``VIDTUNE_RUNTIME_ORDER=openvino,onnxruntime,torch`` skips the measurement: the first installed name wins.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from vidtune.engines.runtime import AUTO_ORDER, engine_dir, engine_threads, installed
from vidtune.errors import ConfigError
from vidtune.utils import atomic_write_json, stable_hash

log = logging.getLogger(__name__)

SPEED_VERSION = 1
EXPORTED = ("openvino", "onnxruntime")  # engines that run the exported graph; "torch" is the baseline
BATCH = 8  # frames per timed call
REPEATS = 4  # timed calls per engine, interleaved; the median counts
TIE = 0.10  # engines within 10% of the fastest count as tied (three rounds on this shared machine: see README)
# among tied engines: OpenVINO first (it finished end-to-end predict first in four of five bench/sidebyside.py
# runs, with less memory), then ONNX Runtime, then PyTorch (nothing exported)
PREFERENCE = ("openvino", "onnxruntime", "torch")
ORDER_ENV = "VIDTUNE_RUNTIME_ORDER"
_DISTRIBUTIONS = {"torch": ("torch",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
                  "openvino": ("openvino",)}
_logged: set = set()


def cpu_identity() -> dict:
    """What makes speeds comparable: the CPU model, its core count, the OS and architecture."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"model": model or platform.processor() or "unknown", "cores": os.cpu_count() or 0,
            "platform": f"{platform.system()}-{platform.machine()}"}


def runtime_versions() -> dict:
    """Installed versions of the engines (None: not installed), read from package metadata (no import)."""
    out = {}
    for name, dists in _DISTRIBUTIONS.items():
        out[name] = None
        for dist in dists:
            try:
                out[name] = f"{dist} {importlib.metadata.version(dist)}"
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def speed_key(fingerprint: str, input_size: int) -> dict:
    return {"v": SPEED_VERSION, "fingerprint": fingerprint, "input_size": int(input_size),
            "threads": engine_threads(), "batch": BATCH, "versions": runtime_versions(), "cpu": cpu_identity()}


def speed_path(key: dict) -> Path:
    return engine_dir() / f"speed-{stable_hash(key)}.json"


def read_speeds(fingerprint: str, input_size: int) -> dict | None:
    """The measurement on file for this encoder on this machine (``frames_per_second`` per engine), or None."""
    import json

    key = speed_key(fingerprint, input_size)
    path = speed_path(key)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable engine measurement %s (%s); measuring again", path, exc)
        return None
    if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("frames_per_second"),
                                                                                   dict):
        return None
    return record


def ranked(record: dict, names) -> list[str]:
    """``names`` that the measurement timed, best first (an engine it could not run is left out).

    Best: the fastest, except that engines within :data:`TIE` of it count as tied and the first of them
    in :data:`PREFERENCE` wins, so that two engines a few percent apart (within the noise of a shared
    machine) do not swap from one machine or measurement to the next."""
    fps = record["frames_per_second"]
    timed = sorted((n for n in names if isinstance(fps.get(n), (int, float))), key=lambda n: -fps[n])
    if not timed:
        return []
    near = [n for n in timed if fps[n] >= fps[timed[0]] * (1 - TIE)]
    first = min(near, key=lambda n: PREFERENCE.index(n) if n in PREFERENCE else len(PREFERENCE))
    return [first] + [n for n in timed if n != first]


def measure(encoder, names) -> dict:
    """Time each engine in ``names`` on one batch of frames and write the record; returns it."""
    import torch

    t_start = time.perf_counter()
    threads = engine_threads()
    size = int(encoder.cfg.input_size)
    x = torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    before = torch.get_num_threads()
    runners, failed = {}, {}
    times: dict[str, list[float]] = {}
    try:
        torch.set_num_threads(threads)  # the baseline at the exported engines' thread count
        for name in names:
            try:
                run = _runner(encoder, name)
                with torch.inference_mode():
                    out = run(x)  # warm-up: first-call allocations and graph optimisation
                if out.shape[0] != BATCH:
                    raise RuntimeError(f"{tuple(out.shape)} features for {BATCH} frames")
                runners[name] = run
            except Exception as exc:  # an engine that cannot run this encoder is not a candidate
                failed[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                log.info("auto: %s cannot run %s (%s); not a candidate", name, encoder.name, failed[name])
        times = {n: [] for n in runners}
        order = list(runners)
        t_timed = time.perf_counter()
        with torch.inference_mode():
            for r in range(REPEATS if order else 0):
                for name in order[r % len(order):] + order[: r % len(order)]:  # each round starts elsewhere
                    t0 = time.perf_counter()
                    runners[name](x)
                    times[name].append(time.perf_counter() - t0)
        timed = time.perf_counter() - t_timed
    finally:
        torch.set_num_threads(before)
    key = speed_key(encoder.fingerprint(), size)
    record = {"key": key, "encoder": encoder.name,
              "frames_per_second": {n: round(BATCH / statistics.median(t), 2) for n, t in times.items()},
              "failed": failed, "repeats": REPEATS,
              "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "seconds": round(time.perf_counter() - t_start, 3), "timed_seconds": round(timed, 3)}
    try:
        atomic_write_json(speed_path(key), record)
    except Exception as exc:  # a read-only cache costs a measurement per process, never the job
        log.warning("engine measurement not saved (%s)", exc)
    return record


def _runner(encoder, name: str):
    """A callable running ``encoder`` in ``name``: the engine a job would use (built once, kept)."""
    import torch

    if name == "torch":
        from vidtune.engines.jit import inference_encoder

        return inference_encoder(encoder, torch.device("cpu"), 1 << 30)  # TorchScript, as for big jobs
    from vidtune.engines.build import build_engine

    return build_engine(encoder, name)


def _order_from_env() -> list[str] | None:
    text = os.environ.get(ORDER_ENV, "").strip()
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ("torch", *EXPORTED)]
    if bad:
        raise ConfigError("runtime_order", f"{ORDER_ENV} lists {', '.join(bad)}; use a comma-separated order of "
                                           f"torch, onnxruntime, openvino")
    return names


def choose(encoder, n_frames: int, min_frames: int, exported_only: bool = False) -> str:
    """``auto``'s engine for a frame-by-frame encoder on CPU and a job of ``n_frames`` frames.

    ``exported_only`` (int8): the fastest of ONNX Runtime and OpenVINO, never PyTorch (their fp32 speeds
    rank them)."""
    from vidtune.engines.build import built

    env = _order_from_env()
    if env is not None:
        for name in env:
            if name == "torch":
                if exported_only:  # int8: only an exported engine will do
                    continue
                return "torch"
            if installed(name) and (n_frames >= min_frames or built(encoder, name)):
                _say(encoder, name, f"first installed in {ORDER_ENV}={','.join(env)}")
                return name
        return "torch"
    candidates = [n for n in EXPORTED if installed(n)]
    if not candidates:
        return "torch"
    size = int(encoder.cfg.input_size)
    record = read_speeds(encoder.fingerprint(), size)
    if record is None:
        if n_frames < min_frames:  # a small job does not pay for exports and a measurement
            name = next((n for n in AUTO_ORDER if n in candidates and built(encoder, n)), "torch")
            if name != "torch":
                _say(encoder, name, "already built; not measured on this machine yet")
            return name
        record = measure(encoder, ["torch", *candidates])
        how = (f"measured now: {record['timed_seconds']:.1f} s timed, {record['seconds']:.1f} s with building "
               "the engines")
    else:
        how = "measured earlier"
    order = ranked(record, ["torch", *candidates])
    name = next((n for n in order if n != "torch" or not exported_only), "torch")
    if name != "torch" and n_frames < min_frames and not built(encoder, name):
        name = "torch"  # its graph was removed since: a small job does not export it again
    fps = ", ".join(f"{n} {record['frames_per_second'][n]:.0f}" for n in order)
    _say(encoder, name, f"{how}, frames/s at {record['key']['threads']} thread(s): {fps}")
    return name


def auto_engines(fingerprint: str, input_size: int, names: list[str]) -> list[str]:
    """The exported engines among ``names`` worth using for this encoder, best first: the measured ones
    faster than PyTorch, or ``names`` as given when nothing was measured (an environment order wins)."""
    env = _order_from_env()
    if env is not None:
        return [n for n in env[: env.index("torch")] if n in names] if "torch" in env else \
            [n for n in env if n in names]
    record = read_speeds(fingerprint, input_size)
    if record is None:
        return names
    order = ranked(record, ["torch", *names])
    return order[: order.index("torch")] if "torch" in order else order


def engine_order(runtime: str, record: dict) -> list[str]:
    """The installed exported engines a runtime name allows for the encoder of an engine record
    (``fingerprint``, ``input_size``), preferred first: for ``auto`` the ones measured faster than PyTorch
    (:func:`auto_engines`). Empty: PyTorch it is."""
    names = [runtime] if runtime != "auto" else list(AUTO_ORDER)
    names = [n for n in names if n in EXPORTED and installed(n)]
    if runtime == "auto" and names:
        names = auto_engines(record["fingerprint"], int(record["input_size"]), names)
    return names


def _say(encoder, name: str, why: str) -> None:
    key = (encoder.fingerprint(), name, why)
    if key not in _logged:
        _logged.add(key)
        log.info("--runtime auto: %s for %s (%s)", name, encoder.name, why)
