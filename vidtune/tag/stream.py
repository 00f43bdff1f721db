"""One sequential pass over a video: every frame decoded once, in display order, never kept.

Tagging a long video needs two things from the pixels: a small signature of *every* frame (shot
boundaries must be found to the frame) and backbone-sized frames at a fixed sampling rate (the
feature grid). :func:`stream_frames` yields both from one decode, so memory does not grow with the
video's length. It sits on PyAV directly because :class:`vidtune.io.base.VideoReader` is a
random-access reader; geometry (rotation, sample aspect ratio, short-side resize with the backbone's
filter) follows :class:`vidtune.io.pyav_backend.PyAVReader` so the frames equal what training saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vidtune.errors import VideoDecodeError
from vidtune.io import open_video
from vidtune.io.base import VideoInfo, short_side_size

log = logging.getLogger(__name__)

_INTERP = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "area": "AREA", "nearest": "POINT"}
THUMB_SHORT = 36  # short side of the per-frame thumbnail used for shot detection


@dataclass
class StreamFrame:
    """One decoded frame.

    ``time``: presentation time in seconds from the first frame. ``thumb``: small RGB uint8 picture
    (short side :data:`THUMB_SHORT`) for shot detection. ``samples``: grid indices whose times fall in
    this frame's display interval, and ``picture``: the frame at the backbone's resize size (only
    decoded to that size when ``samples`` is not empty).
    """

    index: int
    time: float
    thumb: np.ndarray
    samples: list[int] = field(default_factory=list)
    picture: np.ndarray | None = None


class FrameStream:
    """Decode ``path`` from start to end, once.

    Args:
        path: the video.
        grid_step: seconds between feature-grid samples; sample ``j`` is taken at ``(j + 0.5) * step``
            (segment centres, like evaluation sampling). None: no pictures, thumbnails only.
        short_side: backbone resize size (the pictures' shorter side).
        interpolation: resize filter (the backbone's).
    """

    def __init__(self, path, grid_step: float | None = None, short_side: int = 256,
                 interpolation: str = "bicubic"):
        self.path = Path(path)
        with open_video(self.path, interpolation=interpolation) as reader:  # validates + probes
            self.info: VideoInfo = reader.info
        self.grid_step = grid_step
        self.short_side = short_side
        self._interp = _INTERP.get(interpolation.lower(), "BICUBIC")
        self.decode_error: str | None = None
        self.frames_decoded = 0
        self.last_time = 0.0

    @property
    def duration(self) -> float:
        return self.info.duration

    def grid_size(self) -> int:
        """Number of grid samples in the video: centres before the (probed) end."""
        if not self.grid_step:
            return 0
        if not self.duration:
            return 1
        return max(1, int(np.ceil(self.duration / self.grid_step - 0.5 - 1e-9)))

    def __iter__(self) -> Iterator[StreamFrame]:
        info = self.info
        rot = info.rotation
        disp_w, disp_h = info.width, info.height
        tw, th = short_side_size(disp_w, disp_h, THUMB_SHORT)
        pw, ph = short_side_size(disp_w, disp_h, self.short_side)
        if rot % 180 == 90:  # sizes are given in the coded orientation, rotated afterwards
            tw, th, pw, ph = th, tw, ph, pw
        n_grid = self.grid_size()
        small, big = VideoReformatter(), VideoReformatter()
        next_sample = 0
        prev = None  # (frame, time): a frame is complete once the next one tells where it ends
        fps = info.fps or 25.0
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoDecodeError(self.path, f"cannot open for decoding ({exc})") from None
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1_000_000)
            start = None
            last_t = None
            index = 0

            def emit(frame, t: float, t_end: float) -> StreamFrame:
                nonlocal next_sample
                thumb = self._array(small.reformat(frame, width=tw, height=th, format="rgb24",
                                                   interpolation="AREA"), rot)
                sf = StreamFrame(index=index - 1, time=t, thumb=thumb)
                if self.grid_step:
                    while next_sample < n_grid and (next_sample + 0.5) * self.grid_step < t_end:
                        sf.samples.append(next_sample)
                        next_sample += 1
                    if sf.samples:
                        sf.picture = self._array(big.reformat(frame, width=pw, height=ph, format="rgb24",
                                                              interpolation=self._interp), rot)
                return sf

            gen = container.decode(stream)
            while True:
                try:
                    frame = next(gen)
                except (StopIteration, av.error.EOFError):
                    break
                except av.error.FFmpegError as exc:
                    self.decode_error = str(exc).split("\n")[0][:200]
                    log.warning("%s: decoding stopped at %.2fs (%s)", self.path, last_t or 0.0, self.decode_error)
                    break
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is not None and start is None:
                    start = pts
                t = float((pts - start) * tb) if pts is not None else None
                if t is None or (last_t is not None and t <= last_t):
                    t = (last_t + 1.0 / fps) if last_t is not None else 0.0  # missing or backwards clock
                if prev is not None:
                    yield emit(prev[0], prev[1], t)
                prev = (frame, t)
                last_t = t
                index += 1
            if prev is not None:
                end = max(self.duration, prev[1] + 1.0 / fps)
                if self.grid_step:  # the last frame also serves grid samples past the decoded end
                    end = max(end, (n_grid + 1) * self.grid_step)
                yield emit(prev[0], prev[1], end)
        self.frames_decoded = index
        self.last_time = last_t or 0.0
        if index == 0:
            raise VideoDecodeError(self.path, "no frame could be decoded")

    @staticmethod
    def _array(frame, rot: int) -> np.ndarray:
        arr = frame.to_ndarray(format="rgb24")
        if rot:
            arr = np.rot90(arr, k=rot // 90)
        return np.ascontiguousarray(arr)
