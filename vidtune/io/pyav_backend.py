"""PyAV (bundled FFmpeg) backend: frame-accurate seeking that decodes only what it must."""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from vidtune.errors import VideoDecodeError
from vidtune.io.base import VideoInfo, VideoReader, display_size, nearest_rotation, short_side_size
from vidtune.utils import check_regular_file

log = logging.getLogger(__name__)

# Demuxers that open still images: FFmpeg happily decodes a PNG renamed to .mp4 as a 1-frame video.
_IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif_pipe"}
# If no keyframe index is available, decode forward instead of seeking for gaps up to this (s).
_FORWARD_DECODE_S = 1.0
# While the target is further ahead than this, frames nobody references are not decoded at all
# (skip_frame=NONREF). The margin exceeds any decoder output delay (B-frame reorder + frame
# threads), so every frame near the target is decoded in full.
_SKIP_MARGIN_S = 0.5
_SKIP_MARGIN_FRAMES = 24
# Streams that may reorder frames (B-frames) decode this many frames when opened, so that a container
# storing decode times as presentation times is caught before any request: found mid-request, the
# switch to the dts clock meant serving the whole request again (box.mp4: 562 frames decoded instead
# of 306). The frames are kept and served first, so nothing is decoded twice.
_CLOCK_PROBE_FRAMES = 12
_INTERPOLATIONS = {"bicubic": "BICUBIC", "bilinear": "BILINEAR", "area": "AREA", "nearest": "POINT"}
# Wall-clock limit (s) for opening a file and for each frames_at/scan call, checked between decoded
# frames and packets: a damaged or hostile file ends as a VideoDecodeError instead of a stuck worker.
DEFAULT_TIME_LIMIT_S = 120.0
TIME_LIMIT_ENV = "VIDTUNE_DECODE_TIMEOUT"


def default_time_limit() -> float | None:
    """``$VIDTUNE_DECODE_TIMEOUT`` seconds (0 or less: no limit), else :data:`DEFAULT_TIME_LIMIT_S`."""
    text = os.environ.get(TIME_LIMIT_ENV, "").strip()
    try:
        limit = float(text) if text else DEFAULT_TIME_LIMIT_S
    except ValueError:
        log.warning("ignoring %s=%r (not a number of seconds)", TIME_LIMIT_ENV, text)
        limit = DEFAULT_TIME_LIMIT_S
    return limit if limit > 0 else None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.split("\n")[0][:200]


def _tag_seconds(value) -> float:
    """Seconds in a Matroska ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``); 0.0 if absent or malformed."""
    try:
        hours, minutes, seconds = str(value).split(":")
        return max(0.0, int(hours) * 3600 + int(minutes) * 60 + float(seconds))
    except ValueError:
        return 0.0


class PyAVReader(VideoReader):
    """Random access reader over one video stream.

    The decoder state (``_prev``: last frame at or before the previous target, ``_ahead``: the first
    frame after it) lets sorted timestamps inside one GOP be served by decoding forward, and a seek
    happens only when the target lies past the next keyframe (known from the container index).
    """

    def __init__(self, path, thread_type: str = "SLICE", interpolation: str = "bicubic",
                 time_limit: float | None = -1.0):
        self.path = Path(path)
        # time_limit: seconds for opening and for each frames_at/scan call; None: no limit;
        # negative (the default): default_time_limit()
        self.time_limit = default_time_limit() if time_limit is not None and time_limit < 0 else time_limit
        self._deadline: float | None = None
        self._thread_type = thread_type
        self._interp = _INTERPOLATIONS.get(interpolation.lower(), "BICUBIC")
        if not self.path.exists():
            raise VideoDecodeError(self.path, "file not found; check the path")
        try:
            st = check_regular_file(self.path)  # folders, FIFOs, devices, sockets: refused unread
        except OSError as exc:
            raise VideoDecodeError(self.path, f"cannot read file ({exc.strerror or exc})") from None
        if st.st_size == 0:
            raise VideoDecodeError(self.path, "file is empty (0 bytes); re-copy or re-encode it")
        self._container = None
        self._reformatter = VideoReformatter()
        # Containers that store decode timestamps as presentation times (MP4 without a ctts box, AVI
        # with packed B-frames) make the decoder's output pts go backwards although the frames come
        # out in display order. Like FFmpeg's best-effort timestamp, count such faults and switch this
        # reader to the monotonic dts clock for good once pts has more of them.
        self._use_dts = False
        self._clock_changed = False
        self._first_dts = None
        self._start_clock()
        self._open()
        try:
            self._init_stream()
        except BaseException:
            self.close()
            raise
        finally:
            self._deadline = None

    # -- opening ---------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            self._container = av.open(str(self.path), metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, OSError, ValueError) as exc:
            raise VideoDecodeError(
                self.path, f"not a readable video file ({_reason(exc)}); is it truncated or not a video?"
            ) from None
        fmt = self._container.format.name
        if fmt in _IMAGE_FORMATS or fmt.endswith("_pipe"):
            raise VideoDecodeError(self.path, f"is a still image ({fmt}), not a video")
        if not self._container.streams.video:
            audio = bool(self._container.streams.audio)
            raise VideoDecodeError(self.path, "has no video stream (audio only)" if audio else "has no video stream")
        self._stream = self._container.streams.video[0]
        if self._stream.codec_context is None:  # FFmpeg found no decoder for the stream's codec id / tag
            raise VideoDecodeError(
                self.path, f"its video codec cannot be decoded: FFmpeg (as bundled with PyAV) has no decoder for "
                           f"the codec of its video stream (container {fmt}; an unknown or proprietary codec tag). "
                           "Re-encode it to a common codec, e.g. `ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4`")
        self._stream.thread_type = self._thread_type
        self._gen = None
        self._lookahead: list = []  # frames decoded by the clock probe, served before decoding more
        self._prev = None
        self._ahead = None
        self._last_pts = None
        self._skipping = False
        self._decode_error = None
        self._reset_clock_check()

    def _init_stream(self) -> None:
        s = self._stream
        c = self._container
        self._tb = Fraction(s.time_base) if s.time_base else Fraction(1, 1_000_000)
        rate = s.average_rate or s.guessed_rate or s.base_rate
        self._fps = float(rate) if rate else 0.0
        first = self._next_frame()
        if first is None:
            detail = f" ({self._decode_error}); the file may be damaged" if self._decode_error else ""
            raise VideoDecodeError(self.path, f"video stream has no decodable frames{detail}")
        self._ahead = first
        self._start_pts = first.pts  # times count from the first frame (AVI+B-frames: start_time < it)
        self._first_dts = first.dts if not self._use_dts else first.pts
        if s.codec_context.has_b_frames and not self._use_dts:
            first = self._probe_clock(first)
            if first is None:
                raise VideoDecodeError(self.path, "video stream has no decodable frames on its decode clock")
            s, c = self._stream, self._container  # reopened if the clock changed: the old ones are closed
        self._rotation = nearest_rotation(getattr(first, "rotation", 0) or 0)
        sar = float(s.sample_aspect_ratio) if s.sample_aspect_ratio else 1.0
        self._coded = (first.width, first.height)
        self._display = display_size(first.width, first.height, sar, self._rotation)
        tag_duration = _tag_seconds(s.metadata.get("DURATION") or s.metadata.get("duration"))
        if s.duration:
            duration = float(s.duration * self._tb)
        elif tag_duration:  # Matroska/WebM: the track's own length (the container's includes audio)
            duration = tag_duration
        elif c.duration:
            duration = c.duration / av.time_base - float((self._start_pts - (s.start_time or 0)) * self._tb)
        else:
            duration = 0.0
        frames = int(s.frames or 0)
        if not self._fps and duration and frames:
            self._fps = frames / duration
        if not frames and duration and self._fps:
            frames = max(1, round(duration * self._fps))
        if not duration and frames and self._fps:
            duration = frames / self._fps
        self._keyframes = sorted(e.timestamp for e in s.index_entries if e.is_keyframe) if len(s.index_entries) else []
        if self._keyframes and self._keyframes[0] < first.pts:
            # MP4/AVI index by dts, which runs ahead of pts by the B-frame delay: compare in pts
            shift = first.pts - self._keyframes[0]
            self._keyframes = [k + shift for k in self._keyframes]
        self.info = VideoInfo(
            path=str(self.path),
            duration=duration,
            fps=self._fps,
            frame_count=frames,
            width=self._display[0],
            height=self._display[1],
            coded_width=self._coded[0],
            coded_height=self._coded[1],
            rotation=self._rotation,
            variable_fps=None,
            has_audio=bool(c.streams.audio),
            codec=getattr(s.codec_context.codec, "canonical_name", None) or s.codec_context.name,  # av1, not libdav1d
            container=c.format.name,
            keyframes=len(self._keyframes),
        )

    def _probe_clock(self, first):
        """Decode a few frames ahead: a reordering stream whose container stores decode times as
        presentation times shows it here (its pts go backwards), and the reader switches to the dts clock
        before serving anything. Returns the (possibly re-decoded) first frame."""
        probed = []
        while len(probed) < _CLOCK_PROBE_FRAMES and not self._use_dts:
            frame = self._next_frame()
            if frame is None:
                break
            probed.append(frame)
        if self._use_dts:  # start again on the dts clock (_check_clock moved _start_pts to the first dts)
            self._clock_changed = False
            self._restart()
            return self._ahead
        self._lookahead = probed
        return first

    @property
    def origin(self) -> float:
        """Container time (s) of the first frame: time 0 of this reader and of ``vidtune.audio``."""
        return float(self._start_pts * self._tb)

    # -- time limit ------------------------------------------------------------------------------
    def _start_clock(self) -> None:
        self._deadline = time.monotonic() + self.time_limit if self.time_limit else None

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._deadline = None
            raise VideoDecodeError(
                self.path, f"decoding took longer than the {self.time_limit:g} s time limit; the file may be "
                f"damaged (set {TIME_LIMIT_ENV}=SECONDS to change the limit, 0 for none)")

    # -- decoding --------------------------------------------------------------------------------
    def _reset_clock_check(self) -> None:
        self._raw_last: tuple[int | None, int | None] = (None, None)
        self._faults = [0, 0]  # pts, dts going backwards in decoder output since the last flush

    def _check_clock(self, frame) -> None:
        pts, dts = frame.pts, frame.dts
        if self._use_dts or pts is None or dts is None:
            return
        last_pts, last_dts = self._raw_last
        self._faults[0] += last_pts is not None and pts <= last_pts
        self._faults[1] += last_dts is not None and dts <= last_dts
        self._raw_last = (pts, dts)
        if self._faults[0] > self._faults[1]:
            log.info("%s: presentation timestamps are out of order; using decode timestamps", self.path)
            self._use_dts = True
            self._clock_changed = True
            if self._first_dts is not None:
                self._start_pts = self._first_dts

    def _next_frame(self):
        self._check_deadline()
        if self._lookahead:
            return self._lookahead.pop(0)
        if self._gen is None:
            self._gen = self._container.decode(self._stream)
        try:
            frame = next(self._gen)
        except StopIteration:
            return None
        except av.error.EOFError:
            return None
        except av.error.FFmpegError as exc:
            # Damaged data ends this run of decoding like an end of stream; frames before it stay
            # usable and _frame_at reports the damage if a requested frame lies beyond it.
            self._decode_error = _reason(exc)
            log.debug("%s: decoder error %s", self.path, self._decode_error)
            return None
        self._check_clock(frame)
        if self._use_dts:
            frame.pts = frame.dts
        if frame.pts is None:  # some AVI/raw streams: extrapolate from the previous frame
            step = 1 / (self._fps * self._tb) if self._fps else 1
            frame.pts = 0 if self._last_pts is None else int(self._last_pts + step)
        self._last_pts = frame.pts
        return frame

    def _seek(self, target: float) -> None:
        """Position the decoder so that the next decoded frame is at or before ``target`` (tb units)."""
        for back_s in (0.0, 1.0, 4.0, 16.0, None):
            if back_s is None:
                offset = self._start_pts
            else:
                offset = int(target - back_s / self._tb)
            offset = max(offset, self._start_pts)
            try:
                self._container.seek(int(offset), stream=self._stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                self._restart()
                return
            self._gen = None
            self._lookahead = []
            self._prev = None
            self._last_pts = None
            self._reset_clock_check()
            self._ahead = self._next_frame()
            if self._ahead is not None and self._ahead.pts <= target:
                return
            if offset <= self._start_pts:
                break  # even seeking to the first frame's time landed past it (index by dts): restart
        self._restart()

    def _restart(self) -> None:
        """Reopen and decode from the start: the fallback for streams that cannot seek."""
        if self._container is not None:
            self._container.close()
        self._open()
        self._ahead = self._next_frame()

    def _can_decode_forward(self, target: float) -> bool:
        pos_frame = self._ahead if self._ahead is not None else self._prev
        if pos_frame is None:
            return False
        if self._prev is not None and target < self._prev.pts:
            return False  # behind us
        if self._prev is None and target < self._ahead.pts:
            return self._ahead.pts <= self._start_pts  # before the first frame: only at the very start
        pos = pos_frame.pts
        if self._lookahead:  # frames already decoded ahead (the clock probe): decoding on reaches them
            pos = max(pos, self._lookahead[-1].pts)
        if self._keyframes:
            i = bisect.bisect_right(self._keyframes, target) - 1
            return i < 0 or self._keyframes[i] <= pos
        return float((target - pos) * self._tb) <= _FORWARD_DECODE_S

    def _frame_at(self, t: float):
        ticks = t / float(self._tb)
        if abs(ticks - round(ticks)) < 1e-6:  # k / fps lands a hair below frame k's pts in floats
            ticks = round(ticks)
        target = self._start_pts + ticks
        if not self._can_decode_forward(target):
            self._seek(target)
        while True:
            if self._ahead is None:
                self._skip_nonref(target)
                self._ahead = self._next_frame()
                if self._ahead is None:  # end of stream
                    detail = f" (decoder: {self._decode_error})" if self._decode_error else ""
                    if self._prev is None:
                        raise VideoDecodeError(self.path, f"no frame could be decoded at {t:.3f}s{detail}")
                    last_t = float((self._prev.pts - self._start_pts) * self._tb)
                    slack = max(2.0 / self._fps if self._fps else 0.0, 0.25)
                    # past the claimed end is fine (last frame); short of it means frames are missing
                    if min(t, self.info.duration) > last_t + slack:
                        raise VideoDecodeError(
                            self.path,
                            f"truncated or damaged: no frame decodes after {last_t:.2f}s but "
                            f"{t:.2f}s was requested (header says {self.info.duration:.2f}s){detail}",
                        )
                    return self._prev
            if self._ahead.pts <= target:
                self._prev, self._ahead = self._ahead, None
                continue
            return self._prev if self._prev is not None else self._ahead

    def _skip_nonref(self, target: float) -> None:
        pos = self._last_pts
        margin = max(_SKIP_MARGIN_S, _SKIP_MARGIN_FRAMES / self._fps if self._fps else 0.0) / float(self._tb)
        skip = pos is not None and target - pos > margin
        if skip != self._skipping:
            self._stream.codec_context.skip_frame = "NONREF" if skip else "DEFAULT"
            self._skipping = skip

    def _to_array(self, frame, short_side: int | None) -> np.ndarray:
        rot = self._rotation
        if short_side is not None:
            w, h = short_side_size(self._display[0], self._display[1], short_side)
            if rot % 180 == 90:
                w, h = h, w
            if (w, h) != (frame.width, frame.height) or frame.format.name != "rgb24":
                # one reformatter per reader keeps FFmpeg's scaler context (its filters) across frames
                frame = self._reformatter.reformat(frame, width=w, height=h, format="rgb24",
                                                   interpolation=self._interp)
        elif (frame.width, frame.height) != self._coded:
            # the picture size changed mid-stream (adaptive streams, damaged data): one size per clip
            frame = self._reformatter.reformat(frame, width=self._coded[0], height=self._coded[1], format="rgb24",
                                               interpolation=self._interp)
        arr = frame.to_ndarray(format="rgb24")
        if rot:
            arr = np.rot90(arr, k=rot // 90)
        return np.ascontiguousarray(arr)

    def frames_at(self, timestamps: Sequence[float], short_side: int | None = None) -> np.ndarray:
        ts = [float(t) for t in timestamps]
        if not ts:
            raise ValueError("frames_at needs at least one timestamp")
        if any(t != t for t in ts):
            raise ValueError("frames_at got a NaN timestamp")
        ts = [min(t, 1e9) for t in ts]  # +inf means "the end"; keep tick arithmetic finite
        self._start_clock()
        try:
            return self._frames_at(ts, short_side)
        finally:
            self._deadline = None

    def _frames_at(self, ts: list[float], short_side: int | None) -> np.ndarray:
        for _ in range(2):
            self._clock_changed = False
            out: list[np.ndarray | None] = [None] * len(ts)
            converted: dict[int, np.ndarray] = {}
            for i in sorted(range(len(ts)), key=ts.__getitem__):
                frame = self._frame_at(max(ts[i], 0.0))
                if frame.pts not in converted:
                    converted[frame.pts] = self._to_array(frame, short_side)
                out[i] = converted[frame.pts]
            if not self._clock_changed:
                break
            self._restart()  # the clock changed under this request: serve it again on the right one
        return np.stack(out)

    def frame_times(self) -> list[float]:
        """Presentation times (s) of every frame, from packet headers (no decoding)."""
        with av.open(str(self.path), metadata_errors="ignore") as c:
            s = c.streams.video[0]
            pts = []
            for p in c.demux(s):
                self._check_deadline()
                if p.pts is not None and p.size > 0:
                    pts.append(p.pts)
        pts.sort()
        return [float((p - self._start_pts) * self._tb) for p in pts]

    def scan(self) -> VideoInfo:
        self._start_clock()
        try:
            times = self.frame_times()
        except av.error.FFmpegError as exc:
            log.warning("%s: packet scan failed (%s)", self.path, _reason(exc))
            return self.info
        finally:
            self._deadline = None
        if not times:
            return self.info
        info = self.info.to_dict()
        diffs = np.diff(np.asarray(times))
        variable = False
        if len(diffs) >= 2:
            med = float(np.median(diffs))
            # timestamps are rounded to whole ticks (1 ms in Matroska): allow one tick of jitter
            tol = max(0.1 * med, 1.01 * float(self._tb))
            variable = bool(med > 0 and (np.abs(diffs[:-1] - med) > tol).mean() > 0.01) if len(diffs) > 2 else False
        info.update(frame_count=len(times), frame_count_exact=True, variable_fps=variable)
        if len(times) > 1:
            last_dur = float(np.median(diffs)) if len(diffs) else 0.0
            info["duration"] = max(info["duration"], times[-1] + last_dur) if not info["duration"] else info["duration"]
            if variable or not info["fps"]:
                info["fps"] = (len(times) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else info["fps"]
        return VideoInfo(**info)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
            self._gen = None
            self._prev = self._ahead = None
