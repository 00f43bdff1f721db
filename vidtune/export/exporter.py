"""``export_run``: a trained run as one model file plus a JSON of what it needs, checked at export time.

The file holds the whole classifier (frozen or fine-tuned backbone, temporal head, classifier):
clips ``(B, T, 3, H, W)`` float32 in (``B`` dynamic), logits ``(B, K)`` out. The JSON beside it
(the full file name plus ``.json``: ``m.onnx`` -> ``m.onnx.json``, so exports of several formats under
one stem never share it) says how to turn a video into that tensor (which frames, resize, crop,
mean/std), the labels in logit order, the task and, for multi-label runs, the per-label thresholds, so
the model runs without vidtune. A parity check compares the file's logits with the run's own PyTorch
model on real clips (the run's data, or the videos given) at two batch sizes.

All or nothing: the clips for the check are decoded and the weights checked (finite) before anything is
exported; the files are written under hidden staging names and renamed into place only once the check
passed, so a failed export leaves no model file and an earlier export at ``FILE`` untouched.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from vidtune.engines.formats import FORMATS, SUFFIX, ExportedModel, write
from vidtune.errors import ConfigError, DatasetError, VidtuneError
from vidtune.export.clips import INPUT_NAME, OUTPUT_NAME, decode_clips
from vidtune.progress import NullProgress, Progress

log = logging.getLogger(__name__)

EXPORT_FORMAT = "vidtune-export"
EXPORT_VERSION = 1


def sidecar_path(out) -> Path:
    """Where the JSON beside an exported file goes: the full file name plus ``.json`` (``m.onnx.json``;
    exports before this named it ``m.json``, which scripts may still read; vidtune never reads it)."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def _export_files(out: Path, fmt: str) -> list[Path]:
    """Every file an export to ``out`` writes: the model, the OpenVINO weights, the JSON."""
    return [out] + ([out.with_suffix(".bin")] if fmt == "openvino" else []) + [sidecar_path(out)]


def _check_targets(out: Path, fmt: str) -> None:
    """Each file the export writes must be a regular file or absent: the parity check reads the model back,
    so a device (``/dev/null``) cannot take it, and nothing else (a folder, a FIFO) is replaced."""
    import stat

    from vidtune.utils import special_kind

    for p in _export_files(out, fmt):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError("out", f"{p}: {exc.strerror or exc}; choose another path") from None
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError("out", f"{p} is a folder; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("out", f"{p} is {special_kind(st.st_mode)}: an export writes regular files only (its "
                                     "parity check reads the model back) and replaces nothing else; give a file path")


def _require_finite_weights(model) -> None:
    from vidtune.errors import NonFiniteError

    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise NonFiniteError(f"the run's weights hold NaN or infinite values ({', '.join(bad[:3])}"
                             f"{f' and {len(bad) - 3} more tensors' if len(bad) > 3 else ''}): its model.safetensors "
                             "is damaged or the training diverged; nothing was exported (retrain or restore the run)")


def preprocessing(config, per_clip: int, clip_len: int = 1, clip_fps: float = 0.0) -> dict:
    """How a video becomes the model's input, spelled out for code that does not have vidtune."""
    cfg = config.transform
    d = {
        "frames": per_clip,
        "sampling": "split the clip (default: the whole video) into `segments` equal parts and take the frame "
                    "shown at the centre of each, t_i = start + (i + 0.5) * (end - start) / segments",
        "time_origin": "times are seconds from the first video frame (its presentation time is 0), not from the "
                       "container's start: a video whose first frame is at 0.27 s (its start_time, or an edit list "
                       "or leading audio) has t = 0 there; subtract the first frame's timestamp from every frame's "
                       "before picking the frame shown at t_i (the last frame with timestamp <= t_i)",
        "segments": config.frames,
        "resize_short_side": cfg.resize_size,
        "interpolation": cfg.interpolation,
        "crop": cfg.input_size,
        "crop_kind": "centre",
        "channel_order": "RGB",
        "scale": 1.0 / 255.0,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "formula": "x = (pixel / 255 - mean) / std, laid out as (batch, frames, 3, crop, crop)",
    }
    if clip_len > 1:
        d["clip_len"] = clip_len
        d["clip_fps"] = clip_fps
        d["sampling"] += (f"; around each centre take {clip_len} consecutive frames 1/{clip_fps:g} s apart "
                          "(clamped to the clip), each centre's frames contiguous")
    return d


def _items_for(config, videos, limit: int):
    """Real clips to check parity on: ``videos`` if given, else the run's own data (validation rows first)."""
    from vidtune.data.manifest import VideoItem, load_dataset
    from vidtune.runs.inference import expand_video_args, select_split

    if videos:
        return [VideoItem(path=p, label="") for p in expand_video_args(videos)][:limit], "videos given"
    src = config.data.get("source")
    if not src or not Path(src).exists():
        return [], "none"
    try:
        items = load_dataset(src, multilabel=config.multilabel or None)
    except (VidtuneError, OSError) as exc:
        log.warning("cannot read the run's data %s for the parity check (%s)", src, exc)
        return [], "none"
    try:
        val = select_split(items, "val", config)
    except VidtuneError:
        val = []
    rest = [it for it in items if it not in val]
    return (val + rest)[:limit], f"the run's data ({src})"


def parity(reference: np.ndarray, got: np.ndarray) -> dict:
    """Max abs logit difference and top-1 agreement between two ``(N, K)`` logit arrays."""
    diff = float(np.abs(reference - got).max()) if reference.size else 0.0
    agree = float((reference.argmax(-1) == got.argmax(-1)).mean()) if len(reference) else None
    return {"max_abs_logit_diff": diff, "top1_agreement": agree}


def check_parity(model, exported: ExportedModel, clips: torch.Tensor) -> dict:
    """Compare on every clip at batch ``N`` and on the first clip alone (the batch is dynamic)."""
    with torch.inference_mode():
        ref = model(clips).float().numpy()
    got = exported(clips.numpy())
    one = exported(clips[:1].numpy())
    out = parity(ref, got)
    out["max_abs_logit_diff"] = max(out["max_abs_logit_diff"], float(np.abs(ref[:1] - one).max()))
    out["batch_sizes"] = sorted({1, len(clips)})
    return out


def _place(staged: list[Path], final: list[Path]) -> None:
    """Rename the staged files into place, weights (.bin) before the file that names them."""
    from vidtune.utils import output_error

    for src, dst in reversed(list(zip(staged, final))):
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise output_error(dst, exc) from None


def export_run(run_dir, out, fmt: str = "onnx", *, videos=None, parity_clips: int = 8, int8: bool = False,
               calibration_clips: int = 32, int8_bound: float | None = None, workers: int = 0,
               progress: Progress | None = None) -> dict:
    """Write the run at ``run_dir`` as ``fmt`` to ``out`` (+ ``out`` with suffix ``.json``); return a report.

    ``videos``: clips to check parity on (default: the run's own data, if still where it was).
    ``int8``: quantise the backbone's convolutions to int8 (ONNX / OpenVINO), calibrated on frames
    of the run's training data, and report the accuracy change on its validation data
    (:mod:`vidtune.export.int8`).
    """
    from vidtune.engines.int8 import DEFAULT_BOUND
    from vidtune.runs.features import sampling_for
    from vidtune.runs.store import load_run
    from vidtune.utils import atomic_write_json

    progress = progress or NullProgress()
    if fmt not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if int8 and fmt == "torchscript":
        raise ConfigError("int8", "is for --format onnx or openvino (ONNX Runtime / OpenVINO run int8 on CPUs)")
    if parity_clips < 1:
        raise ConfigError("parity_clips", f"must be >= 1, got {parity_clips}")
    out = Path(out)
    if out.suffix == ".json":
        raise ConfigError("out", f"{out.name}: .json names are for the preprocessing files written beside exports; "
                                 f"use {out.with_suffix(SUFFIX[fmt]).name}")
    if fmt == "openvino" and out.suffix != ".xml":
        raise ConfigError("out", f"must end in .xml for OpenVINO (its weights go to a .bin beside it), got {out.name}")
    _check_targets(out, fmt)
    model, config = load_run(run_dir)
    if getattr(config.model, "audio", None) is not None:
        raise ConfigError("modalities", "video,audio runs read audio features computed outside the network; "
                                        "export a video-only run")
    if config.model.flow:
        raise ConfigError("flow", "runs read optical-flow cues computed outside the network; export a run "
                                  "trained without --flow")
    _require_finite_weights(model)
    encoder = model.encoder
    sampling = sampling_for(encoder, config.frames, "centre")
    size = config.transform.input_size
    example = torch.randn(2, sampling.per_clip, 3, size, size, generator=torch.Generator().manual_seed(0))

    # the check clips first: videos that cannot be read stop the export before any file is written
    items, source = _items_for(config, videos, parity_clips)
    clips, kept = decode_clips(model, config, items, workers) if items else (torch.zeros(0), [])
    if not kept:
        if videos:
            raise DatasetError("none of the videos given for the parity check could be decoded; nothing was "
                               "exported")
        log.warning("no real clips to check parity on (the run's data is gone and no --videos given); "
                    "checking on random input")
        clips, source = example, "random input (no real clips available; pass --videos)"

    stage = out.with_name(f".{out.name}.{os.getpid()}.exporting{out.suffix}")  # renamed to ``out`` at the end
    staged = _export_files(stage, fmt)[:-1]
    try:
        with progress.task(f"exporting {run_dir} to {fmt}", total=None):
            target = stage
            if int8:  # the fp32 graph first (a hidden file), then its int8 version at ``stage``
                target = out.with_name(f".{out.stem}.{os.getpid()}.fp32{SUFFIX['onnx']}")
            how = write("onnx" if int8 else fmt, model, example, target, input_name=INPUT_NAME,
                        output_name=OUTPUT_NAME)

        report_int8 = None
        try:
            if int8:
                from vidtune.export.int8 import quantise_onnx

                report_int8 = quantise_onnx(model, config, target, stage, fmt, workers=workers,
                                            calibration_clips=calibration_clips,
                                            bound=DEFAULT_BOUND if int8_bound is None else int8_bound,
                                            progress=progress)
                how += f" + int8 ({report_int8['method']})"
        finally:
            if int8:
                target.unlink(missing_ok=True)
        exported = ExportedModel(stage, fmt)
        with progress.task(f"parity check on {len(clips)} clips", total=None):
            check = check_parity(model, exported, clips)
        check.update({"clips": len(clips), "source": source})
        if not (np.isfinite(check["max_abs_logit_diff"]) and check["top1_agreement"] is not None):
            from vidtune.errors import NonFiniteError

            raise NonFiniteError("the exported model or the run gave NaN or infinite logits in the parity check; "
                                 "nothing was exported (the run's weights are damaged: retrain or restore it)")
        _place(staged, _export_files(out, fmt)[:-1])
    finally:
        for p in staged:
            p.unlink(missing_ok=True)

    files = [out.name] + ([out.with_suffix(".bin").name] if fmt == "openvino" else [])
    side = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION,
        "model_file": files[0], "files": files, "model_format": fmt, "exporter": how,
        "precision": "int8" if int8 else "fp32",
        "input": {"name": INPUT_NAME, "shape": ["batch", sampling.per_clip, 3, size, size], "dtype": "float32",
                  "layout": "(batch, frames, channels RGB, height, width)"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(config.labels)], "dtype": "float32",
                   "meaning": "sigmoid(logits) >= thresholds per label" if config.multilabel
                   else "softmax(logits) gives class probabilities"},
        "preprocessing": preprocessing(config, sampling.per_clip, sampling.clip_len,
                                       getattr(encoder, "clip_fps", 0.0)),
        "task": config.task, "labels": list(config.labels),
        "run": {"dir": str(run_dir), "run_id": config.run_id, "backbone": config.model.backbone,
                "temporal": config.model.temporal, "grid": config.model.grid,
                "vidtune_version": config.vidtune_version},
        "parity": check,
    }
    if config.multilabel:
        side["thresholds"] = config.label_thresholds()
    if config.background is not None:
        side["background"] = config.background
    if report_int8 is not None:
        side["int8"] = report_int8
    try:
        atomic_write_json(sidecar_path(out), side)
    except BaseException:
        for p in _export_files(out, fmt)[:-1]:  # no model without its preprocessing
            p.unlink(missing_ok=True)
        raise
    return {"out": str(out), "json": str(sidecar_path(out)), "format": fmt, "files": files + [sidecar_path(out).name],
            "exporter": how, "precision": side["precision"], "parity": check, "int8": report_int8,
            "labels": list(config.labels), "task": config.task}
