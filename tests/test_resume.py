"""Crash-safe training: SIGKILL mid-epoch, ``--resume``, and the same result as an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.test_cli import run, run_json
from vidtune.data.sample import write_sample_dataset
from vidtune.errors import CheckpointError
from vidtune.train.resume import CHECKPOINT, load_state, save_state

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "2", "--workers", "0", "--seed", "3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "data"
    write_sample_dataset(root, classes=2, per_class=4, seconds=1.0, fps=6, size=(64, 48), seed=0)
    return root


def _kill_run(args: list, after_epoch: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIDTUNE_TEST_KILL_AFTER_EPOCH": str(after_epoch)}
    return subprocess.run([sys.executable, "-m", "vidtune", "-v", *map(str, args), "--json"], env=env,
                          capture_output=True, text=True, timeout=300)


def _history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def _same_run(a, b) -> None:
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    ma.pop("seconds"), mb.pop("seconds")
    assert ma == mb
    assert _history(a) == _history(b)
    for name in ("model.safetensors", "last.safetensors"):
        ta, tb = load_file(str(a / name)), load_file(str(b / name))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (name, k)
    ca, cb = (json.loads((d / "config.json").read_text()) for d in (a, b))
    for c in (ca, cb):
        c.pop("run_id"), c.pop("created")
    assert ca == cb


@pytest.mark.parametrize("strategy,epochs,kill_after", [("linear", 6, 3), ("partial", 2, 1)])
def test_sigkill_then_resume_matches_an_uninterrupted_run(capsys, data, tmp_path, strategy, epochs, kill_after):
    args = [data, "--strategy", strategy, "--epochs", str(epochs), *TINY]
    code, whole = run_json(capsys, "train", *args, "--out", tmp_path / "whole")
    assert code == 0 and not (tmp_path / "whole" / CHECKPOINT).exists()  # removed once the run is complete

    broken = tmp_path / "broken"
    proc = _kill_run(["train", *args, "--out", broken], kill_after)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (broken / "metrics.json").exists()
    _, state = load_state(broken / CHECKPOINT)
    assert state["epoch"] == kill_after and len(state["history"]) == kill_after

    code, out, err = run(capsys, "-v", "train", *args, "--out", broken, "--resume", "--json")
    assert code == 0 and f"resuming after epoch {kill_after} of {epochs}" in err
    resumed = json.loads(out)
    assert resumed["val"] == whole["val"] and resumed["best_epoch"] == whole["best_epoch"]
    assert not (broken / CHECKPOINT).exists()
    _same_run(tmp_path / "whole", broken)


def test_resume_refuses_other_arguments_foreign_and_tampered_checkpoints(capsys, data, tmp_path):
    out = tmp_path / "run"
    args = ["train", data, "--out", out, "--epochs", "3", *TINY]
    assert _kill_run(args, 1).returncode == -signal.SIGKILL
    good = (out / CHECKPOINT).read_bytes()

    code, _, err = run(capsys, *args, "--lr", "0.01", "--resume")
    assert code == 2 and "other arguments" in err and "lr: 0.001 -> 0.01" in err

    # flip one byte in the tensor data (the end of the file): the checksum catches it
    bad = bytearray(good)
    bad[-3] ^= 0xFF
    (out / CHECKPOINT).write_bytes(bytes(bad))
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2 and "damaged or was tampered with" in err
    (out / CHECKPOINT).write_bytes(good[: len(good) // 2])  # truncated
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2 and "not a readable safetensors file" in err and "Traceback" not in err

    from safetensors.torch import save_file  # a foreign safetensors file (plain weights)

    save_file({"w": torch.zeros(3)}, str(out / CHECKPOINT))
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2 and "not a vidtune training checkpoint" in err

    (out / CHECKPOINT).write_bytes(good)
    code, _ = run_json(capsys, *args, "--resume")
    assert code == 0
    code, _, err = run(capsys, *args, "--resume")
    assert code == 2 and "nothing to resume" in err


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    save_state(path, {"w": torch.arange(4.0)}, {"epoch": 1})
    import safetensors.torch

    def dying_save(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"\x00" * 100)  # half a file, then the machine goes down
        raise OSError("simulated crash")

    monkeypatch.setattr(safetensors.torch, "save_file", dying_save)
    with pytest.raises(OSError):
        save_state(path, {"w": torch.arange(8.0)}, {"epoch": 2})
    tensors, state = load_state(path)
    assert state == {"epoch": 1} and torch.equal(tensors["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temporary file left behind
    with pytest.raises(CheckpointError, match="not a readable"):
        load_state(tmp_path / "missing.safetensors")
