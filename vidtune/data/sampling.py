"""Frame sampling: pure arithmetic on durations (no decoding), so it is testable on fake videos.

TSN-style sampling splits a span into N equal segments and takes one frame per segment: a random
offset in training, the centre in evaluation. For frozen-backbone training the random offset is
quantised to ``views`` evenly spaced positions per segment whose features are cached; with an odd
``views`` the middle position is the evaluation centre.
"""

from __future__ import annotations

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
