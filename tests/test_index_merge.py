"""``vidtune index merge``: shard indexes into one, order-independent, crash-safe, refusing mismatches.

Shard indexes are built with ``--shard I/N`` from real encoded sample clips with timm's tiny
random-init ``test_efficientnet`` (seeded, the same model in every process).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.indexes import TINY, killed_after_vector_file, sample_clips
from tests.indexes import index_content as _content
from vidtune.cli.main import main
from vidtune.errors import IndexStoreError, ModelMismatchError
from vidtune.index import EmbedConfig, build_index, index_info
from vidtune.index.merge import merge_indexes
from vidtune.index.store import VideoIndex
from vidtune.scale import Shard


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return sample_clips(tmp_path_factory, classes=3, per_class=3, seed=5)


@pytest.fixture(scope="module")
def shards(clips, tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    dirs = []
    for i in range(3):
        build_index(root / f"s{i}", [clips], TINY, device="cpu", use_cache=False, shard=Shard(i, 3))
        dirs.append(root / f"s{i}")
    whole = root / "whole"
    build_index(whole, [clips], TINY, device="cpu", use_cache=False)
    return {"dirs": dirs, "whole": whole}


def test_shards_partition_the_videos_and_merge_equals_a_single_index(shards, tmp_path):
    per_shard = [set(_content(d)["videos"]) for d in shards["dirs"]]
    assert sum(len(p) for p in per_shard) == 9 and len(set().union(*per_shard)) == 9  # each video once
    assert all(per_shard)  # 9 videos over 3 shards: none empty here (a fixed content hash split)
    r = merge_indexes(tmp_path / "ab", shards["dirs"])
    assert r["videos"] == 9 and len(r["added"]) == 9 and r["unchanged"] == []
    merged, whole = _content(tmp_path / "ab")["videos"], _content(shards["whole"])["videos"]
    assert set(merged) == set(whole)
    for path, (digest, starts, ends, vecs) in whole.items():
        m = merged[path]
        assert m[0] == digest and m[1] == starts and m[2] == ends
        np.testing.assert_allclose(m[3], vecs, atol=1e-5)
    info = index_info(tmp_path / "ab")
    assert info["model"] == index_info(shards["whole"])["model"] and info["params"] == TINY.params()


def test_merge_is_order_independent_and_idempotent(shards, tmp_path):
    a, b, c = shards["dirs"]
    merge_indexes(tmp_path / "x", [a, b, c])
    merge_indexes(tmp_path / "y", [c, a])
    merge_indexes(tmp_path / "y", [b])  # in two goes, another order
    x, y = _content(tmp_path / "x"), _content(tmp_path / "y")
    assert x["segment_ids"] != [] and set(x["videos"]) == set(y["videos"])
    for path in x["videos"]:
        np.testing.assert_array_equal(x["videos"][path][3], y["videos"][path][3])
    z = tmp_path / "z"
    merge_indexes(z, [c, b, a])
    assert _content(z)["segment_ids"] == x["segment_ids"]  # one go: the very same segment ids
    again = merge_indexes(z, [b, a])
    assert again["added"] == [] and len(again["unchanged"]) == sum(index_info(d)["videos"] for d in (a, b))


def test_merge_refuses_other_models_settings_and_conflicting_content(shards, clips, tmp_path):
    a = shards["dirs"][0]
    other_model = tmp_path / "resnet"
    build_index(other_model, [sorted(clips.rglob("*.mp4"))[0]], EmbedConfig(**{**TINY.to_dict(),
                "backbone": "test_resnet"}), device="cpu", use_cache=False)
    other_params = tmp_path / "window"
    build_index(other_params, [sorted(clips.rglob("*.mp4"))[0]], EmbedConfig(**{**TINY.to_dict(), "window": 1.5}),
                device="cpu", use_cache=False)
    target = tmp_path / "t"
    merge_indexes(target, [a])
    before = _content(target)
    with pytest.raises(ModelMismatchError, match="different models"):
        merge_indexes(target, [other_model])
    with pytest.raises(ModelMismatchError, match="embedding parameters"):
        merge_indexes(target, [other_params])
    with pytest.raises(ModelMismatchError, match="different models"):
        merge_indexes(tmp_path / "new", [a, other_model])
    assert not (tmp_path / "new").exists()  # refused before anything was written
    # the same path with other content in two shards (the file changed between shard runs)
    moved = tmp_path / "clip.mp4"
    files = sorted(clips.rglob("*.mp4"))
    shutil.copy(files[0], moved)
    build_index(tmp_path / "p", [moved], TINY, device="cpu", use_cache=False)
    shutil.copy(files[1], moved)
    build_index(tmp_path / "q", [moved], TINY, device="cpu", use_cache=False)
    with pytest.raises(IndexStoreError, match="different content"):
        merge_indexes(target, [tmp_path / "p", tmp_path / "q"])
    after = _content(target)
    assert after["segment_ids"] == before["segment_ids"]
    with pytest.raises(IndexStoreError, match="target index itself"):
        merge_indexes(target, [target])


def test_killed_merge_leaves_the_target_unchanged_and_a_rerun_completes(shards, tmp_path):
    a, b, c = shards["dirs"]
    target = tmp_path / "t"
    merge_indexes(target, [a])
    before = _content(target)
    proc = killed_after_vector_file(f"""
        from vidtune.index.merge import merge_indexes
        merge_indexes({str(target)!r}, [{str(b)!r}, {str(c)!r}])
    """)
    assert proc.returncode == 9, proc.stderr
    after = _content(target)
    assert after["segment_ids"] == before["segment_ids"] and set(after["videos"]) == set(before["videos"])
    r = merge_indexes(target, [b, c])
    assert r["videos"] == 9 and len(list(target.glob("vectors.*.faiss"))) == 1


def test_cli_merge_json_and_mismatch_exit_code(shards, clips, tmp_path, capsys):
    a, b, _ = shards["dirs"]
    assert main(["index", "merge", str(tmp_path / "m"), str(a), str(b), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["videos"] == index_info(a)["videos"] + index_info(b)["videos"] and res["shards"] == [str(a), str(b)]
    other = tmp_path / "resnet"
    build_index(other, [sorted(clips.rglob("*.mp4"))[0]], EmbedConfig(**{**TINY.to_dict(), "backbone": "test_resnet"}),
                device="cpu", use_cache=False)
    assert main(["index", "merge", str(tmp_path / "m"), str(other), "--json"]) == 2
    captured = capsys.readouterr()
    assert "different models" in json.loads(captured.out)["error"] and "Traceback" not in captured.err


def test_ivfpq_index_trains_when_big_enough_then_searches_removes_and_reopens(tmp_path, monkeypatch):
    from vidtune.index import store
    from vidtune.index.embed import VideoEmbedding, l2n

    monkeypatch.setattr(store, "IVFPQ_MIN_TRAIN", 600)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 64))

    def video(name: str, n: int) -> VideoEmbedding:
        v = l2n(centres[rng.integers(0, 12, n)] + 0.25 * rng.normal(size=(n, 64)))
        return VideoEmbedding(name, "digest-" + name, float(n), np.arange(n, dtype=float), np.arange(n) + 1.0, v,
                              l2n(v.mean(0)))

    videos = [video(f"v{i}", 200) for i in range(4)]
    ix = VideoIndex.create(tmp_path / "ix", "m", {}, {"window": 1.0}, 64, kind="ivfpq")
    with ix.writing() as w:
        w.add(videos[0])
        w.commit()
    assert not store.is_ivf(ix.faiss_index())  # 200 vectors: still exact
    with ix.writing() as w:
        for v in videos[1:]:
            w.add(v)
        w.commit()
    ix.close()
    with VideoIndex.open(tmp_path / "ix") as ix:
        f = ix.faiss_index()
        assert store.is_ivf(f) and f.ntotal == 800 and f.pq.code_size == 8  # 8 bytes a vector instead of 256
        own, _, _ = ix.video_segments(3)  # the third video's segment ids, in time order
        approx = np.stack([f.reconstruct(int(i)) for i in own[:5]])
        assert 0 < np.abs(approx - videos[2].segments[:5]).max() < 0.5  # the codes: close, not exact
        scores, ids = ix.search_segments(videos[2].segments[:50], 10)
        # the codes' candidates re-ranked with the exact vectors (kept in SQLite): each finds itself first
        assert (ids[:, 0] == own[:50]).all() and np.allclose(scores[:, 0], 1.0, atol=1e-5)
        assert (np.diff(scores, axis=1) <= 1e-6).all()
        np.testing.assert_array_equal(ix.vectors(own[:5]), videos[2].segments[:5])  # exact, not decoded
        with ix.writing() as w:
            w.remove(ix.video_by_path("v1"))
            w.add(video("v9", 30))
            w.commit()
        assert ix.faiss_index().ntotal == 630 and ix.info()["videos"] == 4
        assert ix.db.execute("SELECT COUNT(*) FROM exact").fetchone()[0] == 630  # removed with their segments


def _with_words(shards, tmp_path, encoder="fake-sentences", dim=8):
    """Copies of the shard indexes, each given words (one span per video) like --modalities visual,speech."""
    from vidtune.index.text_search import TextIndex

    out = []
    for i, d in enumerate(shards["dirs"]):
        copy = tmp_path / f"w{i}"
        shutil.copytree(d, copy)
        with VideoIndex.open(copy) as ix, TextIndex.create(copy, ("speech",), encoder, dim) as tix:
            for row in ix.videos():
                vec = np.random.default_rng(len(row.path)).standard_normal((1, dim)).astype(np.float32)
                tix.replace_video(row.path, row.digest, 1.5, "en", [("speech", 0.2, 1.0, f"words of {row.path}")], vec)
        out.append(copy)
    return out


def _words(ix_dir) -> dict:
    from vidtune.index.text_search import TextIndex

    with TextIndex.open(ix_dir) as tix:
        rows = tix.db.execute('SELECT path, modality, start, "end", text, vector FROM spans ORDER BY path').fetchall()
        return {"rows": rows, "digests": tix.digests(), "modalities": tix.modalities}


def test_merge_carries_the_words_of_shards(shards, tmp_path):
    dirs = _with_words(shards, tmp_path)
    a = merge_indexes(tmp_path / "a", dirs)
    b = merge_indexes(tmp_path / "b", list(reversed(dirs)))
    assert a["words"]["videos_added"] == a["videos"] == 9 and a["words"]["spans"] == 9 and b["words"] == a["words"]
    got = _words(tmp_path / "a")
    assert got == _words(tmp_path / "b") and got["modalities"] == ("speech",)
    expected = sorted(r for d in dirs for r in _words(d)["rows"])
    assert sorted(got["rows"]) == expected  # every span with its vector, nothing lost or doubled
    again = merge_indexes(tmp_path / "a", dirs)  # idempotent
    assert again["words"] == {"videos_added": 0, "videos_unchanged": 9, "spans": 9}


def test_merge_refuses_mixed_or_mismatched_words(shards, tmp_path):
    dirs = _with_words(shards, tmp_path)
    with pytest.raises(IndexStoreError, match="no words"):
        merge_indexes(tmp_path / "t1", [dirs[0], shards["dirs"][1]])
    assert not (tmp_path / "t1").exists()  # refused before anything was written
    other = _with_words(shards, tmp_path / "other", encoder="another-model")
    with pytest.raises(ModelMismatchError, match="encoder"):
        merge_indexes(tmp_path / "t2", [dirs[0], other[1]])
    assert not (tmp_path / "t2").exists()
