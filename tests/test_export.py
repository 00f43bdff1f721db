"""``vidtune export``: parity for every temporal head and a multi-label run, the JSON beside the file
(run without vidtune: PyAV + PIL + a plain onnxruntime session), int8, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtune.data.sample import write_sample_dataset
from vidtune.models.backbones import create_backbone
from vidtune.runs.config import ModelSpec, RunConfig
from vidtune.runs.store import assemble, save_weights

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

LABELS = ["ball", "checkerboard", "stripes"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export") / "data"
    write_sample_dataset(root, classes=3, per_class=4, seconds=1.0, fps=8, size=(96, 72), seed=0)
    return root


def make_run(out: Path, data: Path, temporal: str = "mean", backbone: str = "test_efficientnet", grid: int = 1,
             head: dict | None = None, task: str = "single_label", thresholds=None, frames: int = 3) -> Path:
    """A run folder with seeded random weights, as ``vidtune train`` writes it (config + safetensors)."""
    torch.manual_seed(0)
    enc = create_backbone(backbone, pretrained=False)
    tsm = None
    if temporal == "tsm":
        from vidtune.models.temporal_shift import add_temporal_shift

        tsm = {"fold_div": 8, "blocks": add_temporal_shift(enc, frames, 8)}
    spec = ModelSpec(backbone=backbone, temporal=temporal, frames=frames, grid=grid, head=head or {}, tsm=tsm,
                     feature_dim=enc.num_features)
    model = assemble(enc, spec, len(LABELS), shift=False).eval()
    with torch.no_grad():  # logits far enough apart that resampling noise cannot swap the top class
        model.head.fc.weight.mul_(8.0)
    cfg = RunConfig(labels=LABELS, model=spec, transform=enc.cfg, task=task, thresholds=thresholds,
                    data={"source": str(data)}, train={"val_split": 0.25, "seed": 0}, run_id=f"test-{temporal}-{task}")
    out.mkdir(parents=True)
    save_weights(model, out / "model.safetensors", cfg.run_id)
    cfg.save(out / "config.json")
    return out


HEADS = [
    ("mean", "test_efficientnet", 1, {}),
    ("attention", "test_efficientnet", 2, {"dim": 32}),
    ("transformer", "test_efficientnet", 2, {"dim": 32, "depth": 1}),
    ("tsm", "test_resnet", 1, {}),
]


@pytest.mark.parametrize("temporal,backbone,grid,head", HEADS, ids=[h[0] for h in HEADS])
def test_onnx_export_matches_the_run_for_every_temporal_head(tmp_path, data, temporal, backbone, grid, head):
    from vidtune.export import export_run

    run = make_run(tmp_path / "run", data, temporal, backbone, grid, head)
    res = export_run(run, tmp_path / "m.onnx", "onnx", parity_clips=4)
    p = res["parity"]
    assert p["clips"] == 4 and "run's data" in p["source"] and p["batch_sizes"] == [1, 4]
    assert p["max_abs_logit_diff"] < 1e-3 and p["top1_agreement"] == 1.0
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["input"]["shape"] == ["batch", 3, 3, 160, 160] and side["labels"] == LABELS
    assert side["run"]["temporal"] == temporal and "thresholds" not in side


def _plain_clip(path: Path, pre: dict) -> np.ndarray:
    """What a user without vidtune does with the JSON: PyAV decode, PIL resize + crop, normalise."""
    import av
    from PIL import Image

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        frames = [(float(f.pts * f.time_base), f.to_image()) for f in c.decode(stream)]
        duration = float(stream.duration * stream.time_base) if stream.duration else frames[-1][0]
    n = pre["segments"]
    out = []
    for i in range(n):
        t = (i + 0.5) * duration / n
        img = [im for ts, im in frames if ts <= t + 1e-6][-1]  # the frame on screen at t
        w, h = img.size
        s = pre["resize_short_side"]
        img = img.resize((round(w * s / min(w, h)), round(h * s / min(w, h))),
                         {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[pre["interpolation"]])
        w, h = img.size
        c = pre["crop"]
        left, top = (w - c) // 2, (h - c) // 2
        x = np.asarray(img.crop((left, top, left + c, top + c)), dtype=np.float32) * pre["scale"]
        out.append(((x - pre["mean"]) / pre["std"]).transpose(2, 0, 1))
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("task", ["single_label", "multilabel"])
def test_exported_onnx_runs_in_plain_onnxruntime_and_gives_the_runs_predictions(tmp_path, data, task):
    import onnxruntime as ort

    from vidtune.export import export_run
    from vidtune.runs.inference import predict

    thresholds = [0.3, 0.5, 0.7] if task == "multilabel" else None
    run = make_run(tmp_path / "run", data, task=task, thresholds=thresholds)
    export_run(run, tmp_path / "clf.onnx", "onnx", parity_clips=3)
    side = json.loads((tmp_path / "clf.onnx.json").read_text())
    assert side["task"] == task
    videos = sorted(data.rglob("*.mp4"))[::3]
    sess = ort.InferenceSession(str(tmp_path / side["model_file"]), providers=["CPUExecutionProvider"])
    x = np.stack([_plain_clip(v, side["preprocessing"]) for v in videos])
    logits = sess.run([side["output"]["name"]], {side["input"]["name"]: x})[0]
    ref = predict(run, videos, k=3, workers=0, use_cache=False)["results"]
    for row, r in zip(logits, ref):
        t = torch.from_numpy(row)
        if task == "multilabel":
            scores = t.sigmoid()
            assert side["thresholds"] == thresholds
            chosen = [side["labels"][j] for j in np.argsort(-scores.numpy()) if scores[j] >= side["thresholds"][j]]
            want = {p["label"]: p["score"] for p in r["predictions"]}
            assert all(abs(want[lab] - float(scores[side["labels"].index(lab)])) < 0.05 for lab in want)
            if all(abs(float(s) - th) > 0.05 for s, th in zip(scores, thresholds)):
                assert chosen == r["labels"]
        else:
            probs = t.softmax(-1)
            assert side["labels"][int(probs.argmax())] == r["labels"][0]
            assert abs(float(probs.max()) - r["predictions"][0]["score"]) < 0.05


@pytest.mark.parametrize("fmt,name", [("openvino", "m.xml"), ("torchscript", "m.pt")])
def test_openvino_and_torchscript_exports_match(tmp_path, data, fmt, name):
    pytest.importorskip("openvino") if fmt == "openvino" else None
    from vidtune.engines.formats import ExportedModel
    from vidtune.export import export_run

    run = make_run(tmp_path / "run", data, "tsm", backbone="test_resnet")
    res = export_run(run, tmp_path / name, fmt, parity_clips=3)
    assert res["parity"]["max_abs_logit_diff"] < 1e-3 and res["parity"]["top1_agreement"] == 1.0
    if fmt == "openvino":
        assert (tmp_path / "m.bin").is_file() and res["files"] == ["m.xml", "m.bin", "m.xml.json"]
    out = ExportedModel(tmp_path / name, fmt)(np.zeros((5, 3, 3, 160, 160), np.float32))
    assert out.shape == (5, 3)  # dynamic batch


def test_int8_export_reports_the_accuracy_change(tmp_path, data):
    import onnx

    from vidtune.export import export_run

    run = make_run(tmp_path / "run", data)
    fp = export_run(run, tmp_path / "fp.onnx", "onnx", parity_clips=2)
    q = export_run(run, tmp_path / "q.onnx", "onnx", parity_clips=2, int8=True, calibration_clips=4)
    r = q["int8"]
    assert r["calibration_clips"] == 4 and r["validation_clips"] == 3 and r["metric"] == "top1"
    assert r["delta"] == pytest.approx(r["int8"] - r["fp32"]) and r["within_bound"] == (r["delta"] >= -r["bound"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert (tmp_path / "q.onnx").stat().st_size < (tmp_path / "fp.onnx").stat().st_size
    assert json.loads((tmp_path / "q.onnx.json").read_text())["precision"] == "int8" and fp["precision"] == "fp32"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_cli_export_json_and_errors(tmp_path, data, capsys):
    from vidtune.cli.main import main

    run = make_run(tmp_path / "run", data)
    assert main(["export", str(run), "--out", str(tmp_path / "a.onnx"), "--parity-clips", "2", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["files"] == ["a.onnx", "a.onnx.json"] and res["parity"]["clips"] == 2
    code = main(["export", str(run), "--format", "torchscript", "--int8", "--out", str(tmp_path / "b.pt"), "--json"])
    cap = capsys.readouterr()
    assert code == 2 and "--int8 is for --format onnx or openvino" in json.loads(cap.out)["error"]
    assert main(["export", str(run), "--format", "openvino", "--out", str(tmp_path / "c.onnx"), "-q"]) == 2
    assert "must end in .xml" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "d.onnx"), "-q"]) == 2
    assert "run folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", str(run), "--format", "tflite", "--out", str(tmp_path / "e.onnx")])
    assert exc.value.code == 2
