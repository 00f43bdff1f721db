"""``torchrun --nproc-per-node 2 -m vidtune train``: DDP on gloo (CPU) with 2 processes.

Tolerance: end to end (``partial``), the weights after training on 2 ranks equal the
single-process weights within 1e-5 (measured: 3e-8; summation order differs) and the history
(losses, accuracies) agrees to 1e-5, with dropout off (each rank draws its own dropout masks, so
with dropout on the runs differ by the masks, not by a bug). The linear strategy trains on rank 0
from the features the ranks extracted, so it equals the single-process run (weights within 1e-6: only the
thread count differs).
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidtune.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    from vidtune.train.config import TrainConfig
    from vidtune.train.trainer import train
    cfg = TrainConfig(backbone="test_efficientnet", pretrained=False, frames=2, strategy="partial", epochs=3,
                      workers=0, device="cpu", batch_size=4, balance="none", use_cache=False, dropout=0.0)
    r = train(sys.argv[1], sys.argv[2], cfg, resume=len(sys.argv) > 3, overwrite=len(sys.argv) <= 3)
    if r.get("role") is None:
        print(json.dumps({"val": r["val"], "distributed": r.get("distributed")}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _torchrun(args: list, env=None, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or _env(), cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from vidtune.data.sample import write_sample_dataset

    root = tmp_path_factory.mktemp("ddp-data")
    write_sample_dataset(root, classes=2, per_class=5, seconds=1.5, fps=8, size=(64, 48), seed=2)
    return root


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    p = tmp_path_factory.mktemp("ddp-script") / "train_tiny.py"
    p.write_text(SCRIPT)
    return p


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _close(a: list[dict], b: list[dict], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(float(x[k] or 0) - float(y[k] or 0)) <= tol for x, y in zip(a, b) for k in x)


def _max_diff(a: Path, b: Path, name: str = "last.safetensors") -> float:
    x, y = load_file(str(a / name)), load_file(str(b / name))
    assert set(x) == set(y)
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x if x[k].is_floating_point())


@pytest.fixture(scope="module")
def ddp_run(data, script, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = _torchrun([script, data, out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # only rank 0 reports
    return out, json.loads(lines[0])


def test_ddp_on_two_gloo_processes_matches_one_process(ddp_run, data, tmp_path, capsys):
    out, result = ddp_run
    assert result["distributed"] == {"world": 2, "backend": "gloo", "strategy": "partial"}
    single = tmp_path / "single"
    namespace = {"__name__": "single"}
    exec(compile(SCRIPT.replace("sys.argv", "ARGV"), "train_tiny.py", "exec"),
         {**namespace, "ARGV": ["train_tiny.py", str(data), str(single)]})
    one = json.loads(capsys.readouterr().out)
    assert one["val"] == result["val"] and one["distributed"] is None
    assert _max_diff(single, out) < 1e-5 and _max_diff(single, out, "model.safetensors") < 1e-5
    assert _close(_history(single), _history(out))
    assert not (out / "checkpoint.safetensors").exists() and (out / "metrics.json").is_file()


def test_killed_ddp_run_resumes_to_the_same_result(ddp_run, data, script, tmp_path):
    out = tmp_path / "run"
    proc = _torchrun([script, data, out], env=_env(VIDTUNE_TEST_KILL_AFTER_EPOCH="1"))
    assert proc.returncode != 0 and (out / "checkpoint.safetensors").is_file()
    assert not (out / "metrics.json").exists()
    proc = _torchrun([script, data, out, "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _max_diff(ddp_run[0], out) < 1e-6 and _history(ddp_run[0]) == _history(out)


def test_linear_strategy_extracts_on_all_ranks_and_trains_on_rank_0_like_one_process(data, tmp_path, capsys):
    args = ["train", data, "--backbone", "test_efficientnet", "--no-pretrained", "--frames", "2", "--views", "1",
            "--epochs", "3", "--workers", "0", "--strategy", "linear", "--augment", "none", "--device", "cpu",
            "--json", "-q"]
    cache = tmp_path / "cache"
    proc = _torchrun(["-m", "vidtune", *args, "--out", tmp_path / "ddp", "--cache-dir", cache])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(proc.stdout)
    assert ddp["distributed"]["strategy"] == "linear"
    assert main([*map(str, args), "--out", str(tmp_path / "one"), "--no-cache"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert ddp["val"] == one["val"] and ddp["train"] == one["train"]
    assert _max_diff(tmp_path / "one", tmp_path / "ddp") < 1e-6  # thread count: summation order only


def test_a_group_that_cannot_form_fails_in_seconds_with_a_clear_error(data, tmp_path, monkeypatch, capsys):
    # rank 0 of 2 with no rank 1: the rendezvous times out instead of waiting forever
    for k, v in dict(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                     VIDTUNE_DIST_TIMEOUT="3").items():
        monkeypatch.setenv(k, v)
    args = ["train", str(data), "--out", str(tmp_path / "r"), "--backbone", "test_efficientnet", "--no-pretrained",
            "--strategy", "partial", "--device", "cpu", "--json"]
    assert main(args) == 2  # returns: the 3 s rendezvous timeout fired instead of the 30 min default
    captured = capsys.readouterr()
    assert "did not form within 3 s" in captured.err and "127.0.0.1" in captured.err
    assert "error" in json.loads(captured.out)
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "x")
    assert main(args) == 2 and "torchrun" in capsys.readouterr().err

