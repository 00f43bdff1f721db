"""Video corruptions at five severities, for robustness evaluation and robust training.

Each corruption is a :class:`vidtune.runs.features.FrameOp`: it gets the decoded uint8 frames
``(T, H, W, 3)`` of one clip, their times in seconds and a random generator, and returns frames of the
same shape. Temporal corruptions (``frame_drop``, ``frame_rate``) instead change *which* frames are
decoded through ``retime(ts, duration, rng)``. Everything is deterministic given the generator and
the op's ``seed``.

Severities follow ImageNet-C / Mini Kinetics-C: 1 is mild, 5 is severe, and the same random draw
(noise field, shake path, lost packets) is scaled by the severity, so the distortion grows
monotonically with it. Sizes (blur radii, shake amplitude) are given for 224-pixel frames and scale
with the frame's short side, so a severity means the same at any resolution.

Usage::

    op = get_corruption("motion_blur", severity=3)
    run_clips(model, config, items, device=dev, frame_op=op)       # evaluation
    RandomCorruption(seed=0, severities=(1, 2, 3))                 # training augmentation
    corrupt(frames, "gaussian_noise", 2, seed=0)                   # one array, no dataset
"""

from __future__ import annotations

import copy
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from vidtune.errors import ConfigError, VidtuneError

log = logging.getLogger(__name__)

SEVERITIES = (1, 2, 3, 4, 5)
_REF = 224.0  # frame short side the pixel sizes below are given for
_VERSION = 1  # bump when a corruption's output changes: it is part of every cache_id


def _gen(seed: int, rng: np.random.Generator | None) -> np.random.Generator:
    """A generator for one application, from the op's seed and (without consuming it) ``rng``.

    Peeking instead of drawing lets ``retime`` and ``__call__`` of one clip see the same stream.
    """
    words = [0, 0] if rng is None else copy.deepcopy(rng).integers(0, 2**32, 2).tolist()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *words])


def _as_times(times, n: int) -> np.ndarray:
    if times is None:
        return np.arange(n, dtype=np.float64) / 25.0
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"got {t.shape[0]} times for {n} frames")
    return t


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> uint8, rounded."""
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _scale(frames: np.ndarray) -> float:
    return min(frames.shape[1], frames.shape[2]) / _REF


def _smooth_path(rng: np.random.Generator, times: np.ndarray, lo_hz: float, hi_hz: float,
                 parts: int = 3) -> np.ndarray:
    """A smooth random signal of time in [-1, 1]: a sum of ``parts`` sinusoids, random phase.

    The first (slowest) component carries most of the weight so that even a 2 s clip sees a swing.
    """
    freqs = np.sort(rng.uniform(lo_hz, hi_hz, parts))
    phases = rng.uniform(0, 2 * np.pi, parts)
    weights = np.array([1.0] + [0.5 ** (k + 1) for k in range(parts - 1)])
    weights /= weights.sum()
    return (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * times[None, :] + phases[:, None])).sum(0)


# -- convolution (FFT, any kernel size) ------------------------------------------------------------
def _convolve(frames: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Blur uint8 frames ``(T, H, W, 3)`` with a 2-D ``kernel`` (odd size, sums to 1) -> float [0, 1]."""
    import torch
    import torch.nn.functional as F

    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, H, W)
    h, w = x.shape[-2:]
    x = F.pad(x, (rx, rx, ry, ry), mode="replicate")  # edges extend, as a lens sees past the frame
    ph, pw = x.shape[-2:]
    k = torch.zeros(ph, pw)
    k[:kh, :kw] = torch.from_numpy(kernel.astype(np.float32))
    k = torch.roll(k, shifts=(-ry, -rx), dims=(0, 1))  # kernel centre at (0, 0)
    y = torch.fft.irfft2(torch.fft.rfft2(x) * torch.fft.rfft2(k), s=(ph, pw))
    return y[..., ry : ry + h, rx : rx + w].permute(0, 2, 3, 1).numpy()


def disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """Anti-aliased disk of ``radius`` pixels (a defocused lens' point spread), sums to 1."""
    r = max(radius, 0.5)
    size = 2 * math.ceil(r) + 1
    c = size // 2
    sub = (np.arange(size * supersample) + 0.5) / supersample - 0.5 - c  # sub-pixel centres
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = (xx**2 + yy**2 <= r * r).astype(np.float64)
    k = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
    return k / k.sum()


def line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A straight motion streak of ``length`` pixels at ``angle_deg`` (bilinear splats), sums to 1."""
    length = max(length, 1.0)
    half = length / 2
    size = 2 * math.ceil(half) + 3
    c = size // 2
    k = np.zeros((size, size))
    a = math.radians(angle_deg)
    for s in np.linspace(-half, half, max(2, int(length * 4))):
        x, y = c + s * math.cos(a), c - s * math.sin(a)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        k[y0, x0] += (1 - fx) * (1 - fy)
        k[y0, x0 + 1] += fx * (1 - fy)
        k[y0 + 1, x0] += (1 - fx) * fy
        k[y0 + 1, x0 + 1] += fx * fy
    return k / k.sum()


# -- the corruption classes --------------------------------------------------------------------------
@dataclass(frozen=True)
class Corruption:
    """Base class: one corruption at one severity (1-5), seeded.

    ``__call__(frames, times, rng)`` is the :class:`~vidtune.runs.features.FrameOp` interface;
    ``apply(frames, times=None)`` runs it with only the op's own seed.
    """

    severity: int = 3
    seed: int = 0
    name: str = field(default="", init=False)
    kind: str = field(default="", init=False)  # noise | blur | geometric | digital | photometric | temporal

    def __post_init__(self):
        if isinstance(self.severity, bool) or int(self.severity) not in SEVERITIES or self.severity != int(self.severity):
            raise VidtuneError(f"{self.name}: severity must be one of 1, 2, 3, 4, 5, got {self.severity!r}")

    @property
    def cache_id(self) -> str:
        return f"corruption/{self.name}/s{self.severity}/seed{self.seed}/v{_VERSION}"

    def level(self, table: Sequence):
        return table[int(self.severity) - 1]

    def __call__(self, frames: np.ndarray, times: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        frames = _check_frames(frames)
        if frames.shape[0] == 0:
            return frames
        return self._apply(frames, _as_times(times, frames.shape[0]), _gen(self.seed, rng))

    def apply(self, frames: np.ndarray, times=None) -> np.ndarray:
        return self(frames, times, None)

    def _apply(self, frames: np.ndarray, times: np.ndarray, g: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class GaussianNoise(Corruption):
    """Additive sensor noise, independent per pixel and frame (ImageNet-C's sigmas, on [0, 1])."""

    name: str = field(default="gaussian_noise", init=False)
    kind: str = field(default="noise", init=False)
    SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)

    def _apply(self, frames, times, g):
        x = frames.astype(np.float32) / 255.0
        return _to_uint8(x + self.level(self.SIGMA) * g.standard_normal(frames.shape, dtype=np.float32))


@dataclass(frozen=True)
class ShotNoise(Corruption):
    """Photon (Poisson) noise: ``Poisson(x * photons) / photons``, fewer photons at higher severity."""

    name: str = field(default="shot_noise", init=False)
    kind: str = field(default="noise", init=False)
    PHOTONS = (60.0, 25.0, 12.0, 5.0, 3.0)

    def _apply(self, frames, times, g):
        lam = self.level(self.PHOTONS)
        x = frames.astype(np.float64) / 255.0
        return _to_uint8(g.poisson(x * lam).astype(np.float32) / lam)


@dataclass(frozen=True)
class DefocusBlur(Corruption):
    """Out-of-focus lens: convolution with a disk (radius in pixels of a 224-pixel frame)."""

    name: str = field(default="defocus_blur", init=False)
    kind: str = field(default="blur", init=False)
    RADIUS = (2.0, 3.0, 4.5, 6.5, 9.0)

    def _apply(self, frames, times, g):
        return _to_uint8(_convolve(frames, disk_kernel(self.level(self.RADIUS) * _scale(frames))))


@dataclass(frozen=True)
class MotionBlur(Corruption):
    """Camera motion during the exposure: a straight streak at a random angle per clip."""

    name: str = field(default="motion_blur", init=False)
    kind: str = field(default="blur", init=False)
    LENGTH = (5.0, 9.0, 14.0, 20.0, 28.0)

    def _apply(self, frames, times, g):
        angle = float(g.uniform(0, 180))
        return _to_uint8(_convolve(frames, line_kernel(self.level(self.LENGTH) * _scale(frames), angle)))


@dataclass(frozen=True)
class CameraShake(Corruption):
    """Hand-held shake: per-frame translation and rotation following a smooth random path in time.

    Translation (fraction of the short side) and rotation (degrees) are sums of slow sinusoids of
    the frame *times* (0.5-4 Hz), so neighbouring frames move together, as with a real camera.
    Uncovered borders are filled by reflection.
    """

    name: str = field(default="camera_shake", init=False)
    kind: str = field(default="geometric", init=False)
    SHIFT = (0.02, 0.04, 0.07, 0.10, 0.14)  # fraction of the short side
    ROTATE = (1.0, 2.5, 4.0, 6.0, 9.0)  # degrees

    def _apply(self, frames, times, g):
        import torch
        import torch.nn.functional as F

        t, h, w = frames.shape[:3]
        short = min(h, w)
        dx = _smooth_path(g, times, 0.5, 4.0) * self.level(self.SHIFT) * short
        dy = _smooth_path(g, times, 0.5, 4.0) * self.level(self.SHIFT) * short
        rot = np.radians(_smooth_path(g, times, 0.5, 4.0) * self.level(self.ROTATE))
        theta = np.zeros((t, 2, 3), dtype=np.float32)
        for i in range(t):
            c, s = math.cos(rot[i]), math.sin(rot[i])
            m = np.array([[c, s], [-s, c]])  # output pixel -> input pixel: inverse rotation
            d = np.diag([w / 2, h / 2])
            d_inv = np.diag([2 / w, 2 / h])
            theta[i, :, :2] = d_inv @ m @ d
            theta[i, :, 2] = -(d_inv @ m @ np.array([dx[i], dy[i]]))
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
        grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
        y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return y.permute(0, 2, 3, 1).round_().clamp_(0, 255).to(torch.uint8).numpy()


@dataclass(frozen=True)
class Compression(Corruption):
    """Real lossy re-encoding: the clip's frames go through an in-memory H.264 (or MPEG-4 Part 2)
    MP4 and are decoded back, with 4:2:0 chroma, blocking, ringing and smeared detail included.

    Severity sets the encoder's quality (x264 CRF 30, 36, 41, 46, 51; MPEG-4 quantiser 6-31), so the
    damage is the same for any resolution or sampling density. On 256-pixel frames of a real
    street video (bikes.mp4) CRF 51 leaves about 0.07 bits per pixel and 27 dB PSNR, against
    about 1 bit per pixel at the usual CRF 23.
    """

    codec: str = "libx264"  # or "mpeg4"
    name: str = field(default="compression", init=False)
    kind: str = field(default="digital", init=False)
    CRF = (30, 36, 41, 46, 51)
    MPEG4_Q = (6, 10, 15, 22, 31)

    @property
    def cache_id(self) -> str:
        return f"{super().cache_id}/{self.codec}"

    def _apply(self, frames, times, g):
        q = self.level(self.MPEG4_Q if self.codec == "mpeg4" else self.CRF)
        return reencode(frames, times, quality=q, codec=self.codec)


@dataclass(frozen=True)
class Brightness(Corruption):
    """Brighter picture: ``x + c`` on [0, 1] (ImageNet-C's levels), clipping highlights."""

    name: str = field(default="brightness", init=False)
    kind: str = field(default="photometric", init=False)
    SHIFT = (0.1, 0.2, 0.3, 0.4, 0.5)

    def _apply(self, frames, times, g):
        return _to_uint8(frames.astype(np.float32) / 255.0 + self.level(self.SHIFT))


@dataclass(frozen=True)
class Contrast(Corruption):
    """Washed-out picture: each frame pulled towards its mean, ``(x - m) * c + m``."""

    name: str = field(default="contrast", init=False)
    kind: str = field(default="photometric", init=False)
    FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)

    def _apply(self, frames, times, g):
        x = frames.astype(np.float32) / 255.0
        m = x.mean(axis=(1, 2, 3), keepdims=True)
        return _to_uint8((x - m) * self.level(self.FACTOR) + m)


@dataclass(frozen=True)
class Exposure(Corruption):
    """Auto-exposure swinging over time (high dynamic range scenes): the gain in linear light
    follows a smooth random path of ``±stops``, so frames alternate between blown-out highlights
    and crushed shadows.
    """

    name: str = field(default="exposure", init=False)
    kind: str = field(default="photometric", init=False)
    STOPS = (0.75, 1.25, 1.75, 2.5, 3.5)

    def _apply(self, frames, times, g):
        ev = _smooth_path(g, times, 0.25, 1.5) * self.level(self.STOPS)  # (T,) in stops
        lin = (frames.astype(np.float32) / 255.0) ** 2.2
        lin *= (2.0 ** ev).astype(np.float32)[:, None, None, None]
        return _to_uint8(np.clip(lin, 0, 1) ** (1 / 2.2))


@dataclass(frozen=True)
class FrameDrop(Corruption):
    """Lost frames, as on a congested stream: the timeline is cut into packets of ``PACKET_S``
    seconds, each lost with a probability, and a lost packet freezes on the last frame shown
    before it. A :meth:`retime` op: pixels are untouched.
    """

    name: str = field(default="frame_drop", init=False)
    kind: str = field(default="temporal", init=False)
    LOSS = (0.1, 0.2, 0.35, 0.5, 0.7)
    PACKET_S = 0.2

    def retime(self, ts: np.ndarray, duration: float, rng: np.random.Generator | None = None) -> np.ndarray:
        ts = np.asarray(ts, dtype=np.float64)
        if ts.size == 0:
            return ts
        g = _gen(self.seed, rng)
        end = max(float(duration), float(ts.max()), 0.0) + self.PACKET_S
        phase = float(g.uniform(0, self.PACKET_S))
        n = int(math.ceil((end + phase) / self.PACKET_S)) + 1
        lost = g.random(n) < self.level(self.LOSS)  # same draws for every severity: monotone
        starts = np.arange(n) * self.PACKET_S - phase
        frozen = starts.copy()  # time each packet shows: its own start, or where its lost run began
        run = None
        for k in range(n):
            if lost[k]:
                run = starts[k] if run is None else run
                frozen[k] = run
            else:
                run = None
        k = np.clip(((ts + phase) // self.PACKET_S).astype(int), 0, n - 1)
        out = np.minimum(np.where(lost[k], np.maximum(frozen[k] - 1e-3, 0.0), ts), ts)  # never from the future
        order = np.argsort(ts, kind="stable")
        out[order] = np.maximum.accumulate(out[order])  # and a stream never runs backwards
        return out

    def _apply(self, frames, times, g):
        return frames


@dataclass(frozen=True)
class FrameRate(Corruption):
    """Frame-rate change: playback speed drifts around 1 (a smooth random time warp anchored at the
    clip's first frame), and the source is held at a low frame rate (frames repeat). A
    :meth:`retime` op: pixels are untouched.
    """

    name: str = field(default="frame_rate", init=False)
    kind: str = field(default="temporal", init=False)
    FPS = (12.0, 8.0, 5.0, 3.0, 2.0)  # frame rate the source is reduced to
    DRIFT = (0.1, 0.2, 0.3, 0.45, 0.6)  # speed swings between 1 - d and 1 + d

    def retime(self, ts: np.ndarray, duration: float, rng: np.random.Generator | None = None) -> np.ndarray:
        ts = np.asarray(ts, dtype=np.float64)
        if ts.size == 0:
            return ts
        g = _gen(self.seed, rng)
        f = float(g.uniform(0.2, 0.6))
        phi = float(g.uniform(0, 2 * np.pi))
        d = self.level(self.DRIFT)
        t0 = float(ts.min())
        u = ts - t0
        # speed(u) = 1 + d * sin(2 pi f u + phi); integrate for the warped time
        warped = t0 + u - d * (np.cos(2 * np.pi * f * u + phi) - math.cos(phi)) / (2 * np.pi * f)
        fps = self.level(self.FPS)
        held = np.floor(warped * fps + 1e-9) / fps
        hi = max(float(duration), 0.0)
        return np.clip(held, 0.0, np.nextafter(hi, 0.0) if hi > 0 else 0.0)

    def _apply(self, frames, times, g):
        return frames


CORRUPTIONS: dict[str, type[Corruption]] = {
    cls().name: cls
    for cls in (GaussianNoise, ShotNoise, DefocusBlur, MotionBlur, CameraShake, Compression,
                Brightness, Contrast, Exposure, FrameDrop, FrameRate)
}
TEMPORAL = tuple(n for n, c in CORRUPTIONS.items() if hasattr(c, "retime"))


def corruption_names() -> list[str]:
    return list(CORRUPTIONS)


def _unknown(name: str) -> VidtuneError:
    import difflib

    close = difflib.get_close_matches(name, CORRUPTIONS, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return VidtuneError(f"unknown corruption {name!r}.{hint} Available: {', '.join(CORRUPTIONS)}")


def get_corruption(name: str, severity: int = 3, seed: int = 0, **kwargs) -> Corruption:
    """The corruption ``name`` at ``severity`` (1-5); raises VidtuneError listing the valid names."""
    cls = CORRUPTIONS.get(name)
    if cls is None:
        raise _unknown(name)
    return cls(severity=severity, seed=seed, **kwargs)


def corrupt(frames: np.ndarray, name: str, severity: int = 3, seed: int = 0, times=None,
            duration: float | None = None) -> np.ndarray:
    """Apply a *pixel* corruption to an array of frames (temporal ones need a decoder: use a FrameOp)."""
    op = get_corruption(name, severity, seed)
    if hasattr(op, "retime"):
        raise VidtuneError(f"{name} changes which frames are decoded; pass it as frame_op to run_clips "
                           "or ClipDataset instead of applying it to decoded frames")
    return op(frames, times, None)


def parse_corruptions(text: str | None) -> list[str]:
    """``"a,b"`` -> validated names; None or ``all`` -> every corruption."""
    if text is None or text.strip().lower() in ("", "all"):
        return list(CORRUPTIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in CORRUPTIONS:
            raise _unknown(n)
    return list(dict.fromkeys(names))


def parse_severities(text: str | None) -> list[int]:
    """``"1,3,5"`` or ``"1-5"`` -> sorted unique severities in 1..5."""
    if text is None or not text.strip():
        return list(SEVERITIES)
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.update(range(lo, hi + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise ConfigError("severities", f"must look like 1,2,3 or 1-5, got {text!r}") from None
    bad = sorted(s for s in out if s not in SEVERITIES)
    if bad or not out:
        raise ConfigError("severities", f"must be between 1 and 5, got {text!r}")
    return sorted(out)


# -- random corruption for training ----------------------------------------------------------------
@dataclass(frozen=True)
class RandomCorruption:
    """Training augmentation: per clip, with probability ``p``, one corruption drawn uniformly from
    ``names`` at a severity drawn uniformly from ``severities``; otherwise the clip stays clean.

    A :class:`~vidtune.runs.features.FrameOp`. The choice depends only on the ``rng`` handed in
    (and ``seed``), so ``retime`` and ``__call__`` of one clip agree, and the same clip, epoch and
    seed give the same corruption in any worker process.
    """

    seed: int = 0
    severities: tuple[int, ...] = (1, 2, 3)
    names: tuple[str, ...] | None = None  # None: every corruption
    p: float = 1.0

    def __post_init__(self):
        names = tuple(self.names) if self.names is not None else tuple(CORRUPTIONS)
        for n in names:
            if n not in CORRUPTIONS:
                raise _unknown(n)
        if not names:
            raise VidtuneError("RandomCorruption needs at least one corruption name")
        sev = tuple(int(s) for s in self.severities)
        if not sev or any(s not in SEVERITIES for s in sev):
            raise VidtuneError(f"severities must be a non-empty subset of 1..5, got {self.severities!r}")
        if not 0.0 <= self.p <= 1.0:
            raise VidtuneError(f"p must be in [0, 1], got {self.p}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "severities", sev)

    @property
    def cache_id(self) -> str:
        return (f"random-corruption/{'+'.join(self.names)}/s{'+'.join(map(str, self.severities))}"
                f"/p{self.p}/seed{self.seed}/v{_VERSION}")

    def choose(self, rng: np.random.Generator | None) -> Corruption | None:
        """The corruption this ``rng`` selects (None: clean), without consuming ``rng``."""
        g = _gen(self.seed, rng)
        if g.random() >= self.p:
            return None
        name = self.names[int(g.integers(len(self.names)))]
        severity = self.severities[int(g.integers(len(self.severities)))]
        return CORRUPTIONS[name](severity=severity, seed=int(g.integers(2**31)))

    def retime(self, ts: np.ndarray, duration: float, rng: np.random.Generator | None = None) -> np.ndarray:
        op = self.choose(rng)
        return op.retime(ts, duration, rng) if op is not None and hasattr(op, "retime") else ts

    def __call__(self, frames: np.ndarray, times: np.ndarray | None = None,
                 rng: np.random.Generator | None = None) -> np.ndarray:
        op = self.choose(rng)
        return frames if op is None else op(frames, times, rng)


# -- re-encoding -----------------------------------------------------------------------------------
def reencode(frames: np.ndarray, times=None, quality: int = 40, codec: str = "libx264") -> np.ndarray:
    """Encode ``frames`` to an in-memory MP4 and decode them back (same shape, uint8).

    ``quality``: x264's CRF (0-51) or MPEG-4's fixed quantiser (2-31); higher is worse.
    """
    import av

    frames = _check_frames(frames)
    n, h, w = frames.shape[:3]
    times = _as_times(times, n)
    # 4:2:0 needs even sizes: pad by edge replication, crop after decoding
    ph, pw = h + (h % 2), w + (w % 2)
    if (ph, pw) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    steps = np.diff(np.sort(times))
    steps = steps[steps > 0]
    fps = float(np.clip(1.0 / np.median(steps), 1.0, 120.0)) if steps.size else 25.0
    rate = Fraction(fps).limit_denominator(1000)
    if codec in ("libx264", "h264"):
        # one thread and no lookahead keep the output bit-exact from run to run
        options = {"preset": "veryfast", "threads": "1", "rc-lookahead": "0", "crf": str(int(quality))}
    elif codec == "mpeg4":
        options = {"threads": "1", "qmin": str(int(quality)), "qmax": str(int(quality))}
    else:
        raise VidtuneError(f"compression codec must be libx264 or mpeg4, got {codec!r}")
    buf = io.BytesIO()
    try:
        with av.open(buf, "w", format="mp4") as out:
            stream = out.add_stream(codec, rate=rate, options=options)
            stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
            if codec == "mpeg4":
                stream.codec_context.bit_rate = 10**9  # the quantiser alone decides
            for i, arr in enumerate(frames):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                vf.pts = i
                vf.time_base = Fraction(1) / rate
                out.mux(stream.encode(vf))
            out.mux(stream.encode(None))
        buf.seek(0)
        with av.open(buf, "r", format="mp4") as inp:
            decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    except av.error.FFmpegError as exc:  # a broken encoder build is an environment problem
        raise VidtuneError(f"re-encoding with {codec} failed ({exc}); is PyAV's FFmpeg complete?") from None
    if len(decoded) != n:
        raise VidtuneError(f"re-encoding returned {len(decoded)} frames for {n}")
    return np.ascontiguousarray(np.stack(decoded)[:, :h, :w])
