"""Feature pass throughput: decode + crop + backbone (worker processes, prefetch) vs the backbone alone.

Both sides push the same frames through the same frozen EfficientNet-Lite0 (224 px); the backbone-alone
side gets them pre-decoded and pre-cropped in memory, and runs with whichever thread count is fastest
alone (tried: 1 and all cores). A ratio near 1 means decoding is hidden behind the network.

Pipelines measured, per engine (ONNX Runtime, OpenVINO):

* ``lean``: what ``vidtune predict`` runs once a run's engines are built (:mod:`vidtune.runs.lean`):
  forked decoding workers, numpy crop/normalise, the engine;
* ``features``: ``extract_features`` (train, embed, index, tag): a torch DataLoader feeding the engine.

TorchScript (``--runtime torch``) runs Lite0 at about half ONNX Runtime's speed (bench/runtime.py), so it
is left out here.

Each under the engine-thread settings of ``--threads`` (``auto``: vidtune's default; a number: that many
via ``$VIDTUNE_ENGINE_THREADS``). Data: ``--data sample`` (48 generated H.264 clips, 320x240, 4 s: short
GOPs, cheap to decode) and/or ``--data real`` (the 21 real videos of bench/sidebyside.py, long GOPs).
Also the serial decode cost per frame, which bounds what any schedule can reach on these cores.

    nice python bench/pipeline.py [--data sample,real] [--threads auto,1,2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import CACHE  # noqa: E402

FRAMES = 8


def sample_items():
    from vidtune.data.manifest import load_dataset
    from vidtune.data.sample import write_sample_dataset

    data = CACHE / "pipeline_48_320x240"
    if not data.exists():
        tmp = Path(tempfile.mkdtemp(dir=CACHE.mkdir(parents=True, exist_ok=True) or CACHE))
        write_sample_dataset(tmp, classes=4, per_class=12, seconds=4.0, fps=25, size=(320, 240), seed=0)
        tmp.rename(data)
    return load_dataset(data)


def real_items():
    from sidebyside import video_set

    from vidtune.data.manifest import VideoItem

    return [VideoItem(path=Path(p), label="") for p in video_set("21")[1]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="sample,real")
    ap.add_argument("--runtimes", default="onnxruntime,openvino")
    ap.add_argument("--threads", default="auto,2", help="engine thread settings to compare (auto = vidtune's)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best counts")
    args = ap.parse_args()

    import torch
    from sidebyside import make_run

    from vidtune.data.preprocess import normalise
    from vidtune.engines import cache
    from vidtune.engines.runtime import ENGINE_THREADS_ENV, engine_threads, using_runtime
    from vidtune.engines.sessions import EngineSession
    from vidtune.runs import lean
    from vidtune.runs.features import extract_features, sampling_for
    from vidtune.runs.store import load_run
    from vidtune.utils import default_workers

    tmp = Path(tempfile.mkdtemp())
    os.environ["VIDTUNE_CACHE"] = str(tmp / "cache")
    run = make_run(tmp / "run")
    model = load_run(run).model
    first = str(sample_items()[0].path)
    for rt in args.runtimes.split(","):  # build the engine and the run's record, as any earlier job would
        subprocess.run([sys.executable, "-m", "vidtune", "predict", str(run), first, "--runtime", rt, "-q", "--json",
                        "--no-cache"], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    workers = default_workers() if args.workers is None else args.workers
    cores = os.cpu_count() or 1
    for which in args.data.split(","):
        items = sample_items() if which == "sample" else real_items()
        n = len(items) * FRAMES
        probe = lean.load(run, "cpu", args.runtimes.split(",")[0])
        t0 = time.perf_counter()
        clips = [lean._decode((i, it, probe.sampling, probe.cfg))[1] for i, it in enumerate(items)]
        decode_s = time.perf_counter() - t0
        x = normalise(np.concatenate([c for c in clips if c is not None]), probe.cfg)
        print(f"\n## {which}: {len(items)} videos x {FRAMES} frames = {n} frames; {cores} cores, {workers} decoding "
              f"worker(s); serial decode + crop {decode_s / n * 1000:.1f} ms/frame\n")
        print("| engine | backbone alone, best threads | pipeline | engine threads | frames/s | pipeline / alone |")
        print("|---|---:|---|---:|---:|---:|")
        for rt in args.runtimes.split(","):
            alone = {}
            for th in sorted({1, cores}):
                sess = EngineSession(Path(os.environ["VIDTUNE_CACHE"]) / "engines" / probe.record["onnx"], rt, th)
                sess(x[:4])
                best = 1e9
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    sess(x)
                    best = min(best, time.perf_counter() - t0)
                alone[th] = len(x) / best
            best_alone = max(alone.values())
            for setting in args.threads.split(","):
                if setting == "auto":
                    os.environ.pop(ENGINE_THREADS_ENV, None)
                else:
                    os.environ[ENGINE_THREADS_ENV] = setting
                cache.close_sessions()
                lr = lean.load(run, "cpu", rt)
                results = {"lean": []}
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    feats, skipped = lean.frame_features(lr, items, workers=workers)
                    results["lean"].append(len(feats) * FRAMES / (time.perf_counter() - t0))
                cache.close_sessions()
                results["features"] = []
                with using_runtime(rt):
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        feats, _ = extract_features(model.encoder, items, sampling_for(model.encoder, FRAMES),
                                                    device=torch.device("cpu"), workers=workers)
                        results["features"].append(len(feats) * FRAMES / (time.perf_counter() - t0))
                for name, fps in results.items():
                    print(f"| {rt} | {best_alone:.0f} (1 thread {alone[1]:.0f}, {cores}: {alone[cores]:.0f}) | {name} | "
                          f"{engine_threads()} | {max(fps):.0f} | {max(fps) / best_alone:.2f} |")
    os.environ.pop(ENGINE_THREADS_ENV, None)


if __name__ == "__main__":
    main()
