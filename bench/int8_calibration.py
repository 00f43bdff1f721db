"""int8 feature passes on real footage: calibrating on the job's first batch against frames spread over it.

The real-footage ``scenes`` task (bench/realworld_data.py: one class per real video, 88 training clips of
which the first 40 are from one video, corrupted test clips from later parts of each video). For each
calibration, a fresh feature cache and engine folder, then the library's own path:
``vidtune train --runtime onnxruntime --int8`` (linear, default recipe without --augment, seeds 0-2) and
``vidtune eval --int8`` on the test split, plus the same heads evaluated on fp32 features, against an fp32
run. Calibrations:

* ``first batch``: what feature passes did before: the 48 frames of the training job's first flush
  (grid sampling, 8 frames x 3 views of the first two training clips), quantised before the job runs;
* ``spread``: what they do now (vidtune.runs.calibration): up to 64 frames from up to 64 of the job's videos;
* ``spread, Percentile`` / ``spread, Entropy``: the same frames, other onnxruntime calibration methods
  (activation ranges from a histogram instead of the extreme values), with ``--methods``.

    nice python bench/int8_calibration.py            # about 5 minutes on 2 shared cores
    nice python bench/int8_calibration.py --variants spread --methods Percentile,Entropy
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import realworld_data  # noqa: E402
import torch  # noqa: E402
from _common import CACHE  # noqa: E402


def first_batch(encoder, manifest: Path, cfg) -> tuple[torch.Tensor, list[str]]:
    """The frames the old code calibrated on: the training job's first flush of >= 32 frames."""
    from vidtune.data.manifest import load_dataset
    from vidtune.data.splits import stratified_split
    from vidtune.data.transforms import Normalize
    from vidtune.runs.features import ClipDataset, clip_loader, sampling_for

    items = load_dataset(manifest)
    train_items = stratified_split(items, cfg.val_split, cfg.seed)["train"]
    sampling = sampling_for(encoder, cfg.frames, "grid", cfg.views)
    got, names = [], []
    for s in clip_loader(ClipDataset(train_items, sampling, encoder.cfg), 0):
        if s["error"] is None:
            got.append(s["frames"])
            names.append(Path(train_items[s["index"]].path).parent.name)
        if sum(len(f) for f in got) >= 32:
            break
    return Normalize(encoder.cfg)(torch.cat(got)), names


def run_variant(name: str, manifest: Path, root: Path, seeds, int8: bool, prebuilt=None) -> list[dict]:
    from vidtune.engines import cache as engine_cache
    from vidtune.engines.build import build_engine, engine_path
    from vidtune.engines.int8 import quantised
    from vidtune.engines.runtime import using_runtime
    from vidtune.models.backbones import create_backbone
    from vidtune.runs.inference import evaluate
    from vidtune.train.config import TrainConfig
    from vidtune.train.trainer import train

    cache = root / name
    os.environ["VIDTUNE_CACHE"] = str(cache)
    engine_cache.close_sessions()
    if prebuilt is not None:  # the int8 engine calibrated on the given frames, found by the job as its own
        frames, method = prebuilt
        enc = create_backbone(pretrained=True).eval()
        build_engine(enc, "onnxruntime")
        fp32 = engine_path(enc)
        if method == "MinMax":
            quantised(fp32, frames)
        else:
            from vidtune.engines.int8 import quantise_file
            from vidtune.utils import atomic_write_json, file_digest

            q = fp32.with_name(fp32.stem + "-int8.onnx")
            quantise_file(fp32, q, frames, "frames", method=method)
            atomic_write_json(q.with_suffix(".json"), {"method": method, "frames": len(frames), "digest": file_digest(q)})
    rows = []
    for seed in seeds:
        cfg = TrainConfig(seed=seed, cache_dir=str(cache), augment="none")
        out = root / f"run-{name}-{seed}"
        t0 = time.perf_counter()
        with using_runtime("onnxruntime", int8=int8):
            res = train(manifest, out, cfg, overwrite=True)
            ev = evaluate(out, manifest, split="test", cache_dir=str(cache))
        row = {"variant": name, "seed": seed, "test": ev["top1"], "val_delta": None, "seconds": time.perf_counter() - t0}
        if int8:
            row["val_delta"] = res["int8"]["delta"]
            with using_runtime("onnxruntime", int8=False):  # the same head on fp32 features
                row["test_fp32"] = evaluate(out, manifest, split="test", cache_dir=str(cache))["top1"]
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="fp32,first batch,spread")
    ap.add_argument("--methods", default="", help="also spread calibration with these onnxruntime methods")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    methods = [m for m in args.methods.split(",") if m]
    logging.disable(logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    from vidtune.data.manifest import load_dataset
    from vidtune.data.splits import stratified_split
    from vidtune.models.backbones import create_backbone
    from vidtune.runs.calibration import calibration_frames, spread_items
    from vidtune.train.config import TrainConfig

    manifest = realworld_data.scenes(CACHE / "realworld" / "scenes")
    enc = create_backbone(pretrained=True).eval()
    cfg = TrainConfig().resolved("cpu")
    calib, videos = first_batch(enc, manifest, cfg)
    train_items = stratified_split(load_dataset(manifest), cfg.val_split, cfg.seed)["train"]
    spread = spread_items(train_items)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "fp32" in variants:
            rows += run_variant("fp32", manifest, root, seeds, False)
        if "first batch" in variants:
            rows += run_variant("first batch", manifest, root, seeds, True, prebuilt=(calib, "MinMax"))
        if "spread" in variants:
            rows += run_variant("spread", manifest, root, seeds, True)
        if methods:  # the frames the library calibrates on (same choice, same decoding), other methods
            frames = calibration_frames(enc, train_items, 1)[0]
            for m in methods:
                rows += run_variant(f"spread, {m}", manifest, root, seeds, True, prebuilt=(frames, m))
    print(f"\nscenes task, EfficientNet-Lite0, ONNX Runtime, linear mean head, seeds {seeds}, "
          f"{time.perf_counter() - t0:.0f} s in all")
    print(f"first batch: {len(calib)} frames from {len(videos)} clips ({', '.join(sorted(set(videos)))}); "
          f"spread: {len(spread)} training clips from {len({it.path for it in spread})} files, "
          f"{len({Path(it.path).parent.name for it in spread})} scenes\n")
    print("| calibration | test top-1 (features of that engine) | same heads on fp32 features | "
          "val change reported by train |")
    print("|---|---:|---:|---:|")
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name]

        def cell(key, pct=True, rs=rs):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if not vals:
                return ""
            m, sd = statistics.mean(vals), statistics.pstdev(vals)
            return f"{m:.1%} ± {sd:.1%}" if pct else f"{m * 100:+.1f} ± {sd * 100:.1f} points"

        print(f"| {name} | {cell('test')} | {cell('test_fp32')} | {cell('val_delta', False)} |")


if __name__ == "__main__":
    main()
