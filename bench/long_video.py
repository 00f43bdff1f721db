"""Long videos: memory and time to first frame when probing and sampling a 1-hour video vs a short one.

Each measurement runs in a fresh Python process so that its peak RSS (``ru_maxrss``) belongs to that
file alone; the table shows the growth over the process's RSS after importing vidtune. The videos
are generated once (64x48 H.264 with a moving pattern at 4 fps, 2 s GOP: about 15 s to write the hour)
and cached in bench/.cache.

    python bench/long_video.py [--durations 10,600,3600] [--fps 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE  # noqa: E402


def make_video(seconds: int, fps: int) -> Path:
    """A ``seconds``-long 64x48 H.264 MP4 whose picture changes every frame (not a still, so no shortcut)."""
    out = CACHE / f"long_{seconds}s_{fps}fps_64x48.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    yy, xx = np.mgrid[0:48, 0:64]
    with av.open(str(tmp), "w") as dst:
        s = dst.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "g": str(2 * fps)})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(seconds * fps):
            v = ((xx + 3 * i) % 64 * 3 + (yy + i // 7) % 48 * 2) % 256
            img = np.stack([v, (v + 85) % 256, (255 - v)], axis=-1).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            dst.mux(s.encode(f))
        dst.mux(s.encode(None))
    tmp.replace(out)
    return out


_CHILD = r"""
import json, resource, sys, time
t_import = time.perf_counter()
from vidtune.io import open_video, probe
from vidtune.data.sampling import segment_centres
import numpy as np
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
path = sys.argv[1]
t0 = time.perf_counter()
with open_video(path) as r:
    first = r.frames_at([0.0], short_side=32)
    t_first = time.perf_counter() - t0
    info = r.info
    ts = segment_centres(0.0, info.duration, 8)  # TSN evaluation sampling over the whole video
    t1 = time.perf_counter()
    clip = r.frames_at(ts, short_side=32)
    t_sample = time.perf_counter() - t1
t2 = time.perf_counter()
scanned = probe(path, scan_packets=True)
t_probe = time.perf_counter() - t2
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"duration": info.duration, "frames": scanned.frame_count, "first_s": t_first,
                  "sample_s": t_sample, "probe_scan_s": t_probe, "base_kb": base, "peak_kb": peak,
                  "shape": list(clip.shape)}))
"""


def measure(path: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--durations", default="10,600,3600", help="seconds, comma-separated")
    ap.add_argument("--fps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="runs per video (best time, largest RSS kept)")
    args = ap.parse_args()
    durations = [int(x) for x in args.durations.split(",")]
    rows = []
    for d in durations:
        t0 = time.perf_counter()
        path = make_video(d, args.fps)
        made = time.perf_counter() - t0
        runs = [measure(path) for _ in range(args.repeats)]
        best = {k: min(r[k] for r in runs) for k in ("first_s", "sample_s", "probe_scan_s")}
        growth = max(r["peak_kb"] - r["base_kb"] for r in runs) / 1024
        peak = max(r["peak_kb"] for r in runs) / 1024
        rows.append({"seconds": d, "frames": runs[0]["frames"], "size_mb": path.stat().st_size / 2**20,
                     "growth_mb": growth, "peak_mb": peak, **best, "made_s": made})
    print(f"{'video':>10} {'frames':>7} {'file MB':>8} {'peak RSS MB':>12} {'RSS growth MB':>14} "
          f"{'first frame ms':>15} {'8-frame sample ms':>18} {'probe+scan ms':>14}")
    for r in rows:
        print(f"{r['seconds']:>9}s {r['frames']:>7} {r['size_mb']:>8.2f} {r['peak_mb']:>12.1f} {r['growth_mb']:>14.1f} "
              f"{1000 * r['first_s']:>15.1f} {1000 * r['sample_s']:>18.1f} {1000 * r['probe_scan_s']:>14.1f}")
    short, long = rows[0], rows[-1]
    print(f"\n{long['seconds']} s vs {short['seconds']} s ({long['seconds'] / short['seconds']:.0f}x longer): "
          f"peak RSS {long['peak_mb']:.1f} vs {short['peak_mb']:.1f} MB "
          f"(ratio {long['peak_mb'] / short['peak_mb']:.2f}); first frame "
          f"{1000 * long['first_s']:.1f} vs {1000 * short['first_s']:.1f} ms")


if __name__ == "__main__":
    main()
