"""Static int8 quantisation of a network's convolutions, and the int8 engine of a frozen backbone.

ONNX Runtime's ``quantize_static`` (QDQ format, per-channel int8 weights, uint8 activations) sees
calibration inputs to pick activation ranges; only ``Conv`` nodes are quantised (the backbone), a
temporal head and classifier stay fp32. OpenVINO runs the same QDQ graph in int8.

A feature pass's int8 engine (``<weights fingerprint>-<input size>-int8.onnx`` beside the fp32 graph in
the engine cache) is quantised once per encoder weights by the first int8 job, on frames that job
provides. Its record (``...-int8.json``, :mod:`vidtune.engines.cache`) says how it was calibrated and
holds the file's digest: that digest is the engine's identity (:func:`int8_tag`), so features of another
calibration are never served in place of this engine's, and it is checked before the engine is used
(a damaged int8 engine is removed and calibrated again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch

from vidtune.engines import cache
from vidtune.engines.formats import quiet, require
from vidtune.utils import atomic_path, file_digest

log = logging.getLogger(__name__)

# int8 may replace fp32 by default only when it costs less than this (accuracy, or mAP for multi-label
# runs, as a fraction: 0.01 = one point) on the user's validation data.
DEFAULT_BOUND = 0.01


class _ClipReader:
    """onnxruntime's CalibrationDataReader protocol over calibration inputs, one at a time."""

    def __init__(self, name: str, clips: torch.Tensor):
        self._it = iter([{name: c[None].numpy()} for c in clips])

    def get_next(self):
        return next(self._it, None)


def quantise_file(fp32_path, out_path, clips: torch.Tensor, input_name: str = "clips", method: str = "MinMax") -> None:
    """Write the int8 (QDQ) version of the ONNX file ``fp32_path`` to ``out_path``, calibrated on ``clips``
    (``method``: an onnxruntime ``CalibrationMethod`` name; bench/int8_calibration.py compares them)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with atomic_path(out_path) as tmp, quiet():  # it logs a "consider pre-processing" hint on every call
        quantize_static(str(fp32_path), str(tmp), _ClipReader(input_name, clips), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, method))


def int8_path(fp32_path) -> Path:
    """Where the int8 engine of the fp32 engine file ``fp32_path`` lives."""
    fp32_path = Path(fp32_path)
    return fp32_path.with_name(fp32_path.stem + "-int8.onnx")


def quantised(fp32_path, calibration: torch.Tensor | Callable[[], tuple[torch.Tensor, dict]] | None) -> Path:
    """The int8 engine file of ``fp32_path``, quantised now on ``calibration`` when there is no sound one.

    ``calibration``: frames ``(N, 3, S, S)``, or a function returning ``(frames, description)`` (called only
    when the engine must be built, so a job whose engine exists decodes nothing for it)."""
    q = int8_path(fp32_path)
    if cache.verified(q):
        return q
    if calibration is None:
        raise ValueError("an int8 engine needs calibration frames")

    def write(path: Path) -> None:
        frames, info = calibration() if callable(calibration) else (calibration, {"frames": int(len(calibration))})
        quantise_file(fp32_path, path, frames.float().contiguous(), "frames")
        write.info = info
        log.info("quantised %s to int8 on %d frames (%s)", Path(fp32_path).name, len(frames),
                 ", ".join(f"{k} {v}" for k, v in info.items()))

    with cache.writing(q):
        if cache.problem(q) is not None:
            write(q)
            cache.seal(q, **write.info, digest=file_digest(q))
    return q


def int8_tag(fp32_path) -> str | None:
    """The identity of the sound int8 engine built from ``fp32_path`` (a digest prefix), None when there is
    none (never built, or damaged and removed just now)."""
    q = int8_path(fp32_path)
    if not cache.verified(q):
        return None
    record = cache.read_record(q)
    digest = record.get("digest") if record else None
    return digest[:16] if isinstance(digest, str) else None
