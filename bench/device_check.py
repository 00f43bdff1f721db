"""End-to-end check of every training strategy on one device, with timings: run this on a GPU machine.

Writes a small sample dataset, then trains linear / partial / full with the default backbone and
evaluates each on a held-out set, printing throughput and accuracy. Nothing here depends on a GPU
(``--device cpu`` runs the same path, slowly); the numbers for a GPU go in docs/benchmarks.md.

    python bench/device_check.py --device cuda [--per-class 16] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vidtune.data.sample import write_sample_dataset
from vidtune.runs.inference import evaluate
from vidtune.train.trainer import TrainConfig, train


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--per-class", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--strategies", default="linear,partial,full")
    ap.add_argument("--out", default=None, help="folder for data and runs (default: a temporary one)")
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="vidtune-device-"))
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"bf16 {torch.cuda.is_bf16_supported()}")
    else:
        print(f"device: CPU ({torch.get_num_threads()} threads), torch {torch.__version__}")
    write_sample_dataset(root / "train", per_class=args.per_class, seed=0, overwrite=True)
    write_sample_dataset(root / "test", per_class=max(2, args.per_class // 4), seed=1, overwrite=True)
    rows = []
    for strategy in args.strategies.split(","):
        cfg = TrainConfig(strategy=strategy, device=args.device, epochs=args.epochs, frames=args.frames,
                          cache_dir=str(root / "cache"), batch_size=8)
        t0 = time.perf_counter()
        res = train(root / "train", root / f"run_{strategy}", cfg)
        seconds = time.perf_counter() - t0
        ev = evaluate(root / f"run_{strategy}", root / "test", device=args.device, cache_dir=str(root / "cache"))
        n_clips = sum(json.loads((root / f"run_{strategy}" / "config.json").read_text())["data"]["train"].values())
        rows.append({"strategy": strategy, "train_s": round(seconds, 1),
                     "clips_per_s": round(n_clips * res["epochs_run"] / seconds, 1),
                     "val_top1": res["val"]["top1"], "test_top1": ev["top1"]})
        print(json.dumps(rows[-1]))
    print(f"{'strategy':9} {'train s':>8} {'clips/s':>8} {'val top1':>9} {'test top1':>10}")
    for r in rows:
        print(f"{r['strategy']:9} {r['train_s']:8.1f} {r['clips_per_s']:8.1f} {r['val_top1']:9.1%} {r['test_top1']:10.1%}")


if __name__ == "__main__":
    main()
