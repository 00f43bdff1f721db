"""Transformed copies of videos, for evaluating copy detection (``bench/copydetect.py``, tests).

A copy is made by decoding the source with FFmpeg (PyAV), changing the frames in NumPy/Pillow
(crop, scale, flip, blur, noise, brightness/contrast, text or logo overlay), retiming them (speed
change, excerpt) and encoding again with libx264 (optionally at a low bit rate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Frame = np.ndarray  # (H, W, 3) uint8 RGB


@dataclass(frozen=True)
class Copy:
    """One transformation: a per-frame function, a speed factor, a time range and an encoder rate."""

    name: str
    frame_fn: Callable[[Frame, np.random.Generator], Frame] | None = None
    speed: float = 1.0  # > 1: the copy plays faster (shorter)
    start: float | None = None  # excerpt of the source (seconds)
    end: float | None = None
    bit_rate: int | None = None  # bits/s; None: crf 23


def _even(x: int) -> int:
    return max(16, x - x % 2)


def crop(frac: float, rng_shift: bool = True):
    """Remove ``frac`` of each side length in total (kept off-centre by a fixed random shift)."""

    def fn(f: Frame, rng) -> Frame:
        h, w = f.shape[:2]
        ch, cw = int(h * (1 - frac)), int(w * (1 - frac))
        top = (h - ch) // 3 if rng_shift else (h - ch) // 2
        left = 2 * (w - cw) // 3 if rng_shift else (w - cw) // 2
        return f[top : top + ch, left : left + cw]

    return fn


def scale(factor: float):
    def fn(f: Frame, rng) -> Frame:
        from PIL import Image

        h, w = f.shape[:2]
        return np.asarray(Image.fromarray(f).resize((_even(int(w * factor)), _even(int(h * factor))), Image.BILINEAR))

    return fn


def hflip(f: Frame, rng) -> Frame:
    return f[:, ::-1]


def blur(radius: float):
    def fn(f: Frame, rng) -> Frame:
        from PIL import Image, ImageFilter

        return np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(radius)))

    return fn


def noise(sigma: float):
    def fn(f: Frame, rng) -> Frame:
        return np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8)

    return fn


def brightness_contrast(shift: float, gain: float):
    def fn(f: Frame, rng) -> Frame:
        x = (f.astype(np.float32) - 128.0) * gain + 128.0 + shift
        return np.clip(x, 0, 255).astype(np.uint8)

    return fn


def overlay(kind: str, size: float):
    """``text``: a caption band covering ``size`` of the height; ``logo``: a square badge of ``size`` width."""

    def fn(f: Frame, rng) -> Frame:
        from PIL import Image, ImageDraw

        im = Image.fromarray(np.ascontiguousarray(f))
        d = ImageDraw.Draw(im)
        h, w = f.shape[:2]
        if kind == "text":
            band = max(8, int(h * size))
            d.rectangle([0, h - band, w, h], fill=(0, 0, 0))
            d.text((4, h - band + 2), "COPY 2024 vidtune.example #repost", fill=(255, 255, 0))
        else:
            s = max(8, int(w * size))
            d.ellipse([w - s - 4, 4, w - 4, 4 + s], fill=(230, 30, 30), outline=(255, 255, 255), width=2)
            d.text((w - s, 4 + s // 3), "TV", fill=(255, 255, 255))
        return np.asarray(im)

    return fn


def write_copy(src, dst, copy: Copy, seed: int = 0, fps: float | None = None) -> Path:
    """Decode ``src``, apply ``copy``, encode H.264 to ``dst`` (MP4) at the source frame rate."""
    import av

    from vidtune.utils import atomic_path

    rng = np.random.default_rng(seed)
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 25)
        frames, times = [], []
        for fr in container.decode(stream):
            t = float(fr.time) if fr.time is not None else len(times) / rate
            times.append(t)
            frames.append(fr.to_ndarray(format="rgb24"))
    if not frames:
        raise ValueError(f"{src}: no frames")
    times = np.array(times) - times[0]
    s = copy.start or 0.0
    e = copy.end if copy.end is not None else times[-1] + 1.0 / rate
    out_fps = fps or rate
    n = max(1, int(round((e - s) / copy.speed * out_fps)))
    src_t = s + np.arange(n) / out_fps * copy.speed  # source time shown by each output frame
    idx = np.clip(np.searchsorted(times, src_t + 1e-6, side="right") - 1, 0, len(frames) - 1)
    out = []
    for i in idx:
        f = frames[i]
        if copy.frame_fn is not None:
            f = copy.frame_fn(f, rng)
        out.append(np.ascontiguousarray(f))
    h, w = (_even(x) for x in out[0].shape[:2])
    dst = Path(dst)
    with atomic_path(dst) as tmp, av.open(str(tmp), "w", format="mp4") as oc:
        vs = oc.add_stream("libx264", rate=int(round(out_fps)))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if copy.bit_rate:
            vs.bit_rate = copy.bit_rate
            vs.options = {"preset": "veryfast"}
        else:
            vs.options = {"preset": "veryfast", "crf": "23"}
        for k, f in enumerate(out):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]), format="rgb24")
            vf.pts = k
            oc.mux(vs.encode(vf))
        oc.mux(vs.encode(None))
    return dst


def standard_copies() -> list[Copy]:
    """The issue's transformations at two strengths each (excerpt times are set per video)."""
    return [
        Copy("reencode_300k", bit_rate=300_000), Copy("reencode_80k", bit_rate=80_000),
        Copy("scale_0.6", scale(0.6)), Copy("scale_0.35", scale(0.35)),
        Copy("crop_15", crop(0.15)), Copy("crop_30", crop(0.30)),
        Copy("hflip", hflip), Copy("hflip_crop_15", lambda f, r: crop(0.15)(hflip(f, r), r)),
        Copy("blur_2", blur(2)), Copy("blur_5", blur(5)),
        Copy("noise_10", noise(10)), Copy("noise_25", noise(25)),
        Copy("bright_contrast_1", brightness_contrast(40, 1.2)), Copy("bright_contrast_2", brightness_contrast(-60, 0.6)),
        Copy("speed_0.75", speed=0.75), Copy("speed_1.5", speed=1.5),
        Copy("text_overlay", overlay("text", 0.12)), Copy("logo_overlay", overlay("logo", 0.2)),
    ]
