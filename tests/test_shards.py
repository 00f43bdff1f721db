"""``--shard I/N``: a deterministic content-hash split on embed, index build/add, tag and train feature
extraction; every input in exactly one shard; a killed shard reruns to completion."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.indexes import TINY, sample_clips
from vidtune.cli.main import main
from vidtune.errors import ConfigError
from vidtune.index import add_to_index, build_index, index_info
from vidtune.scale.shards import Shard, partition, select_shard, shard_key

TINY_EMBED = ["--backbone", "test_efficientnet", "--no-pretrained", "--window", "1", "--stride", "0.5", "--fps", "4",
              "--tta", "none", "--device", "cpu"]
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return sample_clips(tmp_path_factory, classes=2, per_class=4, seed=11)


def test_shard_parsing_and_errors(capsys, tmp_path):
    assert Shard.parse("2/5") == Shard(2, 5) and str(Shard.parse(" 0 / 1 ")) == "0/1"
    for bad in ("5/5", "-1/3", "1/0", "a/b", "3"):
        with pytest.raises(ConfigError, match="shard"):
            Shard.parse(bad)
    with pytest.raises(ConfigError, match="0-based"):
        Shard.parse("4/4")
    code = None
    with contextlib.suppress(SystemExit) as _:
        try:
            main(["embed", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "2/2"])
        except SystemExit as exc:
            code = exc.code
    assert code == 2 and "numbered 0 to 1" in capsys.readouterr().err


def test_every_input_lands_in_exactly_one_shard_for_any_n(tmp_path):
    files = []
    for i in range(40):
        p = tmp_path / "a" / f"f{i:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(f"content {i}".encode() * (i + 1))
        files.append(p)
    missing = tmp_path / "a" / "missing.mp4"  # unreadable: assigned by path, so one shard reports it
    inputs = files + [missing]
    for n in range(1, 9):
        parts = [select_shard(inputs, Shard(i, n)) for i in range(n)]
        flat = [p for part in parts for p in part]
        assert sorted(flat) == sorted(inputs) and len(flat) == len(inputs), n
        assert parts == partition(inputs, n)
        if n == 4:
            assert min(len(p) for p in parts) >= 4  # a uniform split, not everything in one shard
    # the split follows the content: the same files elsewhere, in another order, land in the same shards
    moved = tmp_path / "b"
    shutil.copytree(tmp_path / "a", moved)
    for i in range(3):
        here = {p.name for p in select_shard(inputs, Shard(i, 3))}
        there = {p.name for p in select_shard(sorted(moved.glob("*.bin"), reverse=True), Shard(i, 3))}
        assert there == here - {"missing.mp4"}
    assert shard_key(missing).startswith("path:") and shard_key(files[0]).startswith("content:")
    # rows of one file (segments of a long video) stay together
    rows = [(files[k % 5], k) for k in range(20)]
    for part in partition(rows, 3, path_of=lambda r: r[0]):
        assert all(r[0] == part[0][0] for r in part[1:] if r[0] == part[0][0])
        assert len({r[0] for r in part}) * 4 == len(part)


class _Interrupt:
    """A progress reporter that stops the work (Ctrl-C) after ``after`` videos of ``seconds`` each (progress
    counts seconds of video)."""

    def __init__(self, after: int, seconds: float):
        self.after, self.seconds = after, seconds

    @contextlib.contextmanager
    def task(self, description, total, unit="videos"):
        outer = self

        class T:
            done = 0.0

            def advance(self, n=1):
                self.update(completed=T.done + n)

            def update(self, **fields):
                T.done = fields.get("completed", T.done)
                if T.done >= outer.after * outer.seconds - 1e-6:
                    raise KeyboardInterrupt

        yield T()


def _clip_seconds(folder) -> float:
    from vidtune.io import durations
    from vidtune.runs.inference import expand_video_args

    secs = set(round(d, 6) for d in durations(expand_video_args([folder])))
    assert len(secs) == 1  # every sample clip lasts as long
    return secs.pop()


def test_a_killed_shard_reruns_to_completion_reusing_the_cached_work(clips, tmp_path, monkeypatch):
    from vidtune.index import embed as embed_mod

    cache = tmp_path / "cache"
    shard = Shard(0, 2)
    whole = tmp_path / "whole"
    build_index(whole, [clips], TINY, device="cpu", use_cache=False, shard=shard)
    mine = index_info(whole)["videos"]
    assert 2 <= mine <= 6
    ix = tmp_path / "ix"
    with pytest.raises(KeyboardInterrupt):
        build_index(ix, [clips], TINY, device="cpu", cache_dir=cache, shard=shard, progress=_Interrupt(2, _clip_seconds(clips)))
    assert index_info(ix)["videos"] == 0  # nothing half-written: the index is readable and empty
    frames = []
    real = embed_mod.Embedder.embed_frames
    monkeypatch.setattr(embed_mod.Embedder, "embed_frames",
                        lambda self, f, *a, **k: frames.append(len(f)) or real(self, f, *a, **k))
    r = add_to_index(ix, [clips], device="cpu", cache_dir=cache, shard=shard)
    assert r["shard"] == "0/2" and r["videos"] == mine and len(r["added"]) == mine
    assert len(frames) == mine - 2  # the two videos embedded before the interruption came from the cache
    with_cache, without = index_info(ix, list_videos=True), index_info(whole, list_videos=True)
    assert with_cache["video_list"] == without["video_list"] and with_cache["segments"] == without["segments"]
    again = add_to_index(ix, [clips], device="cpu", cache_dir=cache, shard=shard)
    assert again["added"] == [] and len(again["unchanged"]) == mine


def test_embed_shards_together_equal_one_run(clips, tmp_path, capsys):
    outs = []
    for i in range(3):
        assert main(["embed", str(clips), "--out", str(tmp_path / f"e{i}"), "--shard", f"{i}/3", *TINY_EMBED,
                     "--no-cache", "--json", "-q"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["shard"] == f"{i}/3"
        outs.append(tmp_path / f"e{i}")
    assert main(["embed", str(clips), "--out", str(tmp_path / "all"), *TINY_EMBED, "--no-cache", "--json", "-q"]) == 0
    capsys.readouterr()

    def load(d):
        meta = json.loads((d / "embeddings.json").read_text())
        vecs = np.load(d / "videos.npy")
        return {v["path"]: vecs[k] for k, v in enumerate(meta["videos"])}

    whole = load(tmp_path / "all")
    parts = [load(d) for d in outs]
    assert sum(len(p) for p in parts) == len(whole) == 8
    for p in parts:
        for path, vec in p.items():
            np.testing.assert_allclose(vec, whole[path], atol=1e-5)


TRAIN = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "2", "--views", "1", "--epochs", "2",
         "--workers", "0", "--strategy", "linear", "--augment-views", "1", "--device", "cpu"]


def test_train_shards_fill_the_cache_then_training_decodes_nothing_and_tag_shards(clips, tmp_path, capsys,
                                                                                  monkeypatch):
    from vidtune.runs import features

    cache = str(tmp_path / "cache")
    for i in range(2):
        assert main(["train", str(clips), "--out", str(tmp_path / "run"), *TRAIN, "--cache-dir", cache,
                     "--shard", f"{i}/2", "--json", "-q"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["shard"] == f"{i}/2" and res["skipped"] == []
    assert not (tmp_path / "run" / "model.safetensors").exists()  # the shards only extract
    decoded = []
    real = features.ClipDataset.__getitem__
    monkeypatch.setattr(features.ClipDataset, "__getitem__", lambda self, k: decoded.append(k) or real(self, k))
    assert main(["train", str(clips), "--out", str(tmp_path / "run"), *TRAIN, "--cache-dir", cache, "--json",
                 "-q"]) == 0
    json.loads(capsys.readouterr().out)
    assert decoded == []  # every clip's features (clean and corrupted) came from the shards
    monkeypatch.setattr(features.ClipDataset, "__getitem__", real)

    # tag: two shards, one WebVTT per video; a rerun skips the videos already done
    vtt = tmp_path / "vtt"
    done = []
    for i in range(2):
        code = main(["tag", str(tmp_path / "run"), str(clips), "--shard", f"{i}/2", "--format", "vtt", "--out",
                     str(vtt), "--device", "cpu", "--json", "-q"])
        assert code == 0
        res = json.loads(capsys.readouterr().out)
        assert res["shard"] == f"{i}/2" and res["done"] == []
        done.append({Path(r["path"]).stem for r in res["results"]})
    assert not (done[0] & done[1]) and len(done[0] | done[1]) == 8
    assert {p.stem for p in vtt.glob("*.vtt")} == done[0] | done[1]
    assert main(["tag", str(tmp_path / "run"), str(clips), "--shard", "1/2", "--format", "vtt", "--out", str(vtt),
                 "--device", "cpu", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["results"] == [] and {Path(p).stem for p in res["done"]} == done[1]
