"""Sampling 8 frames from a long real video: vidtune's seeking decoder vs decoding every frame.

Both sides decode with PyAV (same FFmpeg, same threads) and return the same 8 frames resized to a
256-px short side; the baseline decodes the whole stream and keeps the frames at the sampled times.

    python bench/decode.py [--seconds 80] [--gop 250] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, long_real_video  # noqa: E402

from vidtune.data.sampling import segment_centres  # noqa: E402
from vidtune.io import open_video  # noqa: E402


def seeking(path, ts, short):
    with open_video(path) as r:
        return r.frames_at(ts, short_side=short)


def full_decode(path, ts, short):
    """The naive way: decode every frame in order, keep the one shown at each sampled time."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        tb = float(s.time_base)
        targets = list(ts)
        prev = None
        start = None
        for frame in c.decode(s):
            if start is None:
                start = frame.pts
            t = (frame.pts - start) * tb
            while targets and t > targets[0] and prev is not None:
                out.append(prev)
                targets.pop(0)
            prev = frame
        out.extend([prev] * len(targets))
        h = short
        w = int(short * out[0].width / out[0].height)
        return np.stack([f.to_ndarray(width=w, height=h, format="rgb24", interpolation="BICUBIC") for f in out])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=80.0)
    ap.add_argument("--gop", type=int, default=250)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    path = long_real_video(args.seconds, args.gop)
    with open_video(path) as r:
        info = r.info
    ts = segment_centres(0.0, info.duration, args.frames)
    a, b = seeking(path, ts, 256), full_decode(path, ts, 256)
    same = np.array_equal(a, b)
    t_seek = best_of(lambda: seeking(path, ts, 256), args.repeats)
    t_full = best_of(lambda: full_decode(path, ts, 256), args.repeats)
    print(f"video: {path.name} ({info.width}x{info.height}, {info.duration:.0f} s, {info.frame_count} frames, "
          f"{info.keyframes} keyframes)")
    print(f"same {args.frames} frames from both methods: {same}")
    print(f"seeking decoder: {t_seek * 1000:8.1f} ms per clip")
    print(f"full decode    : {t_full * 1000:8.1f} ms per clip")
    print(f"seek/full-decode speed-up: {t_full / t_seek:.1f}x")
    if not same:
        raise SystemExit("frames differ between the two methods")


if __name__ == "__main__":
    main()
