"""``--engine ray``: embed, index and tag through a Ray Dataset and an actor pool, on one local Ray
instance for the whole module (``ray.init(num_cpus=2)``; start-up costs seconds, so it is shared)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is the optional extra vidtune[ray]")

from tests.indexes import TINY, index_content, sample_clips  # noqa: E402
from vidtune.cli.main import main  # noqa: E402
from vidtune.index import build_index  # noqa: E402

TINY_ARGS = ["--backbone", "test_efficientnet", "--no-pretrained", "--window", "1", "--stride", "0.5", "--fps", "4",
             "--tta", "none", "--device", "cpu", "--no-cache", "--json", "-q"]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp),
             object_store_memory=200 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tests.videos import write_random_bytes

    root = sample_clips(tmp_path_factory, classes=2, per_class=3, seed=4)
    write_random_bytes(root / "ball" / "corrupt.mp4")  # skipped and reported, never fatal
    return root


def _vectors(ix_dir) -> dict:
    return index_content(ix_dir)["videos"]


def test_ray_index_equals_the_local_index(local_ray, clips, tmp_path, capsys):
    local = build_index(tmp_path / "local", [clips], TINY, device="cpu", use_cache=False)
    assert main(["index", "build", str(tmp_path / "ray"), str(clips), *TINY_ARGS, "--engine", "ray",
                 "--ray-workers", "2"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote["added"] == local["added"] and len(remote["added"]) == 6
    assert [s["path"] for s in remote["skipped"]] == [str(clips / "ball" / "corrupt.mp4")]
    a, b = _vectors(tmp_path / "local"), _vectors(tmp_path / "ray")
    assert set(a) == set(b)
    for path in a:
        assert a[path][:3] == b[path][:3]
        np.testing.assert_allclose(a[path][3], b[path][3], atol=1e-5)


def test_tag_with_the_ray_engine_equals_local(local_ray, clips, tmp_path, capsys):
    # tag: a tiny run, then the same timelines from the actor pool as from this process
    run = tmp_path / "run"
    train_dir = tmp_path / "train"
    shutil.copytree(clips, train_dir, ignore=shutil.ignore_patterns("corrupt.mp4"))
    assert main(["train", str(train_dir), "--out", str(run), "--backbone", "test_efficientnet", "--no-pretrained",
                 "--frames", "2", "--views", "1", "--epochs", "2", "--workers", "0", "--augment", "none",
                 "--strategy", "linear", "--device", "cpu", "--no-cache", "--json", "-q"]) == 0
    capsys.readouterr()
    common = ["tag", str(run), str(clips), "--device", "cpu", "--json", "-q"]
    assert main([*common, "--engine", "ray", "--ray-workers", "2"]) == 1  # the corrupt file is reported
    remote = json.loads(capsys.readouterr().out)["results"]
    assert main(common) == 1
    here = json.loads(capsys.readouterr().out)["results"]
    assert remote == here and sum("error" in r for r in here) == 1


def test_address_needs_the_ray_engine(clips, tmp_path, capsys):
    assert main(["embed", str(clips), "--out", str(tmp_path / "o"), *TINY_ARGS, "--address", "auto"]) == 2
    assert "--address needs --engine ray" in capsys.readouterr().err
