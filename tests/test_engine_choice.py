"""``--runtime auto`` follows measured speeds (remembered per encoder and machine); the int8 engine is
calibrated on frames from many videos, keyed by its identity, and train --int8 reports its accuracy cost."""

from __future__ import annotations

import json
import logging
import sys

import pytest
import torch

from vidtune.data.manifest import VideoItem
from vidtune.data.sample import write_sample_dataset
from vidtune.engines import backbone
from vidtune.engines import cache as engine_cache
from vidtune.engines import choice as engine_choice
from vidtune.engines import runtime as engine_runtime
from vidtune.engines.backbone import resolve
from vidtune.engines.build import engine_path
from vidtune.engines.int8 import int8_tag
from vidtune.models.backbones import create_backbone
from vidtune.runs import calibration
from vidtune.runs.features import Sampling, extract_features, open_cache

pytest.importorskip("onnxruntime")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("choice") / "data"
    write_sample_dataset(root, classes=3, per_class=2, seconds=1.0, fps=8, size=(96, 72), seed=2)
    return [VideoItem(path=p, label="") for p in sorted(root.rglob("*.mp4"))]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_backbone("test_efficientnet", pretrained=False).eval()


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A new cache (no engine built, nothing measured) and no engine in memory, as in a new process."""
    monkeypatch.setenv("VIDTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(engine_choice.ORDER_ENV, raising=False)
    engine_cache.close_sessions()
    return tmp_path / "cache"


def _inject(encoder, fps: dict, failed: dict | None = None) -> None:
    key = engine_choice.speed_key(encoder.fingerprint(), encoder.cfg.input_size)
    path = engine_choice.speed_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "frames_per_second": fps, "failed": failed or {}}), encoding="utf-8")


def _no_measuring(monkeypatch):
    def refuse(*_):
        raise AssertionError("measured although a measurement is on file")

    monkeypatch.setattr(engine_choice, "measure", refuse)


def test_choice_follows_the_measured_speeds(fresh, encoder, monkeypatch):
    _no_measuring(monkeypatch)
    _inject(encoder, {"torch": 50.0, "onnxruntime": 200.0, "openvino": 100.0})
    assert resolve("auto", encoder, CPU, 4096) == "onnxruntime"
    _inject(encoder, {"torch": 300.0, "onnxruntime": 200.0, "openvino": 100.0})
    assert resolve("auto", encoder, CPU, 4096) == "torch"  # the baseline can win
    assert resolve("auto", encoder, CPU, 4096, int8=True) == "onnxruntime"  # int8: the fastest exported engine
    if engine_runtime.installed("openvino"):
        _inject(encoder, {"torch": 50.0, "onnxruntime": 100.0, "openvino": 200.0})
        assert resolve("auto", encoder, CPU, 4096) == "openvino"
        # a small job: the measured engine when it is built, PyTorch rather than exporting it now
        assert resolve("auto", encoder, CPU, 16) == "torch"
        backbone.backbone_engine(encoder, "openvino", CPU, 16)
        assert resolve("auto", encoder, CPU, 16) == "openvino"
    # within 10% of each other the engines count as tied: the preferred one (OpenVINO) wins, not the noise
    _inject(encoder, {"torch": 50.0, "onnxruntime": 100.0, "openvino": 95.0})
    assert resolve("auto", encoder, CPU, 4096) == ("openvino" if engine_runtime.installed("openvino") else "onnxruntime")
    _inject(encoder, {"torch": 50.0, "onnxruntime": 100.0, "openvino": 85.0})
    assert resolve("auto", encoder, CPU, 4096) == "onnxruntime"
    # a measurement for other weights does not count: a small job then measures nothing and stays in torch
    torch.manual_seed(1)
    other = create_backbone("test_efficientnet", pretrained=False).eval()
    assert other.fingerprint() != encoder.fingerprint()
    assert resolve("auto", other, CPU, 16) == "torch"
    assert not list(fresh.glob(f"engines/{other.fingerprint()}*"))


def test_a_missing_or_failing_engine_is_not_a_candidate(fresh, encoder, monkeypatch):
    _no_measuring(monkeypatch)
    _inject(encoder, {"torch": 50.0, "onnxruntime": 100.0}, failed={"openvino": "RuntimeError: cannot compile"})
    assert resolve("auto", encoder, CPU, 4096) == "onnxruntime"  # openvino failed when measured
    _inject(encoder, {"torch": 50.0, "onnxruntime": 100.0, "openvino": 200.0})
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    assert resolve("auto", encoder, CPU, 4096) == "onnxruntime"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert resolve("auto", encoder, CPU, 4096) == "torch"


def test_a_real_measurement_is_written_once_and_read_back(fresh, encoder, monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="vidtune.engines.choice"):
        chosen = resolve("auto", encoder, CPU, 4096)
    files = list((fresh / "engines").glob("speed-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text(encoding="utf-8"))
    key = record["key"]
    assert key["fingerprint"] == encoder.fingerprint() and key["input_size"] == encoder.cfg.input_size
    assert key["threads"] == engine_runtime.engine_threads() and key["cpu"]["cores"] > 0 and key["versions"]["torch"]
    fps = record["frames_per_second"]
    expected = {"torch", "onnxruntime"} | ({"openvino"} if engine_runtime.installed("openvino") else set())
    assert set(fps) == expected and all(v > 0 for v in fps.values()) and not record["failed"]
    assert fps[chosen] >= max(fps.values()) * (1 - engine_choice.TIE)  # the fastest, or tied with it
    assert f"--runtime auto: {chosen} for {encoder.name}" in caplog.text and "measured now" in caplog.text
    _no_measuring(monkeypatch)  # a later job (here a new process's state) reads it
    engine_cache.close_sessions()
    assert resolve("auto", encoder, CPU, 4096) == chosen
    assert engine_choice.read_speeds(encoder.fingerprint(), encoder.cfg.input_size)["frames_per_second"] == fps
    # the light path of a run (load_light) takes the same engine, or none when PyTorch won
    light = engine_choice.auto_engines(encoder.fingerprint(), encoder.cfg.input_size,
                                       [n for n in engine_runtime.AUTO_ORDER if n in fps])
    assert light[:1] == ([chosen] if chosen != "torch" else [])


def test_environment_order_overrides_the_measurement(fresh, encoder, monkeypatch):
    _no_measuring(monkeypatch)
    _inject(encoder, {"torch": 50.0, "onnxruntime": 200.0, "openvino": 100.0})
    monkeypatch.setenv(engine_choice.ORDER_ENV, "torch,onnxruntime")
    assert resolve("auto", encoder, CPU, 4096) == "torch"
    assert resolve("auto", encoder, CPU, 4096, int8=True) == "onnxruntime"
    monkeypatch.setenv(engine_choice.ORDER_ENV, "tensorrt")
    with pytest.raises(Exception, match="VIDTUNE_RUNTIME_ORDER lists tensorrt"):
        resolve("auto", encoder, CPU, 4096)


def test_calibration_spans_many_videos():
    many = [VideoItem(path=f"/v/{i:03d}.mp4", label="") for i in range(200)]
    chosen = calibration.spread_items(many)
    assert len(chosen) == 64 == len({it.path for it in chosen})
    assert chosen[0].path == many[0].path and chosen[-1].path == many[-1].path  # spread over the whole job
    windows = [VideoItem(path=f"/v/{p}.mp4", label="", start=float(s), end=float(s + 1))
               for p in "abc" for s in range(40)]  # three long videos tagged in windows
    chosen = calibration.spread_items(windows)
    assert len(chosen) == 64 and {it.path for it in chosen} == {"/v/a.mp4", "/v/b.mp4", "/v/c.mp4"}
    starts = sorted(it.start for it in chosen if it.path == "/v/a.mp4")
    assert starts[0] == 0.0 and starts[-1] == 39.0


def test_int8_engine_is_calibrated_on_every_video_and_keyed_by_its_identity(fresh, clips, encoder):
    cache = open_cache(fresh)
    sampling = Sampling(4)
    q, _ = extract_features(encoder, clips, sampling, device=CPU, workers=0, cache=cache, runtime="onnxruntime",
                            int8=True)
    (record_path,) = list((fresh / "engines").glob("*-int8.json"))
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert record["method"] == "spread" and record["videos"] == len(clips) == record["clips"]
    assert record["frames"] == len(clips) * (calibration.CALIBRATION_FRAMES // len(clips))
    tag = record["digest"][:16]
    assert int8_tag(engine_path(encoder)) == tag
    entries = sorted((fresh).rglob("??/*.safetensors"))
    assert len(entries) == len(clips)
    # another calibration (the engine rebuilt from other videos) never serves the first one's features
    record_path.unlink()
    engine_cache.close_sessions()
    again, _ = extract_features(encoder, clips[:2], sampling, device=CPU, workers=0, cache=cache,
                                runtime="onnxruntime", int8=True)
    record2 = json.loads(record_path.read_text(encoding="utf-8"))
    assert record2["videos"] == 2 and record2["digest"] != record["digest"]
    assert len(sorted(fresh.rglob("??/*.safetensors"))) == len(clips) + 2
    assert not torch.equal(again[0], q[0])


def test_train_int8_reports_the_accuracy_change_against_fp32(tmp_path, fresh, capsys):
    from vidtune.cli.main import main

    data = tmp_path / "d"
    write_sample_dataset(data, classes=2, per_class=5, seconds=1.0, fps=8, size=(64, 48), seed=0)
    args = ["train", str(data), "--out", str(tmp_path / "run"), "--runtime", "onnxruntime", "--int8", "--backbone",
            "test_efficientnet", "--no-pretrained", "--frames", "2", "--epochs", "2", "--workers", "0", "-q"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    q = result["int8"]
    assert q["metric"] == "top1" and q["bound"] == 0.01 and q["validation_clips"] == result["val"]["n"] > 0
    assert q["int8"] == result["val"]["top1"]  # the run's validation ran on int8 features
    assert q["delta"] == pytest.approx(q["int8"] - q["fp32"]) and q["within_bound"] == (q["delta"] >= -0.01)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["int8"] == q
    assert main([*args, "--overwrite"]) == 0
    assert "int8 features: validation top1" in capsys.readouterr().out


def test_int8_check_warns_beyond_the_bound(caplog):
    from vidtune.train.linear import int8_check
    from vidtune.train.task import Task

    task = Task(False, ["a", "b"], None, 0.0)
    y = torch.tensor([0, 0, 1, 1])
    fp32 = torch.tensor([[2.0, 0], [2, 0], [0, 2], [0, 2]])
    int8 = torch.tensor([[2.0, 0], [0, 2], [0, 2], [0, 2]])  # one clip of four flips
    with caplog.at_level(logging.WARNING):
        report = int8_check(task, int8, fp32, y)
    assert report["fp32"] == 1.0 and report["int8"] == 0.75 and report["delta"] == -0.25
    assert not report["within_bound"] and report["top1_agreement_with_fp32"] == 0.75
    assert "more than the 1.0-point bound" in caplog.text


def test_int8_job_with_corrupt_videos_skips_them_and_calibrates_on_the_rest(fresh, clips, encoder, tmp_path):
    bad = []
    for i in range(3):
        p = tmp_path / f"broken{i}.mp4"
        p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
        bad.append(VideoItem(path=p, label=""))
    feats, skipped = extract_features(encoder, bad, Sampling(2), device=CPU, workers=0, runtime="onnxruntime",
                                      int8=True)
    assert feats == {} and sorted(s["path"] for s in skipped) == sorted(str(it.path) for it in bad)
    assert all(s["reason"] for s in skipped) and not list(fresh.glob("engines/*-int8.json"))
    mixed = [bad[0], *clips[:3], bad[1]]
    feats, skipped = extract_features(encoder, mixed, Sampling(2), device=CPU, workers=0, runtime="onnxruntime",
                                      int8=True)
    assert sorted(feats) == [1, 2, 3] and {s["path"] for s in skipped} == {str(bad[0].path), str(bad[1].path)}
    (record,) = [json.loads(p.read_text()) for p in fresh.glob("engines/*-int8.json")]
    assert record["videos"] == 3
