"""``predict`` through a run's exported engines without torch (:mod:`vidtune.runs.lean`): the same results
as the full path, nothing of torch or timm imported, the same feature cache, damaged files reported, a
crashing decoder costing only its own file, and a clean fallback wherever the path does not apply."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_export import make_run
from vidtune.cli.main import main
from vidtune.data.sample import write_sample_dataset

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lean") / "data"
    write_sample_dataset(root, classes=3, per_class=2, seconds=1.0, fps=8, size=(96, 72), seed=1)
    return root


@pytest.fixture(autouse=True)
def fresh_engines(tmp_path, monkeypatch):
    """Each test its own feature cache and engine folder, and no engine kept from another test's process
    state (engines are kept per weights fingerprint for the life of a process)."""
    from vidtune.engines import cache

    monkeypatch.setenv("VIDTUNE_CACHE", str(tmp_path / "cache"))
    cache.close_sessions()


def _predict(capsys, run, *args) -> tuple[int, list[dict]]:
    code = main(["predict", str(run), *map(str, args), "-q", "--json"])
    return code, json.loads(capsys.readouterr().out)["results"]


def _same(a: list[dict], b: list[dict], tol: float = 1e-5) -> None:
    assert [r["path"] for r in a] == [r["path"] for r in b]
    for x, y in zip(a, b):
        assert x["labels"] == y["labels"], (x, y)
        assert [p["label"] for p in x["predictions"]] == [p["label"] for p in y["predictions"]]
        assert all(abs(p["score"] - q["score"]) <= tol for p, q in zip(x["predictions"], y["predictions"]))


def _child(*argv: str) -> subprocess.CompletedProcess:
    """``vidtune ...`` in a fresh process that reports whether torch / timm were imported."""
    code = ("import sys; from vidtune.cli.main import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules, 'timm' in sys.modules, file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


@pytest.mark.parametrize("task", ["single_label", "multilabel"])
def test_predict_runs_on_engines_alone_with_the_full_paths_results(tmp_path, data, capsys, monkeypatch, task):
    kwargs = dict(task="multilabel", thresholds=[0.5, 0.45, 0.55]) if task == "multilabel" else {}
    run = make_run(tmp_path / "run", data, temporal="attention", grid=1, head={"dim": 32}, **kwargs)
    code, full = _predict(capsys, run, data, "--runtime", "torch", "--no-cache", "--workers", "0")
    assert code == 0 and len(full) == 6
    from vidtune.runs import lean

    assert lean.load(run, "cpu", "onnxruntime") is None  # no engine built for this run yet
    code, first = _predict(capsys, run, data, "--runtime", "onnxruntime", "--no-cache", "--workers", "0")
    _same(first, full)  # the full path (PyTorch head): builds the backbone engine and exports the head
    loaded = lean.load(run, "cpu", "onnxruntime")
    assert loaded is not None and loaded.runtime == "onnxruntime"

    done = _child("predict", str(run), str(data), "--runtime", "onnxruntime", "--no-cache", "--workers", "1",
                  "-q", "--json")
    assert done.stderr.strip().splitlines()[-1] == "0 False False", done.stderr  # neither torch nor timm
    _same(json.loads(done.stdout)["results"], full)
    if task == "multilabel":
        assert any(r["labels"] for r in full) and any(len(r["labels"]) != 1 for r in full)


def test_engines_alone_share_the_feature_cache_and_skip_damaged_files(tmp_path, data, capsys, monkeypatch):
    run = make_run(tmp_path / "run", data)
    videos = sorted(data.rglob("*.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(videos[0].read_bytes()[:300])  # the header of a real file, cut short
    code, full = _predict(capsys, run, *videos, bad, "--runtime", "onnxruntime", "--workers", "0")  # fills the cache
    assert code == 1 and "error" in full[-1] and all("labels" in r for r in full[:-1])

    from vidtune.data import clips
    from vidtune.runs import lean

    def no_decoding(*a, **k):
        raise AssertionError("decoded a video although its features are cached")

    monkeypatch.setattr(clips, "open_video", no_decoding)
    from vidtune.engines.runtime import using_runtime

    with using_runtime("onnxruntime"):
        res = lean.predict(run, videos, k=3, device="cpu", workers=0)
    assert res is not None and res["runtime"] == "onnxruntime"
    _same(res["results"], full[:-1])
    monkeypatch.undo()
    monkeypatch.setenv("VIDTUNE_CACHE", str(tmp_path / "cache"))
    code, again = _predict(capsys, run, *videos, bad, "--runtime", "onnxruntime", "--no-cache", "--workers", "1")
    assert code == 1 and again[-1]["path"] == str(bad) and again[-1]["error"] == full[-1]["error"]
    _same(again[:-1], full[:-1])


def _crash_on_second(job):
    from vidtune.runs import lean

    if job[0] == 1:
        os._exit(3)  # as a segfaulting decoder would: the worker is gone, no exception
    return lean._real_decode(job)


@pytest.mark.skipif(sys.platform == "darwin", reason="the crash is injected into forked workers")
def test_a_crashing_decoder_costs_only_its_own_file(data, monkeypatch):
    from vidtune.data.manifest import VideoItem
    from vidtune.data.preprocess import PretrainedConfig
    from vidtune.data.sampling import Sampling
    from vidtune.runs import lean

    monkeypatch.setattr(lean, "_real_decode", lean._decode, raising=False)
    monkeypatch.setattr(lean, "_decode", _crash_on_second)
    items = [VideoItem(path=p, label="") for p in sorted(data.rglob("*.mp4"))]
    got = {i: (frames, error) for i, frames, error in
           lean.decoded_clips(items, list(range(len(items))), Sampling(2), PretrainedConfig(input_size=32), 2)}
    assert sorted(got) == list(range(len(items)))
    assert got[1] == (None, lean._CRASHED)
    for i, (frames, error) in got.items():
        if i != 1:
            assert error is None and frames.shape == (2, 32, 32, 3) and frames.dtype == np.uint8


def test_where_engines_alone_do_not_apply_the_full_path_serves(tmp_path, data, capsys, monkeypatch):
    run = make_run(tmp_path / "run", data)
    code, built = _predict(capsys, run, data, "--runtime", "onnxruntime", "--no-cache", "--workers", "0")
    assert code == 0
    from vidtune.engines.runtime import using_runtime
    from vidtune.runs import lean

    assert lean.load(run, "cpu", "onnxruntime") is not None
    assert lean.load(run, "cpu", "torch") is None
    assert lean.load(run, "cuda", "onnxruntime") is None
    with using_runtime("onnxruntime", int8=True):
        assert lean.load(run, "cpu") is None  # int8 features are another engine
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    assert lean.load(run, "cpu", "onnxruntime") is None
    monkeypatch.undo()
    monkeypatch.setenv("VIDTUNE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "run" / "model.safetensors").write_bytes((tmp_path / "run" / "model.safetensors").read_bytes())
    assert lean.load(run, "cpu", "onnxruntime") is not None  # same bytes: same record
    code, again = _predict(capsys, run, data, "--runtime", "onnxruntime", "--no-cache", "--workers", "0")
    _same(again, built)
    other = make_run(tmp_path / "other", data, temporal="attention", head={"dim": 32})
    (tmp_path / "run" / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    assert lean.load(run, "cpu", "onnxruntime") is None  # new weights: the record no longer applies


def _signal_stack() -> tuple[int, int]:
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    st = StackT()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(st)) == 0
    return st.ss_sp or 0, st.ss_flags


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the thread's signal stack with sigaltstack")
def test_openvino_sessions_dropped_in_any_order_leave_no_freed_signal_stack(tmp_path, data):
    """OpenVINO's CPU plugin swaps the thread's signal stack per compiled model and puts back the one it
    found when the model is destroyed: dropping two models oldest first left the process on a freed stack,
    and the next SIGCHLD of a DataLoader worker killed it (bench/pipeline.py over two data sets). Compiled
    models now live until exit, so dropping sessions in any order changes nothing."""
    pytest.importorskip("openvino")
    import gc

    from vidtune.engines.formats import write_onnx
    from vidtune.engines.sessions import EngineSession

    torch = pytest.importorskip("torch")
    files = []
    for k in range(2):
        torch.manual_seed(k)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        files.append(write_onnx(net, torch.zeros(2, 3, 16, 16), tmp_path / f"m{k}.onnx", "x", "y") and
                     tmp_path / f"m{k}.onnx")
    x = np.zeros((2, 3, 16, 16), np.float32)
    first = EngineSession(files[0], "openvino", 1)
    second = EngineSession(files[1], "openvino", 1)
    assert first(x).shape == second(x).shape == (2, 4)
    stack = _signal_stack()
    del first  # the oldest first: the order that restored a freed stack
    gc.collect()
    del second
    gc.collect()
    assert _signal_stack() == stack
    assert EngineSession(files[0], "openvino", 1)(x).shape == (2, 4)  # the kept model serves a new session
