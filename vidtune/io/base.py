"""Backend-neutral video types."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .webm .avi .mov .mpg .mpeg .ts .mts .m2ts .wmv .flv .3gp .ogv .gif .mxf .vob .y4m".split()
)


def is_video_path(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What a probe knows about a video without decoding it all.

    Attributes:
        path: the file probed.
        duration: seconds from the first frame's start to the end of the last frame.
        fps: average frame rate (frames / s).
        frame_count: number of frames (from the container; ``frame_count_exact`` says if it was counted).
        width, height: display size in pixels, after rotation and sample aspect ratio.
        coded_width, coded_height: size of the decoded pictures.
        rotation: counter-clockwise display rotation in degrees (0, 90, 180, 270).
        variable_fps: True/False when the packet timestamps were scanned, None when not.
        has_audio: whether the file has an audio stream.
        codec, container: FFmpeg names.
        keyframes: number of keyframes in the container index (0 when unknown).
    """

    path: str
    duration: float
    fps: float
    frame_count: int
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    variable_fps: bool | None
    has_audio: bool
    codec: str
    container: str
    frame_count_exact: bool = False
    keyframes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def display_size(coded_w: int, coded_h: int, sar: float, rotation: int) -> tuple[int, int]:
    """Display (width, height) of a picture: sample aspect ratio first, then rotation."""
    w = max(1, round(coded_w * sar)) if sar and sar > 0 else coded_w
    h = coded_h
    if rotation % 180 == 90:
        w, h = h, w
    return w, h


def short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) that keeps the aspect ratio with ``min(w, h) == short_side`` (torchvision's rounding)."""
    if width <= height:
        return short_side, max(1, int(short_side * height / width))
    return max(1, int(short_side * width / height)), short_side


class VideoReader:
    """Random access to the frames of one video. Use as a context manager."""

    info: VideoInfo

    def frames_at(self, timestamps: Sequence[float], short_side: int | None = None) -> np.ndarray:
        """Frames shown at ``timestamps`` (seconds), as uint8 ``(T, H, W, 3)`` RGB in display orientation.

        The frame returned for ``t`` is the one whose presentation interval contains ``t``; times
        before the first frame give the first frame, times past the last frame give the last one.
        ``short_side`` resizes in the decoder's scaler so that the shorter side of the *display* picture
        (sample aspect ratio applied) has that many pixels; without it frames keep their coded pixels.
        """
        raise NotImplementedError

    def scan(self) -> VideoInfo:
        """Read every packet header (no decoding) for an exact frame count and VFR detection."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def nearest_rotation(degrees: float) -> int:
    if degrees is None or (isinstance(degrees, float) and math.isnan(degrees)):
        return 0
    return int(round(degrees / 90.0)) % 4 * 90
