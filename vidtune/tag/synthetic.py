"""Long test videos with known ground truth: pieces of other videos joined by cuts, dissolves and fades.

Used by the shot-detection tests and ``bench/tagging.py``: every label span and every transition
(the first blended frame and the first clean frame after it) is known exactly, in frames and
seconds. Frames are streamed piece by piece, so a long composition never sits in memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidtune.io import open_video
from vidtune.utils import atomic_path

TRANSITIONS = ("cut", "dissolve", "fade")


@dataclass(frozen=True)
class Piece:
    """One stretch of the composed video.

    Attributes:
        path: source video (resampled to the composition's fps and stretched to its size).
        label: ground-truth label, or None for background (no segment expected).
        seconds: how much of the source to use from ``offset`` (default: to its end).
        transition: how this piece begins after the previous one: ``cut``, ``dissolve`` (the last
            ``frames`` of the previous piece blend into this one's first ``frames``) or ``fade``
            (the previous piece fades to black over ``frames``, this one fades in over ``frames``).
        frames: length of the dissolve or of each half of the fade.
        offset: start time in the source (s).
    """

    path: Path
    label: str | None = None
    seconds: float | None = None
    transition: str = "cut"
    frames: int = 0
    offset: float = 0.0


def _source_frames(piece: Piece, fps: float, size: tuple[int, int]):
    """Yield the piece's frames resampled to ``fps`` and resized to ``size`` (w, h), in chunks."""
    w, h = size
    with open_video(piece.path) as reader:
        dur = reader.info.duration - piece.offset
        seconds = dur if piece.seconds is None else min(piece.seconds, dur)
        n = max(1, int(math.floor(seconds * fps + 1e-6)))
        times = piece.offset + (np.arange(n) + 0.5) / fps
        for lo in range(0, n, 64):
            for arr in reader.frames_at(times[lo : lo + 64]):
                f = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
                yield f.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()


def _n_frames(piece: Piece, fps: float) -> int:
    with open_video(piece.path) as reader:
        dur = reader.info.duration - piece.offset
    seconds = dur if piece.seconds is None else min(piece.seconds, dur)
    return max(1, int(math.floor(seconds * fps + 1e-6)))


def compose_video(out, pieces: Sequence[Piece], fps: int = 25, size: tuple[int, int] = (320, 240),
                  crf: int = 20, gop: int | None = None) -> dict:
    """Write the pieces one after another to ``out`` (H.264) and return the ground truth.

    Returns ``{"duration", "fps", "frames", "segments": [{"start", "end", "label"}],
    "transitions": [{"type": "cut"|"dissolve"|"fade", "start", "end", "first", "last"}],
    "boundaries": [seconds]}``. A transition's ``first`` is its first changed frame and ``last`` the
    first clean frame of the next piece (equal for a cut); ``start``/``end`` are their times. Label
    boundaries sit at the middle of a dissolve and where the fade-in begins.
    """
    if not pieces:
        raise ValueError("compose_video needs at least one piece")
    w, h = size[0] - size[0] % 2, size[1] - size[1] % 2
    counts = [_n_frames(p, fps) for p in pieces]
    for i, p in enumerate(pieces):
        if p.transition not in TRANSITIONS:
            raise ValueError(f"transition must be one of {TRANSITIONS}, got {p.transition!r}")
        into = p.frames if i and p.transition != "cut" else 0
        nxt = pieces[i + 1] if i + 1 < len(pieces) else None
        out_of = nxt.frames if nxt is not None and nxt.transition != "cut" else 0
        if (into or out_of) and min(into, out_of) < 0 or counts[i] < into + out_of + 1:
            raise ValueError(f"piece {i} ({counts[i]} frames) is too short for its transitions "
                             f"({into} + {out_of} frames)")
        if i and p.transition != "cut" and p.frames < 1:
            raise ValueError(f"piece {i}: a {p.transition} needs frames >= 1")
    truth_trans: list[dict] = []
    bounds: list[float] = [0.0]
    written = 0
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(out) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": str(gop or 2 * fps)}

        def put(arr: np.ndarray) -> None:
            nonlocal written
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr, dtype=np.uint8), format="rgb24")
            frame.pts = written
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
            written += 1

        tail: list[np.ndarray] = []  # the previous piece's last frames, held back for a dissolve
        for i, p in enumerate(pieces):
            nxt = pieces[i + 1] if i + 1 < len(pieces) else None
            hold = nxt.frames if nxt is not None and nxt.transition == "dissolve" else 0
            fade_out = nxt.frames if nxt is not None and nxt.transition == "fade" else 0
            n = counts[i]
            if i and p.transition == "dissolve":
                truth_trans.append({"type": "dissolve", "first": written, "last": written + p.frames})
                bounds.append((written + p.frames / 2) / fps)
            elif i and p.transition == "fade":
                truth_trans.append({"type": "fade", "first": written - p.frames, "last": written + p.frames})
                bounds.append(written / fps)
            elif i:
                truth_trans.append({"type": "cut", "first": written, "last": written})
                bounds.append(written / fps)
            for k, arr in enumerate(_source_frames(p, fps, (w, h))):
                if k >= n:
                    break
                arr = arr.astype(np.float32)
                if i and p.transition == "dissolve" and k < p.frames:
                    a = (k + 1) / (p.frames + 1)
                    arr = (1 - a) * tail[k] + a * arr
                elif i and p.transition == "fade" and k < p.frames:
                    arr = arr * ((k + 1) / (p.frames + 1))
                if fade_out and k >= n - fade_out:
                    arr = arr * ((n - k) / (fade_out + 1))
                if hold and k >= n - hold:
                    if k == n - hold:
                        tail = []
                    tail.append(arr)
                    continue
                put(np.clip(arr + 0.5, 0, 255))
        container.mux(stream.encode(None))
    bounds.append(written / fps)
    segments = [{"start": round(bounds[i], 4), "end": round(bounds[i + 1], 4), "label": p.label}
                for i, p in enumerate(pieces) if p.label is not None]
    for t in truth_trans:
        t["start"], t["end"] = round(t["first"] / fps, 4), round(t["last"] / fps, 4)
    return {"duration": written / fps, "fps": fps, "frames": written, "segments": segments,
            "transitions": truth_trans, "boundaries": [round(b, 4) for b in bounds[1:-1]]}
