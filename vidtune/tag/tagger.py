"""Tag long videos along a timeline with a trained run.

One sequential decode per video feeds two consumers: the shot detector (a thumbnail of every
frame) and the run's frame encoder (frames on the window grid, see :mod:`vidtune.tag.windows`),
batched through the backbone once each. Windows are scored by the run's temporal head from the
shared frame features as soon as their frames are in, and features no later window needs are
dropped: memory holds a batch of pictures, ``frames`` feature vectors and the per-window scores,
whatever the video's length. Models that are not "per-frame encoder + temporal head" are served
window by window through :func:`vidtune.runs.inference.run_clips`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidtune.errors import ConfigError, DatasetError, VideoDecodeError
from vidtune.progress import NullProgress, Progress
from vidtune.runs.config import RunConfig
from vidtune.tag.segments import (
    multilabel_segments,
    round_segments,
    single_label_segments,
    smooth_scores,
    snap_segments,
)
from vidtune.tag.shots import ShotConfig, ShotDetector, ShotResult
from vidtune.tag.stream import FrameStream
from vidtune.tag.windows import WindowPlan, plan_windows

log = logging.getLogger(__name__)

@dataclass
class TagOptions:
    """How windows are laid and turned into segments.

    window: seconds per window (None: the run's training clip length). stride: seconds between
    windows. smooth: seconds of centred moving average over window scores (0: none).
    min_segment: shorter label runs are absorbed by a neighbour (single) or dropped (multi-label).
    snap: segment edges move to a shot boundary this close (seconds; 0: no snapping; None: half
    the window). background: label excluded from segments (default: the run's). min_score:
    single-label windows whose top score is below it count as background. batch: frames per
    backbone batch.
    """

    window: float | None = None
    stride: float = 1.0
    smooth: float = 3.0
    min_segment: float | None = None
    snap: float | None = None
    background: str | None = None
    min_score: float = 0.0
    batch: int = 32
    shots: ShotConfig = field(default_factory=ShotConfig)

    def __post_init__(self):
        for name in ("window", "stride"):
            v = getattr(self, name)
            if v is not None and not v > 0:  # also NaN
                raise ConfigError(name, f"must be more than 0 seconds, got {v}")
        for name in ("smooth", "min_segment", "snap"):
            v = getattr(self, name)
            if v is not None and not v >= 0:
                raise ConfigError(name, f"must be 0 or more seconds, got {v}")
        if self.batch < 1:
            raise ConfigError("batch", f"must be >= 1, got {self.batch}")


@dataclass
class TagResult:
    path: str
    duration: float
    task: str
    labels: list[str]
    plan: WindowPlan
    spans: np.ndarray  # (K, 2) window start/end (s)
    scores: np.ndarray  # (K, L) probabilities per window (softmax or sigmoid)
    smoothed: np.ndarray  # (K, L)
    segments: list[dict]
    shots: ShotResult | None
    background: str | None = None
    thresholds: list[float] | None = None
    warning: str | None = None

    @property
    def centres(self) -> np.ndarray:
        return self.spans.mean(axis=1) if len(self.spans) else np.zeros(0)

    def to_dict(self, scores: bool = False) -> dict:
        d = {"path": self.path, "duration": round(self.duration, 4), "segments": round_segments(self.segments),
             "shots": [s.to_dict() for s in self.shots.shots] if self.shots else [],
             "transitions": [t.to_dict() for t in self.shots.transitions] if self.shots else [],
             "window": round(self.plan.window, 4), "stride": round(self.plan.stride, 4), "task": self.task}
        if self.warning:
            d["warning"] = self.warning
        if scores:
            d["labels"] = list(self.labels)
            d["windows"] = [{"start": round(float(a), 3), "end": round(float(b), 3),
                             "scores": [round(float(x), 4) for x in row]}
                            for (a, b), row in zip(self.spans, self.smoothed)]
        return d


def run_task(config: RunConfig) -> str:
    """``multilabel`` or ``single``: the task as tagging's outputs name it."""
    return "multilabel" if config.multilabel else "single"


def resolve_window(config: RunConfig, window: float | None) -> float:
    if window is not None:
        return float(window)
    w = config.training_clip_seconds()
    if w is None:
        raise ConfigError("window", "is needed: the run does not record its training clip length and its training "
                                    "data is not where it was; give the length of the clips it was trained on")
    return w


def _streaming(model, config: RunConfig) -> bool:
    """Whether windows can share per-frame features: a 2D frame encoder (pooled or token grid) whose
    frames do not see each other (TSM shifts features between frames; clip encoders see whole clips)."""
    from vidtune.engines.backbone import EngineEncoder
    from vidtune.models.backbones import ClipEncoder, FrameEncoder

    enc = getattr(model, "encoder", None)
    frame_encoder = isinstance(enc, EngineEncoder) or (isinstance(enc, FrameEncoder) and not isinstance(enc, ClipEncoder))
    return (frame_encoder and hasattr(model, "head")
            and config.model.per_frame and getattr(model, "audio", None) is None)  # fused runs: by clips


def _probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    return logits.sigmoid() if task == "multilabel" else logits.softmax(-1)


@torch.inference_mode()
def _scores_streaming(model, path, plan: WindowPlan, device: torch.device, opts: TagOptions, task: str,
                      progress_task=None) -> tuple[np.ndarray, np.ndarray, ShotResult, FrameStream]:
    from vidtune.data.transforms import Normalize, centre_crop
    from vidtune.engines.backbone import backbone_engine
    from vidtune.runs.device import autocast

    enc = model.encoder.eval().to(device)
    head = model.head.eval().to(device)
    cfg = enc.cfg
    use_flow = getattr(head, "flow", 0) > 0
    flows: list[np.ndarray] = []  # use_flow: flow cues from grid frame `base + i` to the next one
    prev_crop: list[np.ndarray] = []  # the last grid picture, cropped (flow pairs span encode batches)
    norm = Normalize(cfg).to(device)
    net = backbone_engine(enc, None, device, plan.grid)[0]  # --runtime's engine, or TorchScript / eager PyTorch
    stream = FrameStream(path, grid_step=plan.step, short_side=cfg.resize_size, interpolation=cfg.interpolation)
    shots = ShotDetector(stream.info.fps, opts.shots)
    starts = plan.starts()
    next_window = 0
    feats: list[torch.Tensor] = []  # grid features from index `base` on
    base = 0
    pending: list[np.ndarray] = []
    out_scores: list[np.ndarray] = []
    done_s = 0.0

    def encode() -> None:
        nonlocal base, next_window
        if pending:
            crops = centre_crop(np.stack(pending), cfg.input_size)
            if use_flow:
                from vidtune.data.flow import flow_descriptor

                seq = np.concatenate([np.stack(prev_crop), crops]) if prev_crop else crops
                flows.extend(flow_descriptor(seq)[:-1])  # row j: grid frame j -> j + 1
                prev_crop[:] = [crops[-1]]
            x = torch.from_numpy(crops).to(device)
            x = norm(x).contiguous(memory_format=torch.channels_last)
            with autocast(device):
                f = net(x).float()
            feats.extend(f.unbind(0))
            pending.clear()
        have = base + len(feats)
        ready = []
        while next_window < len(starts) and starts[next_window] + plan.frames <= have:
            ready.append(starts[next_window])
            next_window += 1
        if ready:
            clip = torch.stack([torch.stack(feats[s - base : s - base + plan.frames]) for s in ready])  # (B, T, D)
            if use_flow:  # as in training: each frame's motion to the next, none after the window's last
                from vidtune.runs.features import with_flow

                fl = np.zeros((len(ready), plan.frames, len(flows[0]) if flows else 0), np.float32)
                for b, s in enumerate(ready):
                    fl[b, :-1] = np.stack(flows[s - base : s - base + plan.frames - 1])
                fl = torch.from_numpy(fl).to(clip.device)
                clip = torch.stack([with_flow(c[:, None], f[:, None])[:, 0] for c, f in zip(clip, fl)])
            with autocast(device):
                logits = head(clip).float()
            out_scores.append(_probabilities(logits, task).cpu().numpy())
        keep_from = starts[next_window] if next_window < len(starts) else have
        if keep_from > base:  # features no later window needs
            del feats[: keep_from - base]
            del flows[: keep_from - base]
            base = keep_from

    for f in stream:
        shots.push(f.time, f.thumb)
        for _ in f.samples:
            pending.append(f.picture)
        if len(pending) >= opts.batch:
            encode()
        if progress_task is not None and f.time - done_s >= 1.0:
            progress_task.advance(f.time - done_s)
            done_s = f.time
    encode()
    if next_window < len(starts):  # the decode ended early (damaged file): score what was seen
        raise VideoDecodeError(path, f"only {base + len(feats)} of {plan.grid} sampled frames could be decoded "
                                     f"({stream.decode_error or 'the stream ended early'})")
    return np.concatenate(out_scores), plan.spans(), shots.finish(stream.duration), stream


def _scores_by_clips(model, config, path, plan: WindowPlan, device, task: str
                     ) -> tuple[np.ndarray, np.ndarray, ShotResult]:
    """Window by window through run_clips (any model kind), shots from a separate decode."""
    from vidtune.data.manifest import VideoItem
    from vidtune.runs.inference import run_clips
    from vidtune.tag.shots import detect_shots

    spans = plan.spans()
    items = [VideoItem(path=Path(path), label="", start=float(a), end=float(b)) for a, b in spans]
    out, skipped = run_clips(model, config, items, device=device, use_cache=False, workers=0)
    if skipped or len(out) != len(items):
        reason = skipped[0]["reason"] if skipped else "some windows could not be decoded"
        raise VideoDecodeError(path, reason)
    logits = torch.stack([out[i] for i in range(len(items))])
    return _probabilities(logits, task).numpy(), spans, detect_shots(path)


def tag_video(model, config: RunConfig, path, options: TagOptions | None = None, device: torch.device | None = None,
              progress: Progress | None = None) -> TagResult:
    """Tag one video: window scores, smoothed curves, segments and shots."""
    opts = options or TagOptions()
    device = device or torch.device("cpu")
    progress = progress or NullProgress()
    labels = list(config.labels)
    task = run_task(config)
    background = opts.background if opts.background is not None else config.background
    if task == "multilabel" and background is not None and background not in labels:
        background = None  # multi-label: the background is "no label", never a class to leave out
    if background is not None and background not in labels:
        raise DatasetError(f"background label {background!r} is not one of the run's labels: {', '.join(labels)}")
    thresholds = config.label_thresholds() if config.multilabel else None
    window = resolve_window(config, opts.window)
    frames = config.frames
    from vidtune.io import open_video

    with open_video(path) as reader:
        duration = reader.info.duration
    plan = plan_windows(duration, window, opts.stride, frames)
    warning = None
    if _streaming(model, config):
        with progress.task(f"tagging {Path(path).name}", total=round(duration, 1) or None, unit="s") as task_bar:
            scores, spans, shots, stream = _scores_streaming(model, path, plan, device, opts, task, task_bar)
        if stream.decode_error:
            warning = f"decoding stopped at {stream.last_time:.2f}s: {stream.decode_error}"
    else:
        scores, spans, shots = _scores_by_clips(model, config, path, plan, device, task)
    duration = max(duration, shots.duration if shots else 0.0)
    n_smooth = max(1, int(round(opts.smooth / plan.stride))) if opts.smooth > 0 else 1
    n_smooth += (n_smooth + 1) % 2  # odd: centred
    smoothed = smooth_scores(scores, n_smooth)
    centres = spans.mean(axis=1)
    min_segment = opts.min_segment if opts.min_segment is not None else 1.5 * plan.stride
    if task == "multilabel":
        segs = multilabel_segments(smoothed, centres, duration, labels, thresholds, background, min_segment)
    else:
        segs = single_label_segments(smoothed, centres, duration, labels, background, opts.min_score, min_segment)
    snap = opts.snap if opts.snap is not None else plan.window / 2
    segs = snap_segments(segs, shots.boundaries if shots else [], snap, duration)
    return TagResult(path=str(path), duration=duration, task=task, labels=labels, plan=plan, spans=spans,
                     scores=scores, smoothed=smoothed, segments=segs, shots=shots, background=background,
                     thresholds=thresholds, warning=warning)


def tag_videos(run, videos, options: TagOptions | None = None, device: str = "auto",
               progress: Progress | None = None) -> tuple[list[TagResult], list[dict]]:
    """Tag every video of ``videos`` (files, or folders searched recursively) with ``run`` (a run
    folder or a loaded ``(model, config)``); unreadable videos come back as ``{"path", "error"}``
    and never stop the others."""
    from vidtune.runs.device import resolve_device
    from vidtune.runs.inference import expand_video_args
    from vidtune.runs.light import load_light, remember_run_engine
    from vidtune.runs.store import load_run

    dev = resolve_device(device)
    folder = run if isinstance(run, (str, Path)) else None
    light = load_light(folder, dev) if folder is not None else None  # its engine built earlier: no PyTorch backbone
    model, config = (light or load_run(folder)) if folder is not None else run
    results, errors = [], []
    for path in expand_video_args(videos):
        try:
            results.append(tag_video(model, config, path, options, device=dev, progress=progress))
        except VideoDecodeError as exc:
            errors.append({"path": str(path), "error": exc.reason})
    if folder is not None and light is None:
        remember_run_engine(folder, model.encoder)
    return results, errors
