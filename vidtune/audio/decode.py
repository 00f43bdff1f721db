"""Decode an audio track with PyAV, resampled to mono float32 at 16 kHz, aligned to video time.

A video without sound, silent sound, and sound that starts late or ends early are normal: the window
asked for always comes back with exactly ``round((end - start) * rate)`` samples, zeros where there
is no sound, and :attr:`AudioClip.coverage` says how much of the window real samples cover. Damaged
audio data ends the decoding of that window (logged), never the job.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from vidtune.errors import ConfigError, VideoDecodeError
from vidtune.utils import check_regular_file

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper and most speech/audio encoders expect
_SEEK_MARGIN_S = 0.5  # seek this far before the window: audio frames are up to ~0.1 s long
_MAX_BAD_PACKETS = 50  # this many undecodable audio packets in a row end a window (the rest is silent)
_GAP_S = 0.04  # timestamp jumps larger than this are gaps/overlaps in the sound, smaller ones rounding


@dataclass(frozen=True)
class AudioClip:
    """Mono samples of one window of a video's sound.

    Attributes:
        samples: float32 in [-1, 1], shape ``(round((end - start) * sample_rate),)``.
        sample_rate: samples per second.
        start, end: the window in video seconds (time 0 = the first video frame).
        present: whether the file has an audio stream at all.
        coverage: fraction of the window covered by decoded samples (0 with no stream; < 1 when the
            sound starts late, ends early or has gaps).
    """

    samples: np.ndarray
    sample_rate: int
    start: float
    end: float
    present: bool
    coverage: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def rms(self) -> float:
        """Root mean square level of the samples (0 for silence)."""
        return float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64)))) if self.samples.size else 0.0


@dataclass(frozen=True)
class AudioInfo:
    """What a probe of the sound knows: stream present, codec, native rate and channels, origin."""

    present: bool
    codec: str | None
    sample_rate: int | None
    channels: int | None
    origin: float  # container time (s) of the first video frame: time 0


def open_container(path: Path):
    """The file opened by PyAV, or :class:`VideoDecodeError` saying why it cannot be (missing, not a
    regular file, not media)."""
    if not path.exists():
        raise VideoDecodeError(path, "file not found; check the path")
    try:
        check_regular_file(path)
    except OSError as exc:
        raise VideoDecodeError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, OSError, ValueError) as exc:
        reason = str(exc).strip().split("\n")[0][:200] or type(exc).__name__
        raise VideoDecodeError(path, f"not a readable media file ({reason}); is it truncated?") from None


def _video_origin(path: Path, container) -> float:
    """Container time of the first video frame (vidtune's time 0); the audio start without video."""
    if container.streams.video:
        from vidtune.io.pyav_backend import PyAVReader

        with PyAVReader(path) as reader:  # the same origin the frame decoder uses, by construction
            return reader.origin
    stream = container.streams.audio[0]
    if stream.start_time is not None and stream.time_base:
        return float(stream.start_time * stream.time_base)
    return 0.0


def audio_info(path) -> AudioInfo:
    """Probe the sound of ``path`` without decoding it."""
    path = Path(path)
    container = open_container(path)
    try:
        if not container.streams.audio and not container.streams.video:
            raise VideoDecodeError(path, "has neither a video nor an audio stream")
        origin = _video_origin(path, container)
        if not container.streams.audio:
            return AudioInfo(False, None, None, None, origin)
        s = container.streams.audio[0]
        return AudioInfo(True, s.codec_context.name, s.codec_context.sample_rate or s.rate,
                         s.codec_context.channels, origin)
    finally:
        container.close()


def read_audio(path, start: float = 0.0, end: float | None = None, sample_rate: int = SAMPLE_RATE,
               origin: float | None = None) -> AudioClip:
    """The sound of ``path`` in the video-time window ``[start, end)`` (``end=None``: to the end).

    Seeks near ``start`` (it does not decode the sound before it) and resamples in FFmpeg
    (``aresample``: any codec and channel layout FFmpeg reads, mixed down to mono). Samples are placed
    by their timestamps, so a late start, an early end or a gap in the track leave zeros there.

    Args:
        origin: the container time of video time 0 when the caller knows it (skips a probe).

    Raises:
        VideoDecodeError: the file cannot be opened.
        ConfigError: an empty or negative window.
    """
    path = Path(path)
    if not (math.isfinite(start) and start >= 0):
        raise ConfigError("start", f"must be a finite number of seconds >= 0, got {start}")
    if end is not None and not (math.isfinite(end) and end > start):
        raise ConfigError("end", f"must be a finite number of seconds after start ({start}), got {end}")
    if sample_rate < 1000:
        raise ConfigError("sample_rate", f"must be at least 1000 Hz, got {sample_rate}")
    container = open_container(path)
    try:
        if origin is None:
            origin = _video_origin(path, container)
        if end is None:
            end = _media_end(container, origin, start)
        n = max(0, round((end - start) * sample_rate))
        out = np.zeros(n, dtype=np.float32)
        if not container.streams.audio or n == 0:
            return AudioClip(out, sample_rate, start, end, bool(container.streams.audio), 0.0)
        covered = np.zeros(n, dtype=bool)
        _decode_into(path, container, out, covered, origin + start, sample_rate)
        return AudioClip(out, sample_rate, start, end, True, float(covered.mean()))
    finally:
        container.close()


def _media_end(container, origin: float, start: float) -> float:
    """Video-time end of the file: the longest stream (or the container's duration)."""
    ends = []
    for s in list(container.streams.video[:1]) + list(container.streams.audio[:1]):
        if s.duration and s.time_base:
            s0 = float(s.start_time * s.time_base) if s.start_time is not None else origin
            ends.append(s0 + float(s.duration * s.time_base) - origin)
    if not ends and container.duration:
        c0 = container.start_time / av.time_base if container.start_time is not None else origin
        ends.append(c0 + container.duration / av.time_base - origin)
    end = max(ends) if ends else 0.0
    return end if end > start else start


def _decode_into(path: Path, container, out: np.ndarray, covered: np.ndarray, t0: float,
                 rate: int) -> None:
    """Decode audio from container time ``t0`` on into ``out`` (mono float32 at ``rate``)."""
    stream = container.streams.audio[0]
    stream.thread_type = "AUTO"
    tb = stream.time_base
    if t0 > _SEEK_MARGIN_S and tb:
        try:
            container.seek(int((t0 - _SEEK_MARGIN_S) / tb), stream=stream, backward=True)
        except av.error.FFmpegError as exc:  # unseekable: decode from the start instead
            log.debug("%s: audio seek failed (%s); decoding from the start", path, exc)
            container.seek(0)
    # Keep the layout and average the channels ourselves: FFmpeg's stereo->mono rematrix adds the
    # channels at -3 dB (a louder sum, which can clip); the mean keeps a centred sound's level.
    resampler = av.AudioResampler(format="fltp", rate=rate)
    n = out.shape[0]
    t_end = t0 + n / rate
    # Container timestamps are often rounded (Matroska: 1 ms, i.e. 16 samples at 16 kHz), so frames
    # follow on from the previous one unless their timestamp jumps by more than _GAP_S (a real gap or
    # overlap), like FFmpeg's aresample=async.
    expected: list[float | None] = [None]

    def place(frame) -> bool:
        """Copy one resampled frame into the window; False once frames pass the window's end."""
        if frame.pts is None or frame.time_base is None:
            return True
        ft = float(frame.pts * frame.time_base)
        if expected[0] is not None and abs(ft - expected[0]) <= _GAP_S:
            ft = expected[0]
        data = frame.to_ndarray()
        data = data.mean(axis=0) if data.ndim == 2 and data.shape[0] > 1 else data.reshape(-1)
        expected[0] = ft + data.shape[0] / rate
        if ft >= t_end:
            return False
        i = round((ft - t0) * rate)
        lo, hi = max(i, 0), min(i + data.shape[0], n)
        if hi > lo:
            out[lo:hi] = data[lo - i:hi - i]
            covered[lo:hi] = True
        return True

    bad = 0  # consecutive packets the decoder refused
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                # One damaged packet (e.g. an AC-3 frame cut at the start of an AVI) costs its own
                # samples only, as in FFmpeg's command line; a run of them ends the window.
                bad += 1
                if bad == 1 or bad == _MAX_BAD_PACKETS:
                    log.debug("%s: audio packet at %s s not decodable (%s)", path,
                              float(packet.pts * packet.time_base) if packet.pts is not None else "?", exc)
                if bad >= _MAX_BAD_PACKETS:
                    raise
                continue
            bad = 0
            for frame in frames:
                if frame.pts is None:
                    continue
                for rf in resampler.resample(frame):
                    if not place(rf):
                        return
        for rf in resampler.resample(None):  # flush what the resampler holds
            if not place(rf):
                return
    except av.error.FFmpegError as exc:
        done = float(np.flatnonzero(covered)[-1] + 1) / rate if covered.any() else 0.0
        log.warning("%s: audio data damaged %.2f s into the window (%s); the rest of it is silent",
                    path, done, str(exc).split("\n")[0][:200])
