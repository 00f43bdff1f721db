"""Feature pass throughput: decode + transform + backbone (workers, prefetch) vs the backbone alone.

Both sides push the same frames through the same frozen EfficientNet-Lite0 (batch 32, 224 px,
channels_last); the backbone-alone side gets them pre-decoded and pre-cropped in memory. A ratio
near 1 means decoding is hidden behind the network.

    python bench/pipeline.py [--videos 48] [--frames 8] [--workers N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CACHE  # noqa: E402

from vidtune.data.manifest import load_dataset  # noqa: E402
from vidtune.data.sample import write_sample_dataset  # noqa: E402
from vidtune.data.transforms import Normalize  # noqa: E402
from vidtune.models.backbones import create_backbone  # noqa: E402
from vidtune.runs.features import (  # noqa: E402
    ClipDataset,
    Sampling,
    default_workers,
    extract_features,
    inference_encoder,
)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="320x240", help="sample video size (decoded and resized per frame)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--batch-frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each side; the best counts")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    data = CACHE / f"pipeline_{args.videos}_{args.size}"
    if not data.exists():
        tmp = Path(tempfile.mkdtemp(dir=CACHE.mkdir(parents=True, exist_ok=True) or CACHE))
        write_sample_dataset(tmp, classes=4, per_class=args.videos // 4, seconds=4.0, fps=25, size=(w, h), seed=0)
        tmp.rename(data)
    items = load_dataset(data)
    workers = default_workers() if args.workers is None else args.workers
    sampling = Sampling(args.frames, "centre")
    enc = create_backbone().eval()
    device = torch.device("cpu")
    n_frames = len(items) * args.frames

    # backbone alone on pre-decoded frames (the same frames, decoded once beforehand)
    ds = ClipDataset(items, sampling, enc.cfg)
    clips = torch.cat([ds[i]["frames"] for i in range(len(items))])  # (N*T, S, S, 3) uint8
    norm = Normalize(enc.cfg)
    net = inference_encoder(enc, device, n_frames)  # the same engine the pipeline uses (TorchScript on CPU)

    def backbone_only():
        with torch.inference_mode():
            for s in range(0, len(clips), args.batch_frames):
                x = norm(clips[s : s + args.batch_frames]).contiguous(memory_format=torch.channels_last)
                net(x)

    def eager():
        with torch.inference_mode():
            for s in range(0, len(clips), args.batch_frames):
                enc(norm(clips[s : s + args.batch_frames]).contiguous(memory_format=torch.channels_last))

    def pipeline():
        feats, skipped = extract_features(enc, items, sampling, device=device, cache=None,
                                          batch_frames=args.batch_frames, workers=workers)
        assert len(feats) == len(items) and not skipped

    backbone_only()  # warm-up (allocations, oneDNN kernels)
    eager()
    results = {}
    for name, fn in [("eager", eager), ("backbone", backbone_only), ("pipeline", pipeline)] * args.repeats:
        t0 = time.perf_counter()
        fn()
        results.setdefault(name, []).append(n_frames / (time.perf_counter() - t0))
    bb, pl = max(results["backbone"]), max(results["pipeline"])
    print(f"{len(items)} videos ({args.size}, 4 s, H.264) x {args.frames} frames = {n_frames} frames; "
          f"{workers} decode worker(s), torch threads {torch.get_num_threads()}")
    print(f"backbone alone, eager PyTorch      : {max(results['eager']):6.1f} frames/s")
    print(f"backbone alone (pre-decoded)       : {bb:6.1f} frames/s  ({net is not enc and 'TorchScript' or 'eager'})")
    print(f"full pipeline (decode+crop+backbone): {pl:6.1f} frames/s")
    print(f"pipeline/backbone throughput ratio: {pl / bb:.2f}")


if __name__ == "__main__":
    main()
