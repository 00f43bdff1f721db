"""``vidtune train --augment robust``: corrupted training views (linear, cached) and on-the-fly corruption (end to end)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_cli import run, run_json
from vidtune.data.manifest import load_dataset
from vidtune.data.sample import write_sample_dataset
from vidtune.models.backbones import create_backbone
from vidtune.progress import NullProgress
from vidtune.runs.features import ClipDataset, Sampling, extract_features, open_cache
from vidtune.train.config import TrainConfig
from vidtune.train.linear import corrupted_views as _corrupted_views
from vidtune.train.linear import robust_op as _robust_op

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "2", "--workers", "0", "--epochs", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment") / "data"
    write_sample_dataset(root, classes=2, per_class=3, seconds=1.0, fps=6, size=(64, 48), seed=0)
    return root


def test_corrupted_views_change_the_training_features(data, tmp_path):
    torch.manual_seed(0)
    enc = create_backbone("test_efficientnet", pretrained=False)
    items = sorted(load_dataset(data), key=lambda it: it.key())
    cfg = TrainConfig(frames=2, views=3, augment="robust", augment_views=2, workers=0)
    cpu = torch.device("cpu")
    cache = open_cache(tmp_path / "cache")
    clean, _ = extract_features(enc, items, Sampling(2, "grid", 3), device=cpu, cache=cache, workers=0)
    copies = _corrupted_views(enc, items, cfg, cpu, cache, NullProgress())
    assert len(copies) == 2 and all(sorted(c) == sorted(clean) for c in copies)
    for copy in copies:
        assert all(copy[i].shape == clean[i].shape for i in clean)
        # most clips change (a frame drop on a 1 s, 6 fps clip may happen to keep the same frames)
        assert sum(not torch.equal(copy[i], clean[i]) for i in clean) >= len(clean) - 1
    assert sum(not torch.equal(copies[0][i], copies[1][i]) for i in clean) >= len(clean) - 1
    # cached under their own keys: a second pass decodes nothing and gives the same features
    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 3 * len(items)
    again = _corrupted_views(enc, items, cfg, cpu, cache, NullProgress())
    assert all(torch.equal(again[1][i], copies[1][i]) for i in clean)
    # another seed, other corruptions
    other = _corrupted_views(enc, items, TrainConfig(frames=2, views=3, augment="robust", augment_views=1, seed=1,
                                                     workers=0), cpu, None, NullProgress())
    assert any(not torch.equal(other[0][i], copies[0][i]) for i in clean)
    assert _corrupted_views(enc, items, TrainConfig(frames=2), cpu, None, NullProgress()) == []


def test_on_the_fly_corruption_changes_end_to_end_clips(data):
    enc = create_backbone("test_efficientnet", pretrained=False)
    items = sorted(load_dataset(data), key=lambda it: it.key())
    op = _robust_op(TrainConfig(augment="robust", augment_views=2))
    plain = ClipDataset(items, Sampling(2, "random"), enc.cfg, augment=True, seed=0)
    robust = ClipDataset(items, Sampling(2, "random"), enc.cfg, augment=True, seed=0, frame_op=op)
    changed = 0
    for k in range(len(items)):
        a, b = plain[k], robust[k]
        assert a["error"] is None and b["error"] is None and a["frames"].shape == b["frames"].shape
        changed += not torch.equal(a["frames"], b["frames"])
        assert torch.equal(robust[k]["frames"], b["frames"])  # deterministic for a (seed, epoch, draw)
    assert changed >= 2  # each clip is corrupted with probability 2/3


@pytest.mark.parametrize("strategy", ["linear", "partial"])
def test_augment_robust_trains_end_to_end(capsys, data, tmp_path, strategy):
    code, res = run_json(capsys, "train", data, "--out", tmp_path / "run", *TINY, "--strategy", strategy,
                         "--augment", "robust", "--augment-views", "1")
    assert code == 0 and res["val"]["n"] == 2
    train = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert train["augment"] == "robust" and train["augment_views"] == 1


def test_bad_augment_options(capsys, data, tmp_path):
    code, _, err = run(capsys, "train", data, "--out", tmp_path / "r", *TINY, "--augment", "heavy")
    assert code == 2 and "--augment must be one of none, robust" in err
    code, _, err = run(capsys, "train", data, "--out", tmp_path / "r", *TINY, "--augment-views", "0")
    assert code == 2 and "--augment-views must be >= 1" in err
