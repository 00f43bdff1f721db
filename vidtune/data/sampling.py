"""Frame sampling: pure arithmetic on durations (no decoding), so it is testable on fake videos.

TSN-style sampling splits a span into N equal segments and takes one frame per segment: a random
offset in training, the centre in evaluation. For frozen-backbone training the random offset is
quantised to ``views`` evenly spaced positions per segment whose features are cached; with an odd
``views`` the middle position is the evaluation centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def clip_span(duration: float, start: float | None = None, end: float | None = None) -> tuple[float, float]:
    """The (start, end) in seconds to sample from, clamped to the video."""
    s = 0.0 if start is None else max(0.0, float(start))
    e = duration if end is None else min(float(end), duration) if duration > 0 else float(end)
    if duration > 0 and s >= duration:
        raise ValueError(f"start {s:.3f} s is past the end of the video ({duration:.3f} s)")
    if e <= s:
        raise ValueError(f"empty time span [{s:.3f}, {e:.3f}) s (video lasts {duration:.3f} s)")
    return s, e


def segment_centres(start: float, end: float, n: int) -> np.ndarray:
    """Centres of ``n`` equal segments of [start, end): the evaluation sampling, shape (n,)."""
    if n < 1:
        raise ValueError("need at least one frame")
    seg = (end - start) / n
    return start + (np.arange(n) + 0.5) * seg


def segment_random(start: float, end: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random time inside each of ``n`` segments: the training sampling, shape (n,)."""
    if n < 1:
        raise ValueError("need at least one frame")
    seg = (end - start) / n
    t = start + (np.arange(n) + rng.random(n)) * seg
    return np.minimum(t, np.nextafter(end, start))


def segment_grid(start: float, end: float, n: int, views: int) -> np.ndarray:
    """``views`` evenly spaced positions inside each of ``n`` segments, shape (n, views).

    Column ``views // 2`` equals :func:`segment_centres` when ``views`` is odd.
    """
    if views < 1:
        raise ValueError("views must be >= 1")
    seg = (end - start) / n
    return start + (np.arange(n)[:, None] + (np.arange(views)[None, :] + 0.5) / views) * seg


@dataclass(frozen=True)
class Sampling:
    """Which frames of a clip to use.

    mode: ``centre`` (evaluation: segment centres), ``grid`` (``views`` positions per segment, for
    cached training views) or ``random`` (a fresh random offset per segment, end-to-end training).
    ``clip_len`` > 1 (video backbones such as r3d_18): each position is the centre of ``clip_len``
    consecutive frames ``step`` seconds apart (the frame rate the weights were trained at), clamped
    to the clip's span; frames come out position by position, each position's frames contiguous.
    """

    frames: int
    mode: str = "centre"
    views: int = 1
    clip_len: int = 1
    step: float = 0.0
    flow: bool = False  # also optical-flow cues between consecutive sampled frames (vidtune.data.flow)

    def timestamps(self, duration: float, start, end, rng: np.random.Generator | None = None) -> np.ndarray:
        s, e = clip_span(duration, start, end)
        if self.mode == "centre":
            pos = segment_centres(s, e, self.frames)
        elif self.mode == "grid":
            pos = segment_grid(s, e, self.frames, self.views).reshape(-1)
        elif self.mode == "random":
            pos = segment_random(s, e, self.frames, rng or np.random.default_rng())
        else:
            raise ValueError(f"unknown sampling mode {self.mode!r}")
        if self.clip_len == 1:
            return pos
        offsets = (np.arange(self.clip_len) - (self.clip_len - 1) / 2) * self.step
        return np.clip(pos[:, None] + offsets[None], s, max(s, e - 1e-3)).reshape(-1)

    @property
    def per_clip(self) -> int:
        return self.frames * (self.views if self.mode == "grid" else 1) * self.clip_len

    def cache_fields(self) -> dict:
        d = asdict(self)
        if self.clip_len == 1:  # keys of frame-encoder features stay what they were
            d.pop("clip_len")
            d.pop("step")
        if self.flow:  # what the cues are, so a change to them never serves stale ones
            from vidtune.data.flow import FLOW_ID

            d["flow"] = FLOW_ID
        else:
            d.pop("flow")
        return d
