"""vidtune suggest / vidtune mistakes: pools, cold-start coverage, uncertainty with a run, wrong labels."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests import videos
from tests.test_cli import run, run_json
from vidtune.cli.main import main
from vidtune.data.manifest import load_dataset
from vidtune.data.sample import write_sample_dataset
from vidtune.labels.pool import PoolItem, clip_spans, held_spans, is_held, load_pool
from vidtune.labels.suggest import suggest, uncertainty, weighted_k_center

TINY_BB = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "3", "--workers", "0"]
TINY_TRAIN = [*TINY_BB, "--epochs", "2", "--min-steps", "5", "--views", "1", "--augment", "none"]
KINDS = {"a": 12, "b": 2, "c": 2, "d": 2, "e": 2}  # one source is 60% of the pool


def kind(path) -> str:
    return Path(path).name[0]


@pytest.fixture(scope="module")
def imbalanced_pool(tmp_path_factory) -> Path:
    """Five kinds of footage (a block pattern and colour each, with per-clip noise); ``a`` is 60% of it."""
    out = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    base = {k: rng.integers(0, 255, (8, 8, 3)) for k in KINDS}
    for k, n in KINDS.items():
        for i in range(n):
            frames = []
            for t in range(6):
                img = np.kron(base[k], np.ones((8, 8, 1))) + rng.normal(0, 12, (64, 64, 3))
                frames.append(np.clip(np.roll(img, t, axis=1), 0, 255).astype(np.uint8))
            videos.write_video(out / f"{k}_{i:02d}.mp4", np.stack(frames), fps=6)
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    write_sample_dataset(root / "data", per_class=10, seconds=1.0, fps=6, size=(96, 80), seed=0)
    return root / "data"


# -- pools ------------------------------------------------------------------------------------------------
def test_clip_spans_cut_long_videos():
    assert clip_spans(2.5, 2.0) == [(0.0, 2.5)]  # up to 1.5 clips: one clip
    assert clip_spans(7.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (5.0, 7.0)]
    assert clip_spans(6.4, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]  # a 0.4 s tail is left out


def test_load_pool_sources(tmp_path):
    (tmp_path / "v").mkdir()
    long = videos.write_indexed_video(tmp_path / "v" / "long.mp4", 60, fps=10)  # 6 s
    short = videos.write_indexed_video(tmp_path / "v" / "short.mp4", 12, fps=10)
    videos.write_random_bytes(tmp_path / "v" / "broken.mp4")
    skipped: list[dict] = []
    pool = load_pool(tmp_path / "v", skipped=skipped)
    assert [(Path(p.path).name, p.start, p.end) for p in pool] == [
        ("long.mp4", 0.0, 2.0), ("long.mp4", 2.0, 4.0), ("long.mp4", 4.0, 6.0), ("short.mp4", None, None)]
    assert [Path(s["path"]).name for s in skipped] == ["broken.mp4"] and skipped[0]["reason"]
    assert len(load_pool([long], clip_seconds=3.0)) == 2  # a run's clip length
    # a manifest without a label column; segments honoured, relative paths, repeats once
    m = tmp_path / "pool.csv"
    m.write_text("path,start,end\nv/long.mp4,1,2.5\nv/long.mp4,1,2.5\nv/short.mp4,,\n")
    pool = load_pool(m)
    assert [(p.path, p.start, p.end) for p in pool] == [(str(long), 1.0, 2.5), (str(short), None, None)]
    assert pool[0].key == f"{long}#1000-2500" and pool[1].key == str(short)
    j = tmp_path / "pool.jsonl"
    j.write_text(json.dumps({"path": "v/short.mp4", "label": "x"}) + "\n")
    assert load_pool(j) == [PoolItem(str(short))]


def test_held_spans_match_clips_and_whole_files(tmp_path):
    held = held_spans([PoolItem("/x/a.mp4", 0.0, 2.0), PoolItem("/x/b.mp4")])
    assert is_held(PoolItem("/x/a.mp4", 0.0, 2.0), held)
    assert is_held(PoolItem("/x/a.mp4", 0.5, 2.5), held)  # mostly the labelled span
    assert not is_held(PoolItem("/x/a.mp4", 2.0, 4.0), held)
    assert is_held(PoolItem("/x/b.mp4", 4.0, 6.0), held)  # the whole file is labelled
    assert not is_held(PoolItem("/x/a.mp4"), held)  # a segment does not label its whole file


def test_uncertainty_and_weighted_k_center():
    p = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0]])
    u = uncertainty(p)
    assert u.argmax() == 2 and u.argmin() == 0
    ml = uncertainty(np.array([[0.9, 0.1], [0.55, 0.1]]), multilabel=True, thresholds=[0.5, 0.5])
    assert ml[1] > ml[0]
    # two tight clusters, one with 9 points: the second pick is the other cluster despite its size
    x = np.array([[1.0, 0.0]] * 9 + [[0.0, 1.0]])
    x = x + np.random.default_rng(0).normal(0, 0.01, x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order, scores = weighted_k_center(x, np.ones(len(x)), 2)
    assert 9 in order and scores[0] >= scores[1]
    # an anchor (a labelled clip) in the small cluster: the picks stay in the big one
    order, _ = weighted_k_center(x, np.ones(len(x)), 1, anchors=x[9:])
    assert order[0] != 9


# -- suggest ----------------------------------------------------------------------------------------------
def test_cold_start_covers_every_kind_of_footage(imbalanced_pool):
    picks = suggest(load_pool(imbalanced_pool), 5, backbone="test_efficientnet", pretrained=False, frames=3,
                    workers=0)
    assert len(picks) == 5
    assert sorted(kind(s.path) for s in picks) == sorted(KINDS)  # every kind in the first 5, not 3 of "a"
    assert all(s.predicted is None and s.confidence is None for s in picks)


def test_suggest_cli_json_labeled_and_out(capsys, imbalanced_pool, tmp_path):
    labeled = tmp_path / "labeled.csv"
    done = sorted(imbalanced_pool.glob("b_*.mp4")) + sorted(imbalanced_pool.glob("a_0*.mp4"))
    labeled.write_text("path,label\n" + "".join(f"{p},x\n" for p in done))
    out = tmp_path / "next.csv"
    code, res = run_json(capsys, "suggest", imbalanced_pool, "--k", "40", "--labeled", labeled, "--out", out,
                         *TINY_BB)
    assert code == 0
    rows = res["results"]
    assert len(rows) == sum(KINDS.values()) - len(done)  # all the rest, fewer than asked for
    assert all(set(r) == {"path", "start", "end", "score", "predicted", "confidence"} for r in rows)
    assert not {r["path"] for r in rows} & {str(p) for p in done}  # never what is labelled already
    assert "b" not in {kind(r["path"]) for r in rows}
    assert {kind(r["path"]) for r in rows[:3]} == {"c", "d", "e"}  # the kinds nothing labelled is near
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert [str((out.parent / r["path"]).resolve()) for r in written] == [r["path"] for r in rows]
    assert all(r["label"] == "" for r in written)


def test_suggest_with_run_and_labelled_manifest_trains(capsys, sample, tmp_path):
    code, _ = run_json(capsys, "train", sample, "--out", tmp_path / "run", *TINY_TRAIN)
    assert code == 0
    code, res = run_json(capsys, "suggest", sample, "-k", "6", "--run", tmp_path / "run", "--out",
                         tmp_path / "next.csv", "--workers", "0")
    assert code == 0 and len(res["results"]) == 6
    labels = {it.label for it in load_dataset(sample)}
    for r in res["results"]:
        assert r["predicted"] in labels and 0 < r["confidence"] <= 1 and r["score"] >= 0
    # fill in the labels (here: the folder names) and train on the written manifest
    m = tmp_path / "next.csv"
    with open(m, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = Path(r["path"]).parent.name
    with open(m, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert len(load_dataset(m)) == 6


def test_suggest_bad_input_exits_2(capsys, tmp_path, imbalanced_pool):
    code, out, err = run(capsys, "suggest", tmp_path / "missing", "--k", "3")
    assert code == 2 and "pool not found" in err and "Traceback" not in err
    (tmp_path / "dir.csv").mkdir()
    code, out, err = run(capsys, "suggest", imbalanced_pool, "--k", "3", "--out", tmp_path / "dir.csv", *TINY_BB)
    assert code == 2 and "folder" in err
    code, out, err = run(capsys, "suggest", imbalanced_pool, "--k", "3", "--run", tmp_path / "norun")
    assert code == 2 and "run folder not found" in err
    with pytest.raises(SystemExit) as exc:
        main(["suggest", str(imbalanced_pool), "--k", "0"])
    assert exc.value.code == 2
    assert "whole number >= 1" in capsys.readouterr().err


# -- mistakes ---------------------------------------------------------------------------------------------
def _noisy_manifest(sample: Path, path: Path, n_flip: int, seed: int = 0) -> set[str]:
    items = load_dataset(sample)
    labels = sorted({it.label for it in items})
    rng = random.Random(seed)
    flip = set(rng.sample(range(len(items)), n_flip))
    rows = []
    for i, it in enumerate(items):
        lab = rng.choice([x for x in labels if x != it.label]) if i in flip else it.label
        rows.append([str(it.path), lab])
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return {str(items[i].path) for i in flip}


def test_mistakes_finds_injected_flips(capsys, sample, tmp_path):
    """The real backbone (the random tiny one has no features worth checking labels with)."""
    flipped = _noisy_manifest(sample, tmp_path / "noisy.csv", 4)
    out = tmp_path / "checked.csv"
    code, res = run_json(capsys, "mistakes", tmp_path / "noisy.csv", "--frames", "3", "--workers", "0",
                         "--top", "4", "--out", out)
    assert code == 0
    assert set(res) == {"results", "estimated_noise"} and 0 < res["estimated_noise"] < 0.5
    top = res["results"]
    assert all(set(r) == {"path", "start", "end", "label", "suggested", "score"} for r in top)
    assert len({r["path"] for r in top} & flipped) >= 3  # precision among the top n = flipped
    assert [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)
    for r in top:
        if r["path"] in flipped:
            assert r["suggested"] == Path(r["path"]).parent.name  # the true class
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and sum(bool(r["suggested"]) for r in rows) == 4
    back = load_dataset(out)  # what `vidtune train` reads: the same clips and labels
    assert sorted((str(it.path), it.label) for it in back) == sorted(
        (str(it.path), it.label) for it in load_dataset(tmp_path / "noisy.csv"))
    # multi-label: a second label per clip (round / angular), two of them flipped
    items = load_dataset(sample)
    shape = {"ball": "round", "ring": "round", "stripes": "angular", "checkerboard": "angular"}
    ml = tmp_path / "ml.csv"
    wrong = {str(items[0].path), str(items[-1].path)}
    with open(ml, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for it in items:
            s = shape[it.label]
            if str(it.path) in wrong:
                s = "angular" if s == "round" else "round"
            w.writerow([str(it.path), f"{it.label}|{s}"])
    code, res = run_json(capsys, "mistakes", ml, "--frames", "3", "--workers", "0", "--top", "4")
    assert code == 0
    assert wrong <= {r["path"] for r in res["results"]}
    assert all("|" in r["label"] for r in res["results"])


def test_mistakes_bad_input_exits_2(capsys, sample, tmp_path):
    code, out, err = run(capsys, "mistakes", tmp_path / "nothing", *TINY_BB)
    assert code == 2 and "dataset not found" in err
    one = tmp_path / "one.csv"
    one.write_text("path,label\n" + "".join(f"{p},ball\n" for p in sorted((sample / "ball").iterdir())))
    code, out, err = run(capsys, "mistakes", one, *TINY_BB)
    assert code == 2 and "two or more" in err
    code, out, err = run(capsys, "mistakes", sample, "--folds", "1", *TINY_BB)
    assert code == 2 and "--folds" in err
    code, out, err = run(capsys, "mistakes", sample, "--out", tmp_path / "x.txt", *TINY_BB)
    assert code == 2 and ".csv" in err


def test_group_column_keeps_sources_in_one_fold(sample, tmp_path):
    from vidtune.labels.mistakes import find_mistakes

    items = load_dataset(sample)
    m = tmp_path / "grouped.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "group"])
        for i, it in enumerate(items):
            w.writerow([str(it.path), it.label, f"g{i % 5}"])
    rep = find_mistakes(m, backbone="test_efficientnet", pretrained=False, frames=3, workers=0, folds=10)
    assert rep.folds == 5  # no more folds than groups
    assert len(rep.ranked) == len(items)
    assert Counter(r.label for r in rep.ranked) == Counter(it.label for it in items)
