"""``predict`` through a run's exported engines, without importing torch.

A short ``vidtune predict`` on a CPU used to pay more for start-up than for its work: ``import torch``
(2 s here), ``import timm`` (3-7 s), building the backbone. Once a run has been applied with an ONNX
Runtime / OpenVINO engine (any ``predict``/``eval`` with ``--runtime auto|onnxruntime|openvino`` on a big
enough job, or ``--runtime onnxruntime``), its record (:func:`vidtune.runs.light.remember_run_engine`)
names the backbone's ONNX graph and the head's, and this path needs only numpy, PyAV and the engine:

- decoding in worker processes (:func:`vidtune.data.clips.read_clip`, the same as the PyTorch pipeline),
  centre crop and normalisation in numpy (:mod:`vidtune.data.preprocess`);
- frames batched across videos through the backbone engine, then clips through the head engine;
- the same feature cache (same keys, same files) as the PyTorch path;
- the same results: :func:`format_predictions` is the one place both paths turn logits into labels.

:func:`predict` returns None whenever the path does not apply (a GPU, ``--runtime torch``, ``--int8``,
no engine built for the run yet, or one that is damaged, flow cues or sound in the run); the caller then
loads the run in full (which rebuilds a damaged engine).
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from vidtune.data.clips import read_clip
from vidtune.data.manifest import VideoItem, expand_video_args
from vidtune.data.preprocess import PretrainedConfig, centre_crop, normalise
from vidtune.data.sampling import Sampling
from vidtune.engines.runtime import (
    check_runtime,
    cpu_only,
    default_int8,
    default_runtime,
    engine_dir,
    engine_threads,
)
from vidtune.errors import CheckpointError, VidtuneError
from vidtune.progress import NullProgress, Progress
from vidtune.runs.light import read_run_record
from vidtune.utils import lower_priority

log = logging.getLogger(__name__)

class LeanRun:
    """A run as two engine sessions (backbone over frames, head over clips) plus its config."""

    def __init__(self, run_dir, config, record: dict, runtime: str):
        from vidtune.engines import cache

        self.run_dir = run_dir
        self.config = config
        self.record = record
        self.runtime = runtime
        folder = engine_dir()
        self.backbone = cache.session(folder / record["onnx"], runtime, engine_threads())
        self.head = cache.session(folder / record["head_onnx"], runtime, 1)

    @property
    def cfg(self) -> PretrainedConfig:
        return self.config.transform

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.config.frames, "centre")


def load(run_dir, device: str = "auto", runtime: str | None = None) -> LeanRun | None:
    """The run served by engines alone, or None when that does not apply (see the module's doc)."""
    from vidtune.runs.config import RunConfig

    runtime = check_runtime(runtime or default_runtime())
    if runtime == "torch" or default_int8() or not cpu_only(device):
        return None
    try:
        record = read_run_record(run_dir)
        folder = engine_dir()
        if record is None or "head_onnx" not in record:
            return None
        from vidtune.engines.cache import verified

        if not all([verified(folder / record["onnx"]), verified(folder / record["head_onnx"])]):
            return None  # not built, or damaged (removed now): the full path builds it
        config = RunConfig.read(run_dir)
        spec = config.model
        if (not spec.per_frame or spec.audio is not None or spec.flow > 0
                or config.transform.input_size != int(record["input_size"])):
            return None
        from vidtune.engines.choice import engine_order

        names = engine_order(runtime, record)
        if not names:
            return None
        return LeanRun(run_dir, config, record, names[0])
    except (OSError, ValueError, KeyError, TypeError, CheckpointError) as exc:
        log.debug("engine-only load of %s not possible (%s); loading the full run", run_dir, exc)
        return None
    except VidtuneError as exc:  # an engine that cannot open (a damaged graph): the full path rebuilds it
        log.info("engine-only load of %s failed (%s); loading the full run", run_dir, exc)
        return None


# -- decoding -----------------------------------------------------------------------------------------
def _decode(job: tuple) -> tuple[int, np.ndarray | None, str | None]:
    """One clip in a worker: centre-cropped uint8 ``(T, S, S, 3)`` or the reason it failed."""
    i, item, sampling, cfg = job
    frames, error = read_clip(item, sampling, cfg)
    if frames is None:
        return i, None, error
    return i, centre_crop(frames, cfg.input_size), None


_CRASHED = "the decoder crashed on this file (its worker process died)"


def decoded_clips(items: list[VideoItem], todo: list[int], sampling: Sampling, cfg: PretrainedConfig,
                  workers: int):
    """``(index, frames | None, error | None)`` for each clip in ``todo``, as they are ready.

    ``workers`` > 0: that many processes, at most ``2 * workers + 2`` clips in flight (memory stays
    flat over 10,000 videos). A worker that dies (a decoder crash) breaks the pool: the clips that were in
    flight are tried again one at a time, so only the file that crashes it again is reported, and a
    fresh pool takes the rest.
    """
    jobs = [(i, items[i], sampling, cfg) for i in todo]
    if workers <= 0 or len(jobs) <= 1:
        for job in jobs:
            yield _decode(job)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() and sys.platform != "darwin" else "spawn")
    pending = list(reversed(jobs))
    window = 2 * workers + 2
    while pending:
        running: dict = {}
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                 initializer=lower_priority) as pool:
            try:
                while pending or running:
                    while pending and len(running) < window:
                        job = pending.pop()
                        running[pool.submit(_decode, job)] = job
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        result = fut.result()  # BrokenProcessPool when a worker died
                        running.pop(fut)
                        yield result
            except BrokenProcessPool:
                pass
        for job in running.values():  # the clips in flight when a worker died: each alone, to find the culprit
            yield _alone(job, ctx)


def _alone(job: tuple, ctx) -> tuple[int, np.ndarray | None, str | None]:
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=lower_priority) as pool:
        try:
            return pool.submit(_decode, job).result()
        except BrokenProcessPool:
            log.warning("%s: %s", job[1].path, _CRASHED)
            return job[0], None, _CRASHED


# -- features and logits --------------------------------------------------------------------------------
def frame_features(run: LeanRun, items: list[VideoItem], *, cache=None, workers: int | None = None,
                   batch_frames: int = 32, progress: Progress | None = None,
                   description: str = "features") -> tuple[dict[int, np.ndarray], list[dict]]:
    """Per-frame features ``(T, 1, ...)`` per readable item, and the skipped ones ``{"path", "reason"}``:
    what :func:`vidtune.runs.features.extract_features` gives for centre sampling, from the engine."""
    from vidtune.runs.cache import split_cached
    from vidtune.utils import default_workers

    progress = progress or NullProgress()
    workers = default_workers() if workers is None else workers
    sampling, cfg, fp = run.sampling, run.cfg, run.record["fingerprint"]
    feats, keys, todo, skipped = split_cached(cache, items, fp, cfg, sampling, "fp32", grid_views=run.config.views)
    if not todo:
        return feats, skipped
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        if not pending:
            return
        out = run.backbone(normalise(np.concatenate([f for _, f in pending]), cfg))
        pos = 0
        for j, f in pending:
            clip = out[pos : pos + len(f)].reshape(sampling.frames, 1, *out.shape[1:])
            pos += len(f)
            feats[j] = clip
            if cache is not None:
                cache.put_array(keys[j], clip)
        pending.clear()

    with progress.task(f"{description} ({len(todo)} clips)", total=len(todo) * sampling.frames,
                       unit="frames") as task:
        for j, frames, error in decoded_clips(items, todo, sampling, cfg, workers):
            if frames is None:
                skipped.append({"path": str(items[j].path), "reason": error})
                log.warning("skipping %s: %s", items[j].path, error)
            else:
                pending.append((j, frames))
                if sum(len(f) for _, f in pending) >= batch_frames:
                    flush()
            task.advance(sampling.frames)
        flush()
    return feats, skipped


def clip_logits(run: LeanRun, feats: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    idx = sorted(feats)
    out: dict[int, np.ndarray] = {}
    for lo in range(0, len(idx), 256):
        chunk = idx[lo : lo + 256]
        y = run.head(np.stack([feats[i][:, 0] for i in chunk]))
        out.update(zip(chunk, y.astype(np.float32)))
    return out


# -- results ------------------------------------------------------------------------------------------
def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def format_predictions(paths: list[Path], logits: dict[int, np.ndarray], skipped: list[dict], labels: list[str],
                       k: int, multilabel: bool, thresholds: list[float] | None) -> list[dict]:
    """Each video's ``{"path", "labels", "predictions": [{"label", "score"}]}`` or ``{"path", "error"}``.

    ``labels``: the predicted labels. Multi-label runs: every label whose sigmoid score reaches its tuned
    threshold (highest first; may be empty), and ``predictions`` holds the top-k sigmoid scores.
    Single-label runs: the top-1 class, with softmax probabilities in ``predictions``.
    """
    reasons = {s["path"]: s["reason"] for s in skipped}
    k = max(1, min(k, len(labels)))
    results = []
    for i, p in enumerate(paths):
        if i not in logits:
            results.append({"path": str(p), "error": reasons.get(str(p), "could not be decoded")})
            continue
        x = np.asarray(logits[i], dtype=np.float64)
        scores = 1.0 / (1.0 + np.exp(-x)) if multilabel else _softmax(x)
        order = np.argsort(-scores, kind="stable")
        top = order[:k]
        if multilabel:
            chosen = [int(j) for j in order if scores[j] >= thresholds[j]]
        else:
            chosen = [int(top[0])]
        results.append({"path": str(p), "labels": [labels[j] for j in chosen], "predictions": [
            {"label": labels[j], "score": round(float(scores[j]), 6)} for j in top]})
    return results


def predict(run_dir, videos, k: int = 5, device: str = "auto", cache_dir=None, use_cache: bool = True,
            workers: int | None = None, progress: Progress | None = None, runtime: str | None = None) -> dict | None:
    """:func:`vidtune.runs.inference.predict` through the run's engines without torch, or None when the
    run cannot be served that way (the caller then uses the full path)."""
    run = load(run_dir, device, runtime)
    if run is None:
        return None
    from vidtune.runs.cache import open_cache

    config = run.config
    paths = expand_video_args(videos)
    items = [VideoItem(path=p, label="") for p in paths]
    feats, skipped = frame_features(run, items, cache=open_cache(cache_dir, use_cache), workers=workers,
                                    progress=progress, description="predict")
    logits = clip_logits(run, feats) if feats else {}
    multilabel = config.multilabel
    results = format_predictions(paths, logits, skipped, config.labels, k, multilabel,
                                 config.label_thresholds() if multilabel else None)
    return {"run": str(run_dir), "task": "multilabel" if multilabel else "single_label", "results": results,
            "runtime": run.runtime}
