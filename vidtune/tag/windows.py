"""Sliding windows over one shared feature grid (pure arithmetic, no decoding).

A run classifies a clip from ``frames`` frames at the centres of equal segments of the clip. For a
window of ``window`` seconds those centres lie on a grid of step ``window / frames``; a window that
starts on a grid point reuses the frames of its neighbours. So the video is sampled once on that
grid, every grid frame goes through the backbone once, and window ``k`` is grid frames
``[k * hop, k * hop + frames)`` with ``hop = stride / step`` (the stride is rounded to whole grid
steps). The last window is aligned to the end of the video so that it is covered to the end.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from vidtune.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowPlan:
    window: float  # seconds per window
    stride: float  # seconds between window starts (a whole number of grid steps)
    frames: int  # frames per window (the run's)
    step: float  # grid step (s): window / frames
    hop: int  # grid steps per stride
    grid: int  # grid samples in the video: at (j + 0.5) * step

    def starts(self) -> list[int]:
        """First grid index of every window."""
        if self.grid <= self.frames:
            return [0]
        out = list(range(0, self.grid - self.frames + 1, self.hop))
        if out[-1] + self.frames < self.grid:
            out.append(self.grid - self.frames)
        return out

    def spans(self) -> np.ndarray:
        """``(K, 2)`` start and end time of every window (seconds)."""
        s = np.asarray(self.starts(), dtype=np.float64) * self.step
        return np.stack([s, s + self.window], axis=1)


MIN_STEP = 0.005  # seconds between grid frames: 200 per second, beyond any video frame rate tagged here


def plan_windows(duration: float, window: float, stride: float, frames: int) -> WindowPlan:
    """Windows for a video of ``duration`` seconds.

    A video shorter than one window gets a single window spanning all of it (its frames spread over
    the video, like ``predict``).
    """
    if window <= 0 or stride <= 0:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if duration and duration < window:
        window = duration
    step = window / frames
    if step < MIN_STEP and duration >= frames * MIN_STEP:
        # a grid finer than this samples the same decoded frames over and over, and its length (a
        # feature row per grid point) grows without bound: 1e-300 s windows asked for 1e300 rows
        raise ConfigError("window", f"of {window:g} s is too short for {frames} frames (at least "
                                    f"{frames * MIN_STEP:g} s: {MIN_STEP:g} s between frames)")
    hop = max(1, int(round(stride / step)))
    if abs(hop * step - stride) > 1e-6:
        log.info("stride %.3fs rounded to %.3fs (a multiple of the %.3fs frame step)", stride, hop * step, step)
    grid = max(frames, int(math.ceil(duration / step - 0.5 - 1e-9))) if duration else frames
    return WindowPlan(window=window, stride=hop * step, frames=frames, step=step, hop=hop, grid=grid)
