"""``vidtune export --int8``: the exported classifier's convolutions quantised to int8, calibrated on the
run's own training clips.

ONNX Runtime's ``quantize_static`` (:func:`vidtune.engines.int8.quantise_file`: QDQ format, per-channel
int8 weights, uint8 activations) sees clips of the run's training data to pick activation ranges; only
``Conv`` nodes are quantised (the backbone), the temporal head and classifier stay fp32. OpenVINO runs the
same QDQ graph in int8.
The accuracy change against fp32 is measured on the run's validation data and reported with the
bound int8 must stay under before anything would use it by default.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vidtune.engines.formats import ExportedModel, quiet, require
from vidtune.engines.int8 import DEFAULT_BOUND, quantise_file  # noqa: F401 (DEFAULT_BOUND: documented here)
from vidtune.errors import DatasetError, VidtuneError
from vidtune.progress import NullProgress
from vidtune.utils import atomic_path

log = logging.getLogger(__name__)

def score(logits: np.ndarray, items, config) -> float:
    """Top-1 accuracy (single-label) or mAP (multi-label) of ``logits`` on labelled ``items``."""
    from vidtune.data.manifest import item_labels
    from vidtune.runs.metrics import average_precision

    labels = config.labels
    if config.multilabel:
        y = torch.zeros(len(items), len(labels))
        for r, it in enumerate(items):
            for lab in item_labels(it, config.background):
                y[r, labels.index(lab)] = 1.0
        s = torch.from_numpy(logits).sigmoid()
        aps = [average_precision(s[:, j], y[:, j] > 0) for j in range(len(labels)) if y[:, j].any()]
        return float(sum(aps) / len(aps)) if aps else float("nan")
    y = np.array([labels.index(it.label) for it in items])
    return float((logits.argmax(-1) == y).mean())


def quantise_onnx(model, config, fp32_path, out, fmt: str, *, workers: int = 0, calibration_clips: int = 32,
                  bound: float = DEFAULT_BOUND, progress=None) -> dict:
    """Quantise ``fp32_path`` into ``out`` (ONNX, or OpenVINO IR converted from the QDQ graph); report
    the validation accuracy of fp32 and int8 and whether the change is within ``bound``."""
    from vidtune.data.manifest import load_dataset
    from vidtune.export.clips import INPUT_NAME, decode_clips
    from vidtune.runs.inference import select_split

    progress = progress or NullProgress()
    src = config.data.get("source")
    if not src or not Path(src).exists():
        raise DatasetError(f"int8 calibration uses the run's training data, which is no longer at {src!r}; "
                           "put it back there (or export without --int8)")
    items = load_dataset(src, multilabel=config.multilabel or None)
    try:
        train, val = select_split(items, "train", config), select_split(items, "val", config)
    except VidtuneError:
        train, val = items, []
    rng = np.random.default_rng(0)
    calib_items = [train[i] for i in sorted(rng.permutation(len(train))[:calibration_clips])]
    with progress.task(f"int8: calibrating on {len(calib_items)} training clips", total=None):
        calib, _ = decode_clips(model, config, calib_items, workers)
        if not len(calib):
            raise DatasetError(f"int8 calibration: none of the training videos in {src} could be decoded")
        q_onnx = Path(out) if fmt == "onnx" else Path(out).with_name(f".{Path(out).stem}.int8.onnx")
        quantise_file(fp32_path, q_onnx, calib, INPUT_NAME)
    try:
        if fmt == "openvino":
            ov = require("openvino", "openvino")
            with quiet():
                ov_model = ov.convert_model(str(q_onnx))
            with atomic_path(out) as tmp_xml:
                ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
                Path(tmp_xml).with_suffix(".bin").replace(Path(out).with_suffix(".bin"))
    finally:
        if fmt != "onnx":
            q_onnx.unlink(missing_ok=True)
    report = {"method": "onnxruntime quantize_static, QDQ, per-channel int8 Conv weights, uint8 activations "
                        "(MinMax)", "calibration_clips": int(len(calib)), "bound": bound}
    if not val:
        report.update({"validation_clips": 0, "note": "the run has no validation rows; accuracy change not measured"})
        return report
    with progress.task(f"int8: accuracy on {len(val)} validation clips", total=None):
        clips, kept = decode_clips(model, config, val, workers)
        with torch.inference_mode():
            ref = model(clips).float().numpy()
        got = ExportedModel(out, fmt)(clips.numpy())
    kept_items = [val[i] for i in kept]
    fp32, q = score(ref, kept_items, config), score(got, kept_items, config)
    delta = q - fp32
    report.update({"validation_clips": len(kept), "metric": "mAP" if config.multilabel else "top1",
                   "fp32": fp32, "int8": q, "delta": delta,
                   "top1_agreement_with_fp32": float((ref.argmax(-1) == got.argmax(-1)).mean()),
                   "within_bound": bool(delta >= -bound)})
    return report
