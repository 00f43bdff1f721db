"""Feature-pass runtimes: every fp32 engine gives the same features (within the stated tolerance),
``auto`` chooses and falls back cleanly, a missing engine is a clear error when asked for by name."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from vidtune.data.manifest import VideoItem
from vidtune.data.sample import write_sample_dataset
from vidtune.engines import cache as engine_cache
from vidtune.engines import runtime as engine_runtime
from vidtune.engines.backbone import FEATURE_TOLERANCE, EngineEncoder, backbone_engine, resolve
from vidtune.errors import ConfigError
from vidtune.models.backbones import create_backbone
from vidtune.runs import light as run_light
from vidtune.runs.features import Sampling, extract_features, open_cache

pytest.importorskip("onnxruntime")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtimes") / "data"
    write_sample_dataset(root, classes=2, per_class=2, seconds=1.0, fps=8, size=(96, 72), seed=1)
    return [VideoItem(path=p, label="") for p in sorted(root.rglob("*.mp4"))]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_backbone("test_efficientnet", pretrained=False).eval()


RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not engine_runtime.installed("openvino"), reason="openvino not installed"))]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_fp32_runtimes_agree_with_torch_within_the_tolerance(clips, encoder, runtime):
    sampling = Sampling(4)
    ref, skipped = extract_features(encoder, clips, sampling, device=CPU, workers=0, runtime="torch")
    got, skipped2 = extract_features(encoder, clips, sampling, device=CPU, workers=0, runtime=runtime)
    assert not skipped and not skipped2 and sorted(ref) == sorted(got) == list(range(len(clips)))
    for i in ref:
        assert got[i].shape == ref[i].shape == (4, 1, encoder.num_features)
        scale = ref[i].abs().max()
        assert (got[i] - ref[i]).abs().max() <= FEATURE_TOLERANCE * scale
    net, name = backbone_engine(encoder, runtime, CPU, 8)
    assert name == runtime and not isinstance(net, torch.nn.Module)


def test_fp32_runtimes_share_cached_features(tmp_path, clips, encoder):
    cache = open_cache(tmp_path / "cache")
    first, _ = extract_features(encoder, clips[:2], Sampling(2), device=CPU, workers=0, cache=cache,
                                runtime="onnxruntime")
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*.safetensors"))
    again, _ = extract_features(encoder, clips[:2], Sampling(2), device=CPU, workers=0, cache=cache, runtime="torch")
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.safetensors")) == files and len(files) == 2
    assert all(torch.equal(first[i], again[i]) for i in first)  # served from the cache, not recomputed


def test_auto_chooses_by_job_size_frame_independence_and_installed_engines(monkeypatch, tmp_path, encoder):
    monkeypatch.setenv("VIDTUNE_CACHE", str(tmp_path / "fresh"))  # no engine built yet: as in a new process
    engine_cache.close_sessions()
    # a fixed order instead of a measurement (test_engine_choice checks the measured choice)
    monkeypatch.setenv("VIDTUNE_RUNTIME_ORDER", ",".join(engine_runtime.AUTO_ORDER))
    first = next(n for n in engine_runtime.AUTO_ORDER if engine_runtime.installed(n))
    assert resolve("auto", encoder, CPU, 16) == "torch"  # a small job: exporting would cost more than it saves
    assert resolve("auto", encoder, CPU, 4096) == first
    assert resolve("torch", encoder, CPU, 4096) == "torch"
    backbone_engine(encoder, "onnxruntime", CPU, 16)  # builds and caches the engine on disk
    assert resolve("auto", encoder, CPU, 16) == first  # built once: worth it even for small jobs
    tsm = create_backbone("test_resnet", pretrained=False)
    from vidtune.models.temporal_shift import add_temporal_shift

    add_temporal_shift(tsm, 4)
    assert resolve("auto", tsm, CPU, 4096) == "torch" and resolve("onnxruntime", tsm, CPU, 4096) == "torch"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the extra were not installed
    assert not engine_runtime.installed("openvino")
    assert resolve("auto", encoder, CPU, 4096) == "onnxruntime"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert resolve("auto", encoder, CPU, 4096) == "torch"
    with pytest.raises(ConfigError, match=r"pip install 'vidtune\[onnx\]'"):
        resolve("onnxruntime", encoder, CPU, 4096)
    with pytest.raises(ConfigError, match="must be one of"):
        resolve("tensorrt", encoder, CPU, 16)


def test_cli_runtime_flag_gives_the_same_predictions(tmp_path, capsys):
    from vidtune.cli.main import main
    from vidtune.engines.runtime import default_runtime

    data = tmp_path / "d"
    write_sample_dataset(data, classes=2, per_class=3, seconds=1.0, fps=8, size=(64, 48), seed=0)
    tiny = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "2", "--epochs", "1", "--workers", "0",
            "-q", "--json"]
    assert main(["train", str(data), "--out", str(tmp_path / "run"), "--runtime", "onnxruntime", *tiny]) == 0
    capsys.readouterr()
    results = {}
    for name in ("torch", "onnxruntime"):
        assert main(["predict", str(tmp_path / "run"), str(data), "--runtime", name, "--no-cache", "--workers", "0",
                     "-q", "--json"]) == 0
        results[name] = json.loads(capsys.readouterr().out)["results"]
        assert default_runtime() == "torch"  # the flag holds for its command only
    for a, b in zip(results["torch"], results["onnxruntime"]):
        assert a["labels"] == b["labels"]
        assert all(abs(p["score"] - q["score"]) < 1e-3 for p, q in zip(a["predictions"], b["predictions"]))
    # the onnxruntime predict above recorded the run's engine: now the run loads without its PyTorch backbone
    light = run_light.load_light(tmp_path / "run", CPU, "onnxruntime")
    assert light is not None and isinstance(light.model.encoder, EngineEncoder)
    assert run_light.load_light(tmp_path / "run", CPU, "torch") is None
    assert main(["predict", str(tmp_path / "run"), str(data), "--runtime", "onnxruntime", "--no-cache", "--workers",
                 "0", "-q", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == results["onnxruntime"]
    evals = {}
    for rt in ("torch", "onnxruntime"):  # eval takes the light path too, with the same scores
        assert main(["eval", str(tmp_path / "run"), str(data), "--split", "all", "--runtime", rt, "--workers", "0",
                     "-q", "--json"]) == 0
        evals[rt] = json.loads(capsys.readouterr().out)
    assert evals["torch"]["top1"] == evals["onnxruntime"]["top1"] and evals["torch"]["n"] == 6
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "run"), str(data), "--runtime", "tensorrt"])


def test_int8_feature_pass_is_calibrated_on_the_job_and_cached_apart(tmp_path, clips, encoder, monkeypatch):
    monkeypatch.setenv("VIDTUNE_CACHE", str(tmp_path / "c"))
    engine_cache.close_sessions()
    cache = open_cache(tmp_path / "c")
    sampling = Sampling(4)
    fp32, _ = extract_features(encoder, clips, sampling, device=CPU, workers=0, cache=cache, runtime="onnxruntime")
    q, _ = extract_features(encoder, clips, sampling, device=CPU, workers=0, cache=cache, runtime="onnxruntime",
                            int8=True)
    assert len(list((tmp_path / "c").rglob("*.safetensors"))) == 2 * len(clips)  # int8 never serves fp32
    assert list((tmp_path / "c" / "engines").glob("*-int8.onnx"))
    for i in fp32:  # quantised, so not equal, but still the same features to within int8 rounding
        assert not torch.equal(q[i], fp32[i])
        cos = torch.nn.functional.cosine_similarity(q[i].flatten(), fp32[i].flatten(), dim=0)
        assert cos > 0.9
    with pytest.raises(ConfigError, match="int8"):
        engine_runtime.set_default_runtime("torch", int8=True)


def test_cli_int8_needs_an_engine(tmp_path, capsys):
    from vidtune.cli.main import main

    code = main(["predict", str(tmp_path / "run"), str(tmp_path), "--runtime", "torch", "--int8", "--json"])
    assert code == 2 and "--int8 needs an int8 engine" in json.loads(capsys.readouterr().out)["error"]
