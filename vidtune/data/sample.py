"""Built-in synthetic sample dataset (``vidtune sample-data OUT``).

Writes real encoded video files (H.264 in MP4 by default) in the folder-per-class layout the rest of
vidtune reads::

    OUT/<class>/<class>_000.mp4
    OUT/<class>/<class>_001.mp4
    ...

Every clip shows one or two moving, rotating objects of its class on a noisy background. The classes
differ by *appearance* (shape and texture: a shaded ball, a checkerboard tile, a striped bar, a ring,
...), never by colour: object, texture and background colours are drawn at random per clip, so a
classifier has to look at shapes and textures (what a pretrained image backbone is good at) rather
than a colour histogram. Motion (bouncing trajectory, speed, spin) is random per clip too.

``kind="motion"`` writes a temporal task instead (:data:`MOTION_CLASSES`): classes that differ only in
the order of frames, in time-reversed pairs (left/right, up/down, clockwise/anticlockwise,
approach/recede, zoom_in/zoom_out, appear/disappear). Every class draws the object design, colours,
background, start position and speed from the same distribution, and a class renders exactly the
clips of its partner's distribution with time reversed, so the unordered set of a clip's frames
carries no information about which of the two classes it belongs to: a model that averages frames
is at chance within each pair. The object stays in the central square of the short side (what a
classifier's centre crop keeps).

Generation is deterministic: a clip's pixels depend only on ``seed``, its class design, its index
and the size/fps/duration arguments (not on which other classes are written). RGB->YUV conversion is
done in numpy (swscale's SIMD paths are CPU-dependent), x264 runs with ``cpu-independent=1`` (without
it, its CPU-specific float code gave different bitstreams for the same frames, even between runs on
one machine) and muxers with ``fflags=+bitexact``, so the same arguments give byte-identical files.

Rendering is vectorised numpy (only the object's bounding box is shaded per frame): the default 4 x
20 clips of 160x120, 2 s at 12 fps take about 3-5 s on 2 CPU cores, encoding included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidtune.errors import SampleDataError, SampleDataExistsError
from vidtune.utils import atomic_path

__all__ = [
    "DESIGNS",
    "KINDS",
    "MOTION_CLASSES",
    "SampleDataError",
    "SampleDataExistsError",
    "SampleDatasetInfo",
    "default_class_names",
    "motion_pairs",
    "render_motion_clip",
    "write_sample_dataset",
]

_MIN_SIZE = 16
_MAX_SIZE = 4096
_MAX_FRAMES = 100_000
# Codec -> (default container extension, extensions it may be written to).
_CODECS = {
    "libx264": (".mp4", (".mp4", ".mkv", ".mov")),
    "mpeg4": (".avi", (".avi", ".mp4", ".mkv")),
}
_MUXERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi"}
_SEED_SALT = 0x5EED_DA7A  # namespaces the sample-data random streams
_BT601, _LIMITED_RANGE = 6, 1  # AVCOL_SPC_SMPTE170M, AVCOL_RANGE_MPEG (the frames are BT.601 "TV" range)


@dataclass(frozen=True)
class SampleDatasetInfo:
    """What :func:`write_sample_dataset` wrote.

    Attributes:
        out_dir: the dataset root.
        classes: class names, in order (also the sub-folder names).
        counts: clips per class.
        files: every file written, class by class, index by index.
        size: (width, height) of the videos (odd requests are rounded down to even).
        fps, frames: frame rate and frames per clip.
        codec: the encoder used.
        kind: "appearance" or "motion".
    """

    out_dir: Path
    classes: list[str]
    counts: dict[str, int]
    files: list[Path] = field(default_factory=list)
    size: tuple[int, int] = (160, 120)
    fps: int = 12
    frames: int = 24
    codec: str = "libx264"
    kind: str = "appearance"

    @property
    def total(self) -> int:
        return len(self.files)


# ---------------------------------------------------------------------------------------------------
# Object designs. Each takes object-local coordinates (u, v), normalised so the object's "radius" is
# 1, the size of one pixel in those units (for anti-aliasing) and two colours (RGB float 0..255), and
# returns (coverage alpha in 0..1 with shape (h, w), colour with shape (h, w, 3)).
# ---------------------------------------------------------------------------------------------------


def _cover(sdf: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (negative inside), ``px`` = one pixel."""
    return np.clip(0.5 - sdf / px, 0.0, 1.0)


def _soft(s: np.ndarray, px: float, scale: float) -> np.ndarray:
    """Soft 0/1 threshold of a periodic texture function ``s`` (roughly one pixel wide)."""
    return np.clip(0.5 + s * (scale / px), 0.0, 1.0)


def _mix(t: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    return c1 + t[..., None] * (c2 - c1)


def _ball(u, v, px, c1, c2, light):
    r2 = u * u + v * v
    alpha = _cover(np.sqrt(r2) - 1.0, px)
    nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    lx, ly, lz = light
    lam = np.clip(u * lx + v * ly + nz * lz, 0.0, 1.0)
    # Blinn-Phong highlight with the viewer on +z.
    hx, hy, hz = lx, ly, lz + 1.0
    hn = math.sqrt(hx * hx + hy * hy + hz * hz)
    spec = np.clip((u * hx + v * hy + nz * hz) / hn, 0.0, 1.0) ** 24
    col = c1 * (0.2 + 0.8 * lam)[..., None] + (200.0 * spec)[..., None]
    return alpha, col


def _checkerboard(u, v, px, c1, c2, cells):
    a = 0.78
    alpha = _cover(np.maximum(np.abs(u), np.abs(v)) - a, px)
    k = math.pi * cells / (2 * a)
    t = _soft(np.sin(k * (u + a)) * np.sin(k * (v + a)), px, 1.2 * a / cells)
    return alpha, _mix(t, c1, c2)


def _stripes(u, v, px, c1, c2, cells):
    a, b = 1.0, 0.55
    alpha = _cover(np.maximum(np.abs(u) - a, np.abs(v) - b), px)
    k = math.pi * cells / (2 * a)
    t = _soft(np.sin(k * u), px, a / cells)
    return alpha, _mix(t, c1, c2)


def _ring(u, v, px, c1, c2, inner):
    r = np.sqrt(u * u + v * v)
    alpha = _cover(np.maximum(r - 1.0, inner - r), px)
    # Thin contrasting rims on both edges.
    rim = np.clip(np.maximum(r - (1.0 - 0.12), (inner + 0.12) - r) / 0.04, 0.0, 1.0)
    return alpha, _mix(rim, c1, c2)


def _triangle(u, v, px, c1, c2, _):
    sdf = None
    for k in range(3):
        ang = math.pi / 2 + k * 2 * math.pi / 3
        d = u * math.cos(ang) + v * math.sin(ang) - 0.5
        sdf = d if sdf is None else np.maximum(sdf, d)
    alpha = _cover(sdf, px)
    t = np.clip((v + 1.0) / 1.6, 0.0, 1.0)  # vertical gradient c2 (tip) -> c1 (base)
    return alpha, _mix(t, c2, c1)


def _cross(u, v, px, c1, c2, _):
    w = 0.32
    sdf = np.minimum(np.maximum(np.abs(u) - 1.0, np.abs(v) - w), np.maximum(np.abs(u) - w, np.abs(v) - 1.0))
    alpha = _cover(sdf, px)
    border = np.clip((sdf + 0.14) / 0.04, 0.0, 1.0)
    return alpha, _mix(border, c1, c2)


def _star(u, v, px, c1, c2, _):
    r = np.sqrt(u * u + v * v)
    f = (np.arctan2(v, u) * (5 / (2 * math.pi))) % 1.0
    tri = np.abs(f - 0.5) * 2.0  # 1 at the tips, 0 between them
    rb = 0.42 + 0.58 * tri
    alpha = _cover((r - rb) * 0.6, px)  # radial distance * ~sin(tip half-angle) ~ edge distance
    return alpha, _mix(np.clip(r / 0.6, 0.0, 1.0), c2, c1)


def _polka(u, v, px, c1, c2, cells):
    d = (np.abs(u) + np.abs(v)) / math.sqrt(2.0)
    alpha = _cover(d - 0.72, px)
    step = 2.0 / cells
    du = (u / step) % 1.0 - 0.5
    dv = (v / step) % 1.0 - 0.5
    dist = np.sqrt(du * du + dv * dv) * step
    t = _cover(dist - 0.3 * step, px)
    return alpha, _mix(t, c1, c2)


# name -> (renderer, range of its per-object parameter: texture cells, or the ring's inner radius).
# The order is part of the seeding (a clip's random stream is keyed by the design's position): append only.
DESIGNS: dict[str, tuple[Callable, tuple[float, float] | None]] = {
    "ball": (_ball, None),
    "checkerboard": (_checkerboard, (3.0, 5.0)),
    "stripes": (_stripes, (5.0, 8.0)),
    "ring": (_ring, (0.5, 0.68)),
    "triangle": (_triangle, None),
    "cross": (_cross, None),
    "star": (_star, None),
    "polka": (_polka, (3.0, 4.5)),
}
_DESIGN_IDS = {name: i for i, name in enumerate(DESIGNS)}
_INT_PARAM = {"checkerboard", "stripes"}  # whole number of cells


KINDS = ("appearance", "motion")


def _kind_names(kind: str) -> list[str]:
    if kind == "appearance":
        return list(DESIGNS)
    if kind == "motion":
        return list(MOTION_CLASSES)
    raise SampleDataError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def default_class_names(n: int, kind: str = "appearance") -> list[str]:
    """The first ``n`` built-in class names of ``kind``.

    appearance (2..8): ball, checkerboard, stripes, ring, ...; motion (2..12): left, right, up, down,
    clockwise, anticlockwise, approach, recede, zoom_in, zoom_out, appear, disappear (an even ``n``
    gives complete time-reversed pairs).
    """
    names = _kind_names(kind)
    if isinstance(n, bool) or not isinstance(n, int):
        raise SampleDataError(f"number of classes must be an int, got {n!r}")
    if not 2 <= n <= len(names):
        raise SampleDataError(f"number of {kind} classes must be between 2 and {len(names)}, got {n}")
    return names[:n]


# ---------------------------------------------------------------------------------------------------
# Clip rendering
# ---------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (0..1) to RGB float 0..255."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _bounce(p0: float, vel: float, lo: float, hi: float, t: float) -> float:
    """Position at time ``t`` of a point bouncing between ``lo`` and ``hi`` (closed form)."""
    span = hi - lo
    if span <= 0:
        return (lo + hi) / 2
    m = (p0 - lo + vel * t) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


def _upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small (gh, gw, c) grid to (h, w, c)."""
    gh, gw = grid.shape[:2]
    ys = np.linspace(0, gh - 1, h, dtype=np.float32)
    xs = np.linspace(0, gw - 1, w, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), gh - 2)
    x0 = np.minimum(xs.astype(int), gw - 2)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    g00 = grid[y0][:, x0]
    g01 = grid[y0][:, x0 + 1]
    g10 = grid[y0 + 1][:, x0]
    g11 = grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Gradient between two muted colours + low-frequency colour blobs + fixed grain, float (h, w, 3)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    g = (xx - width / 2) * math.cos(ang) + (yy - height / 2) * math.sin(ang)
    g = (g - g.min()) / max(float(np.ptp(g)), 1.0)
    ca = _hsv(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.85))
    cb = _hsv(rng.uniform(), rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.85))
    bg = ca + g[..., None] * (cb - ca)
    blobs = rng.normal(0.0, rng.uniform(10.0, 30.0), size=(rng.integers(3, 7), rng.integers(3, 7), 3))
    bg = bg + _upsample(blobs.astype(np.float32), height, width)
    bg = bg + rng.normal(0.0, rng.uniform(0.0, 10.0), size=bg.shape)
    return bg.astype(np.float32)


def _object_look(design: str, rng: np.random.Generator, bg_mean: np.ndarray):
    """Random (c1, c2, param) of one object of ``design`` that stands out from a background of ``bg_mean``."""
    _, prange = DESIGNS[design]
    # Main colour far enough from the background that the object is visible; second colour
    # (texture / rim) contrasting in brightness with the first.
    for _try in range(32):
        v1 = rng.uniform(0.45, 1.0)
        c1 = _hsv(rng.uniform(), rng.uniform(0.3, 1.0), v1)
        if np.linalg.norm(c1 - bg_mean) > 70.0:
            break
    v2 = rng.uniform(0.0, 0.25) if v1 > 0.6 else rng.uniform(0.85, 1.0)
    c2 = _hsv(rng.uniform(), rng.uniform(0.0, 1.0), v2)
    if prange is None:
        param = None
    elif design in _INT_PARAM:
        param = int(rng.integers(int(prange[0]), int(prange[1]) + 1))
    else:
        param = float(rng.uniform(*prange))
    if design == "ball":
        la = rng.uniform(0, 2 * math.pi)
        lxy = rng.uniform(0.3, 0.7)
        param = (lxy * math.cos(la), lxy * math.sin(la), math.sqrt(1 - lxy * lxy))
    return c1, c2, param


def _draw(img: np.ndarray, render: Callable, cx: float, cy: float, r: float, th: float, c1, c2, param,
          opacity: float = 1.0) -> None:
    """Composite one object (centre, radius ``r`` px, angle ``th``: clockwise on screen) onto ``img``."""
    h, w = img.shape[:2]
    m = 1.25 * r + 2
    x0, x1 = max(0, int(cx - m)), min(w, int(cx + m) + 1)
    y0, y1 = max(0, int(cy - m)), min(h, int(cy + m) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = math.cos(th), math.sin(th)
    u = (c * dx + s * dy) / r
    v = (-s * dx + c * dy) / r
    alpha, col = render(u, v, 1.0 / r, c1, c2, param)
    a = alpha[..., None] if opacity == 1.0 else (opacity * alpha)[..., None]
    patch = img[y0:y1, x0:x1]
    img[y0:y1, x0:x1] = patch + a * (col - patch)


class _Clip:
    """Random parameters of one clip; :meth:`frame` renders frame ``i`` as uint8 (h, w, 3)."""

    def __init__(self, design: str, rng: np.random.Generator, width: int, height: int, fps: int):
        self.rng = rng
        self.w, self.h, self.fps = width, height, fps
        short = min(width, height)

        self.bg = _background(rng, width, height)
        self.noise = float(rng.uniform(2.0, 8.0))
        bg_mean = self.bg.reshape(-1, 3).mean(0)

        self.render = DESIGNS[design][0]
        self.objects = []
        n_obj = 2 if rng.uniform() < 0.3 else 1
        for _ in range(n_obj):
            c1, c2, param = _object_look(design, rng, bg_mean)
            radius = float(rng.uniform(0.18, 0.3) * short)
            if n_obj == 2:
                radius *= 0.8
            speed = float(rng.uniform(0.25, 0.8) * short)  # px / s
            direction = rng.uniform(0, 2 * math.pi)
            lo = 0.9 * radius
            self.objects.append(
                dict(
                    c1=c1,
                    c2=c2,
                    param=param,
                    r=radius,
                    x0=float(rng.uniform(lo, width - lo)),
                    y0=float(rng.uniform(lo, height - lo)),
                    vx=speed * math.cos(direction),
                    vy=speed * math.sin(direction),
                    lo=lo,
                    th0=float(rng.uniform(0, 2 * math.pi)),
                    om=float(rng.uniform(-1.5, 1.5)),  # rad / s
                )
            )

    def frame(self, i: int) -> np.ndarray:
        t = i / self.fps
        w, h = self.w, self.h
        img = self.bg + self.noise * self.rng.standard_normal(self.bg.shape, dtype=np.float32)
        for o in self.objects:
            cx = _bounce(o["x0"], o["vx"], o["lo"], w - o["lo"], t)
            cy = _bounce(o["y0"], o["vy"], o["lo"], h - o["lo"], t)
            th = o["th0"] + o["om"] * t
            _draw(img, self.render, cx, cy, o["r"], th, o["c1"], o["c2"], o["param"])
        return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Motion clips (kind="motion"): classes that differ only in the order of their frames
# ---------------------------------------------------------------------------------------------------

# Class -> (motion, played backwards?). Each motion is rendered forwards in normalised time tau = 0..1;
# its partner class renders the same random draw with tau running 1..0, so a clip of one class played
# backwards is a clip of the other, drawn from the same distribution. The order is a public contract
# (``--classes N`` takes the first N: 2, 4, 6, ... give complete pairs) and part of the seeding: append only.
MOTION_CLASSES: dict[str, tuple[str, bool]] = {
    "left": ("horizontal", True),
    "right": ("horizontal", False),
    "up": ("vertical", True),
    "down": ("vertical", False),
    "clockwise": ("spin", False),
    "anticlockwise": ("spin", True),
    "approach": ("scale", False),
    "recede": ("scale", True),
    "zoom_in": ("zoom", False),
    "zoom_out": ("zoom", True),
    "appear": ("fade", False),
    "disappear": ("fade", True),
}
_MOTION_IDS = {name: i for i, name in enumerate(MOTION_CLASSES)}
_MOTION_SALT = 0x40710  # separates the motion streams from the appearance ones
# The ring is the same at every angle: its rotation would be invisible, so motion clips leave it out (in
# every class, so that the object never tells the class).
_MOTION_DESIGNS = tuple(d for d in DESIGNS if d != "ring")
# The classifier's evaluation crop keeps the central square of the short side (224 of 256 px): motion
# clips keep the object inside the central ``_VIEW`` fraction of the short side.
_VIEW = 0.875


def motion_pairs(names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The time-reversed class pairs among ``names`` (all motion classes by default), in list order."""
    names = list(MOTION_CLASSES) if names is None else list(names)
    pairs = []
    for a in names:
        for b in names:
            if a != b and a in MOTION_CLASSES and b in MOTION_CLASSES and names.index(a) < names.index(b):
                if MOTION_CLASSES[a][0] == MOTION_CLASSES[b][0]:
                    pairs.append((a, b))
    return pairs


def _bilinear(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Sample float (h, w, c) ``img`` at pixel-centre coordinates ``ys`` (rows) x ``xs`` (columns), edges clamped."""
    h, w = img.shape[:2]
    xs = np.clip(xs - 0.5, 0, w - 1)
    ys = np.clip(ys - 0.5, 0, h - 1)
    x0 = np.minimum(xs.astype(int), w - 2)
    y0 = np.minimum(ys.astype(int), h - 2)
    fx = (xs - x0)[None, :, None].astype(np.float32)
    fy = (ys - y0)[:, None, None].astype(np.float32)
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x0 + 1] * fx
    bot = img[y0 + 1][:, x0] * (1 - fx) + img[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


class _MotionClip:
    """One clip of a motion class; :meth:`frame` renders frame ``i`` as uint8 (h, w, 3).

    All random parameters come from ``key`` (a list of ints); the clip renders its motion forwards or,
    with ``backwards``, with time reversed. Sensor noise is drawn per *forward* frame index from ``key``,
    so ``_MotionClip(m, True, key, ...)`` is exactly ``_MotionClip(m, False, key, ...)`` played backwards.
    """

    def __init__(self, motion: str, backwards: bool, key: list[int], width: int, height: int, n_frames: int):
        rng = np.random.default_rng(np.random.SeedSequence(key))
        self.key, self.motion, self.backwards = list(key), motion, backwards
        self.w, self.h, self.n = width, height, n_frames
        short = min(width, height)
        half = 0.5 * _VIEW * short  # half side of the region the centre crop keeps

        self.bg = _background(rng, width, height)
        self.noise = float(rng.uniform(2.0, 8.0))
        design = _MOTION_DESIGNS[int(rng.integers(len(_MOTION_DESIGNS)))]
        self.design = design
        self.render = DESIGNS[design][0]
        self.c1, self.c2, self.param = _object_look(design, rng, self.bg.reshape(-1, 3).mean(0))
        self.th0 = float(rng.uniform(0, 2 * math.pi))
        u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        self.spin = u(-1.2, 1.2)  # nuisance rotation over the clip (rad), symmetric in sign
        self.zoom = 1.0  # whole-frame magnification at tau = 1
        self.grow = 1.0  # object radius factor at tau = 1
        self.travel = (0.0, 0.0)  # displacement over the clip (px)
        if motion in ("horizontal", "vertical"):
            r = u(0.11, 0.16) * short
            d = u(0.40, 0.55) * short
            along = u(-1, 1) * max(0.0, half - d / 2 - 0.8 * r)
            across = u(-1, 1) * 0.6 * (half - r)
            start = (along - d / 2, across)
            self.travel = (d, 0.0)
            if motion == "vertical":
                start, self.travel = start[::-1], self.travel[::-1]
        elif motion == "spin":
            r = u(0.20, 0.28) * short
            start = (u(-0.08, 0.08) * short, u(-0.08, 0.08) * short)
            # 2.6..4 rad over the clip: with 8 frames sampled from it, 19..29 degrees per step, below half
            # the symmetry period of every design (the 5-pointed star repeats every 72 degrees).
            self.spin = u(2.6, 4.0)
        elif motion == "scale":
            r = u(0.07, 0.10) * short
            start = (u(-0.08, 0.08) * short, u(-0.08, 0.08) * short)
            self.grow = u(2.5, 3.2)
        elif motion == "zoom":
            r = u(0.10, 0.13) * short
            start = (u(-0.08, 0.08) * short, u(-0.08, 0.08) * short)
            self.zoom = u(1.8, 2.4)
            # Zoom towards a point near the object, so that it stays inside the central crop.
            self.focus = (start[0] + u(-0.04, 0.04) * short, start[1] + u(-0.04, 0.04) * short)
        elif motion == "fade":
            r = u(0.16, 0.24) * short
            start = (u(-0.1, 0.1) * short, u(-0.1, 0.1) * short)
        else:  # pragma: no cover - MOTION_CLASSES is fixed
            raise AssertionError(motion)
        self.r, self.start = r, start

    def geometry(self, i: int) -> tuple[float, float, float, float, float]:
        """Frame ``i``'s object centre x, y and radius in output pixels, its opacity and the magnification."""
        w, h = self.w, self.h
        j = self.n - 1 - i if self.backwards else i
        tau = j / max(1, self.n - 1)
        cx = w / 2 + self.start[0] + self.travel[0] * tau
        cy = h / 2 + self.start[1] + self.travel[1] * tau
        r = self.r * self.grow**tau
        m = self.zoom**tau
        if self.motion == "zoom":
            fx, fy = w / 2 + self.focus[0], h / 2 + self.focus[1]
            cx, cy, r = w / 2 + (cx - fx) * m, h / 2 + (cy - fy) * m, r * m
        return cx, cy, r, (tau if self.motion == "fade" else 1.0), m

    def frame(self, i: int) -> np.ndarray:
        w, h = self.w, self.h
        j = self.n - 1 - i if self.backwards else i
        cx, cy, r, opacity, m = self.geometry(i)
        if self.motion == "zoom":
            fx, fy = w / 2 + self.focus[0], h / 2 + self.focus[1]
            xs = fx + (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / m
            ys = fy + (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / m
            img = _bilinear(self.bg, xs, ys)
        else:
            img = self.bg.copy()
        if opacity > 0:
            th = self.th0 + self.spin * (j / max(1, self.n - 1))
            _draw(img, self.render, cx, cy, r, th, self.c1, self.c2, self.param, opacity)
        noise = np.random.default_rng(np.random.SeedSequence([*self.key, j])).standard_normal(
            img.shape, dtype=np.float32
        )
        return np.clip(img + self.noise * noise + 0.5, 0, 255).astype(np.uint8)


def _motion_key(seed: int, name: str, index: int) -> list[int]:
    return [_SEED_SALT, seed % (1 << 64), _MOTION_SALT, _MOTION_IDS[name], index]


def render_motion_clip(name: str, index: int = 0, *, seed: int = 0, size: tuple[int, int] = (160, 120),
                       frames: int = 24, key_class: str | None = None) -> np.ndarray:
    """The frames of clip ``index`` of motion class ``name`` as uint8 (T, H, W, 3), before encoding.

    ``key_class`` draws the random parameters of that class's clip instead (its time-reversed partner
    gives exactly the reversed frames); by default a class draws its own.
    """
    if name not in MOTION_CLASSES or (key_class is not None and key_class not in MOTION_CLASSES):
        raise SampleDataError(f"unknown motion class {name!r}; choose from {', '.join(MOTION_CLASSES)}")
    motion, backwards = MOTION_CLASSES[name]
    key = _motion_key(int(seed), key_class or name, int(index))
    clip = _MotionClip(motion, backwards, key, int(size[0]), int(size[1]), int(frames))
    return np.stack([clip.frame(i) for i in range(clip.n)])


def _rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (h, w, 3), h and w even -> yuv420p planes stacked as (h * 3 // 2, w), BT.601 limited range.

    Done in numpy rather than swscale: swscale's SIMD paths are not bit-exact across CPUs, and the
    point here is that the same seed gives the same pixels on every machine.
    """
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    q = 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])  # 2x2 average
    r, g, b = q[..., 0], q[..., 1], q[..., 2]
    cb = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    cr = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    out = np.empty((h * 3 // 2, w), dtype=np.uint8)
    out[:h] = np.clip(np.floor(y + 0.5), 0, 255)
    out[h:] = np.clip(np.floor(np.concatenate([cb, cr]).reshape(h // 2, w) + 0.5), 0, 255)
    return out


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------

_BAD_NAME = re.compile(r"[/\\\x00-\x1f:*?\"<>|]")


def _class_names(classes, kind: str = "appearance") -> list[str]:
    known = _kind_names(kind)
    if classes is None:
        return default_class_names(4, kind)
    if isinstance(classes, int) and not isinstance(classes, bool):
        return default_class_names(classes, kind)
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise SampleDataError(
            f"classes must be a number of classes or a list of class names, got {classes!r}"
        )
    names = list(classes)
    if len(names) < 2:
        raise SampleDataError(f"need at least 2 classes, got {len(names)}")
    if len(names) > len(known):
        raise SampleDataError(f"at most {len(known)} {kind} classes are available, got {len(names)}")
    for name in names:
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise SampleDataError(
                f"class names must be non-empty strings without surrounding spaces, got {name!r}"
            )
        if name.startswith(".") or _BAD_NAME.search(name):
            raise SampleDataError(f"class name {name!r} cannot be used as a folder name")
    if len({n.lower() for n in names}) != len(names):
        raise SampleDataError(f"class names must be unique (case-insensitively), got {names}")
    if kind == "motion":
        unknown = [n for n in names if n not in MOTION_CLASSES]
        if unknown:
            raise SampleDataError(
                f"unknown motion class {unknown[0]!r}: motion classes are {', '.join(MOTION_CLASSES)}"
            )
    return names


def _assign_designs(names: list[str]) -> list[str]:
    """A distinct design per class: a name that is a design's name gets it, others take the rest in order."""
    taken = {n for n in names if n in DESIGNS}
    free = [d for d in DESIGNS if d not in taken]
    out = []
    for n in names:
        out.append(n if n in DESIGNS else free.pop(0))
    return out


def _class_counts(n_classes: int, per_class: int, imbalance: float) -> list[int]:
    if imbalance == 1.0:
        return [per_class] * n_classes
    return [max(1, round(per_class * imbalance ** (-k / (n_classes - 1)))) for k in range(n_classes)]


def _write_clip(path: Path, clip: _Clip, n_frames: int, fps: int, codec: str) -> None:
    with atomic_path(path) as tmp:  # the one atomic write: a device or FIFO in the way is refused
        # fflags=bitexact: no random UIDs / library versions in the header (byte-identical reruns).
        with av.open(
            str(tmp), "w", format=_MUXERS[path.suffix], options={"fflags": "+bitexact"}
        ) as container:
            stream = container.add_stream(codec, rate=fps)
            stream.width, stream.height = clip.w, clip.h
            stream.pix_fmt = "yuv420p"
            cc = stream.codec_context
            cc.gop_size = max(1, fps)  # a keyframe a second: cheap seeking
            cc.colorspace, cc.color_range = _BT601, _LIMITED_RANGE
            if codec == "libx264":
                # cpu-independent: x264 otherwise picks CPU-specific float code paths (mb-tree) whose
                # output differs between machines -- and, observed here, between runs on one machine.
                stream.options = {"crf": "23", "preset": "veryfast", "x264-params": "cpu-independent=1"}
            else:
                stream.bit_rate = max(200_000, int(clip.w * clip.h * fps * 2.5))
                cc.flags |= av.codec.context.Flags.bitexact
            tb = Fraction(1, fps)
            for i in range(n_frames):
                frame = av.VideoFrame.from_ndarray(_rgb_to_yuv420p(clip.frame(i)), format="yuv420p")
                frame.colorspace, frame.color_range = _BT601, _LIMITED_RANGE
                frame.pts = i
                frame.time_base = tb
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


def write_sample_dataset(
    out_dir,
    *,
    classes: int | Sequence[str] | None = None,
    per_class: int = 20,
    seconds: float = 2.0,
    fps: int = 12,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
    codec: str = "libx264",
    imbalance: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
    container: str | None = None,
    overwrite: bool = False,
    kind: str = "appearance",
) -> SampleDatasetInfo:
    """Write the synthetic sample dataset to ``out_dir/<class>/<class>_<index:03d>.<ext>``.

    Args:
        out_dir: dataset root; created if missing. Must be empty unless ``overwrite``.
        classes: number of built-in classes (appearance: 2..8, default 4: ball, checkerboard, stripes,
            ring; motion: 2..12, default 4: left, right, up, down) or a list of class names. For
            appearance, a name that is a built-in design (see :data:`DESIGNS`) shows that design; other
            names get the remaining designs in order. For motion, names must come from
            :data:`MOTION_CLASSES` (a class listed without its time-reversed partner can be told apart
            without frame order).
        per_class: clips in the largest class (>= 1).
        seconds: clip duration; each clip has ``round(seconds * fps)`` frames (>= 1).
        fps: frame rate (1..240).
        size: (width, height), each >= 16 px. yuv420p needs even sizes: odd values are rounded down
            to the next even number (161x121 gives 160x120).
        seed: generation seed; same arguments and seed give identical frames.
        codec: ``"libx264"`` (H.264, .mp4, crf 23) or ``"mpeg4"`` (MPEG-4 Part 2, .avi by default).
        imbalance: >= 1. Class sizes decay geometrically from ``per_class`` (first class) so that the
            first class has ``imbalance`` times the clips of the last (up to rounding).
        progress: called as ``progress(done, total)`` after each clip.
        container: file extension override ("mp4", "mkv", "mov" for libx264; "avi", "mp4", "mkv"
            for mpeg4).
        overwrite: allow a non-empty ``out_dir``; existing clips of the written classes
            (``<class>_NNN.*``) are deleted first, other files are left alone.
        kind: ``"appearance"`` (classes differ by object shape and texture) or ``"motion"`` (classes
            differ only in the order of frames: every motion class is another one played backwards,
            with objects, colours, backgrounds and positions drawn from the same distribution). Motion
            clips need at least 2 frames.

    Raises:
        SampleDataError (a ``ValueError``): invalid arguments.
        SampleDataExistsError (a ``FileExistsError``): ``out_dir`` is not empty and not ``overwrite``.
    """
    if kind not in KINDS:
        raise SampleDataError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    names = _class_names(classes, kind)
    for label, val in (("per_class", per_class), ("fps", fps), ("seed", seed)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)):
            raise SampleDataError(f"{label} must be an integer, got {val!r}")
    per_class, fps, seed = int(per_class), int(fps), int(seed)
    if per_class < 1:
        raise SampleDataError(f"per_class must be at least 1, got {per_class}")
    if not 1 <= fps <= 240:
        raise SampleDataError(f"fps must be between 1 and 240, got {fps}")
    try:
        seconds = float(seconds)
        imbalance = float(imbalance)
    except (TypeError, ValueError):
        raise SampleDataError(
            f"seconds and imbalance must be numbers, got {seconds!r}, {imbalance!r}"
        ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise SampleDataError(f"seconds must be a positive number, got {seconds}")
    n_frames = round(seconds * fps)
    if n_frames < 1:
        raise SampleDataError(f"seconds={seconds} at fps={fps} gives no frames; use a longer duration")
    if kind == "motion" and n_frames < 2:
        raise SampleDataError(
            f"motion clips need at least 2 frames; seconds={seconds} at fps={fps} gives {n_frames}"
        )
    if n_frames > _MAX_FRAMES:
        raise SampleDataError(f"{n_frames} frames per clip is too many (max {_MAX_FRAMES}); shorten seconds")
    try:
        width, height = (int(s) for s in size)
    except (TypeError, ValueError):
        raise SampleDataError(f"size must be a (width, height) pair of integers, got {size!r}") from None
    if min(width, height) < _MIN_SIZE or max(width, height) > _MAX_SIZE:
        raise SampleDataError(
            f"size must be between {_MIN_SIZE} and {_MAX_SIZE} px per side, got {width}x{height}"
        )
    width, height = width - width % 2, height - height % 2  # yuv420p: even sizes only
    if not math.isfinite(imbalance) or imbalance < 1.0:
        raise SampleDataError(f"imbalance must be >= 1 (1 = balanced), got {imbalance}")
    if per_class / imbalance < 0.5:
        raise SampleDataError(
            f"imbalance={imbalance:g} with per_class={per_class} leaves the smallest class with no clips; "
            f"use per_class >= {math.ceil(imbalance / 2)} or a smaller imbalance"
        )
    if codec not in _CODECS:
        raise SampleDataError(f"codec must be one of {sorted(_CODECS)}, got {codec!r}")
    default_ext, allowed = _CODECS[codec]
    ext = default_ext if container is None else "." + str(container).lower().lstrip(".")
    if ext not in allowed:
        raise SampleDataError(f"codec {codec} can be written to {', '.join(allowed)}, not {ext}")
    if progress is not None and not callable(progress):
        raise SampleDataError("progress must be a callable taking (done, total)")

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SampleDataError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SampleDataExistsError(f"{out} is not empty; choose an empty folder or pass overwrite")

    designs = _assign_designs(names) if kind == "appearance" else names
    counts = _class_counts(len(names), per_class, imbalance)
    total = sum(counts)
    files: list[Path] = []
    done = 0
    for name, design, count in zip(names, designs, counts):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if overwrite:
            stale = re.compile(rf"^\.?{re.escape(name)}_\d{{3,}}(\.[A-Za-z0-9_]+\.tmp|\.tmp)?\.[A-Za-z0-9]+$")
            for p in folder.iterdir():
                if p.is_file() and stale.match(p.name):
                    p.unlink()
        for index in range(count):
            if kind == "motion":
                motion, backwards = MOTION_CLASSES[name]
                clip = _MotionClip(motion, backwards, _motion_key(seed, name, index), width, height, n_frames)
            else:
                ss = np.random.SeedSequence([_SEED_SALT, seed % (1 << 64), _DESIGN_IDS[design], index])
                clip = _Clip(design, np.random.default_rng(ss), width, height, fps)
            path = folder / f"{name}_{index:03d}{ext}"
            _write_clip(path, clip, n_frames, fps, codec)
            files.append(path)
            done += 1
            if progress is not None:
                progress(done, total)
    return SampleDatasetInfo(
        out_dir=out,
        classes=names,
        counts=dict(zip(names, counts)),
        files=files,
        size=(width, height),
        fps=fps,
        frames=n_frames,
        codec=codec,
        kind=kind,
    )
