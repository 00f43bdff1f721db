"""Multi-label manifests, metrics (AP, mAP, F1 at tuned thresholds), and the train -> eval -> predict round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.test_cli import TINY, run, run_json
from vidtune.data.manifest import is_multilabel, item_labels, load_dataset, parse_labels
from vidtune.data.sample import write_sample_dataset
from vidtune.data.splits import stratified_split
from vidtune.errors import DatasetError
from vidtune.runs.metrics import average_precision, best_f1_threshold, multilabel_metrics, tune_thresholds
from vidtune.train.task import Task as _Task


# -- parsing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,labels", [
    ("a|b", ("a", "b")),
    (" a | b ", ("a", "b")),
    ("a|b|a| b", ("a", "b")),  # repeats dropped, first order kept
    ("b|a", ("b", "a")),
    ("猫|chien blanc|猫", ("猫", "chien blanc")),
    ("dog, small|cat", ("dog, small", "cat")),
    ("", ()),
    ("|", ()),
    (" | |x", ("x",)),
])
def test_parse_labels(text, labels):
    assert parse_labels(text) == labels


def test_multilabel_csv_manifest(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("path,label\n"
                 "a.mp4, dog | cat \n"
                 "b.mp4,猫\n"
                 "c.mp4,\n"  # no positive label
                 "a.mp4,cat|dog\n"  # the same set: a duplicate row, not a conflict
                 "d.mp4,bg\n"
                 "e.mp4,\"bg|dog, small\"\n", encoding="utf-8")
    items = load_dataset(p)
    assert [(it.path.name, it.label) for it in items] == [
        ("a.mp4", "dog|cat"), ("b.mp4", "猫"), ("c.mp4", ""), ("d.mp4", "bg"), ("e.mp4", "bg|dog, small")]
    assert is_multilabel(items)
    assert [item_labels(it, background="bg") for it in items] == [("dog", "cat"), ("猫",), (), (), ("dog, small",)]
    p.write_text("path,label\na.mp4,dog|cat\na.mp4,dog\n")
    with pytest.raises(DatasetError, match="two labels"):
        load_dataset(p)


def test_empty_label_only_in_a_multilabel_manifest(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("path,label\na.mp4,x\nb.mp4,\n")
    with pytest.raises(DatasetError, match=r"m.csv:3: empty label"):
        load_dataset(p)
    assert [it.label for it in load_dataset(p, multilabel=True)] == ["x", ""]
    j = tmp_path / "m.jsonl"
    j.write_text('{"path": "a.mp4", "label": ["x", "y", "x"]}\n{"path": "b.mp4", "label": []}\n')
    assert [it.label for it in load_dataset(j)] == ["x|y", ""]
    single = tmp_path / "s.csv"
    single.write_text("path,label\na.mp4,x\nb.mp4,y\n")
    assert not is_multilabel(load_dataset(single))


def test_multilabel_split_reaches_every_label(tmp_path):
    rows = ["path,label"]
    rows += [f"a{i}.mp4,a|common" for i in range(4)]
    rows += [f"b{i}.mp4,b|common" for i in range(4)]
    rows += [f"c{i}.mp4,c" for i in range(3)]
    rows += [f"n{i}.mp4," for i in range(3)]
    p = tmp_path / "m.csv"
    p.write_text("\n".join(rows) + "\n")
    items = load_dataset(p)
    s = stratified_split(items, 0.25, seed=0)
    val_labels = {lab for it in s["val"] for lab in parse_labels(it.label)}
    assert {"a", "b", "c", "common"} <= val_labels
    assert any(not it.label for it in s["val"])  # the no-label group too
    assert len(s["train"]) + len(s["val"]) == len(items)
    assert [it.path for it in s["val"]] == [it.path for it in stratified_split(items, 0.25, seed=0)["val"]]


# -- metrics ---------------------------------------------------------------------------------------
def test_average_precision_by_hand():
    s = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    t = torch.tensor([1, 0, 1, 0, 0, 1])
    # precision at each positive: 1/1, 2/3, 3/6
    assert math.isclose(average_precision(s, t), (1 + 2 / 3 + 3 / 6) / 3)
    # tied scores enter together (scikit-learn's definition): P=1/2 at R=1/2, then P=2/3 at R=1
    assert math.isclose(average_precision(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 0, 1])),
                        0.5 * 0.5 + 0.5 * 2 / 3)
    assert average_precision(torch.tensor([0.3, 0.2]), torch.tensor([1, 1])) == 1.0
    assert math.isnan(average_precision(torch.tensor([0.3, 0.2]), torch.tensor([0, 0])))


def test_best_f1_threshold_by_hand():
    s = torch.tensor([0.9, 0.8, 0.3, 0.1])
    t = torch.tensor([1, 1, 0, 1])
    # top 2: F1 = 2*2/(2+3) = 0.8; all 4: 2*3/(4+3) = 0.857 -> predict everything (threshold at the lowest score)
    thr, f1 = best_f1_threshold(s, t)
    assert math.isclose(f1, 6 / 7) and math.isclose(thr, 0.1, abs_tol=1e-7)
    thr, f1 = best_f1_threshold(torch.tensor([0.9, 0.6, 0.4, 0.1]), torch.tensor([1, 1, 0, 0]))
    assert f1 == 1.0 and math.isclose(thr, 0.5, abs_tol=1e-7)  # midway between the last positive and first negative
    assert best_f1_threshold(s, torch.zeros(4)) == (0.5, 0.0)  # no positive: the default


def test_multilabel_metrics_by_hand():
    probs = torch.tensor([[0.9, 0.2, 0.6],
                          [0.3, 0.8, 0.1],
                          [0.6, 0.7, 0.2],
                          [0.1, 0.4, 0.3]])
    y = torch.tensor([[1, 0, 0],
                      [0, 1, 0],
                      [1, 1, 0],
                      [0, 1, 0]], dtype=torch.float32)
    m = multilabel_metrics(torch.logit(probs), y, ["a", "b", "c"], thresholds=[0.5, 0.5, 0.5])
    # a: scores of positives 0.9, 0.6 rank first -> AP 1. b: ranking 0.8+, 0.7+, 0.4+, 0.2- -> AP 1.
    # c: no positive -> AP undefined, left out of mAP and macro F1.
    assert m["per_class_ap"] == {"a": 1.0, "b": 1.0, "c": None} and m["mAP"] == 1.0
    # predictions at 0.5: a {0, 2} (tp 2), b {1, 2} (tp 2, misses row 3), c {0} (fp 1)
    assert m["per_class"]["b"]["recall"] == 2 / 3 and m["per_class"]["c"]["precision"] == 0.0
    tp, fp, fn = 4, 1, 1
    assert math.isclose(m["f1_micro"], 2 * tp / (2 * tp + fp + fn))
    assert math.isclose(m["f1_macro"], (1.0 + 2 * (1 * 2 / 3) / (1 + 2 / 3)) / 2)
    assert m["top1"] == 1.0 and m["exact_match"] == 0.5  # rows 1 and 2 exactly right
    # tuned thresholds reach F1 1 for a and b; c keeps 0.5
    thr = tune_thresholds(probs, y)
    assert thr[2] == 0.5 and math.isclose(thr[1], 0.3, abs_tol=1e-6)
    tuned = multilabel_metrics(torch.logit(probs), y, ["a", "b", "c"], thresholds=thr)
    assert tuned["per_class"]["a"]["f1"] == tuned["per_class"]["b"]["f1"] == 1.0 and tuned["f1_macro"] == 1.0


def test_task_targets_pos_weight_and_balanced_order():
    from vidtune.data.manifest import VideoItem

    items = [VideoItem(f"{i}.mp4", lab) for i, lab in enumerate(["a|b", "a", "a", "", "bg", "b|bg"])]
    task = _Task(True, ["a", "b"], "bg", 0.1)
    y = task.targets(items)
    assert y.tolist() == [[1, 1], [1, 0], [1, 0], [0, 0], [0, 0], [0, 1]]
    assert task.weights(y).tolist() == [1.0, 2.0]  # negatives / positives per class
    loss = task.loss(torch.zeros(6, 2), y, task.weights(y))
    assert math.isclose(float(loss), math.log(2) * (3 * 1 + 3 + 2 * 2 + 4) / 12, rel_tol=1e-6)
    order = task.epoch_order(y, "sampler", torch.Generator().manual_seed(0))
    assert len(order) == 6 and order.max() < 6
    assert task.hits(torch.tensor([[2.0, 1.0], [0.0, 1.0], [0.0, 0.0]]), y[:3]) == (2, 3)


# -- round trip --------------------------------------------------------------------------------------
def _manifest(folder, path):
    """ball -> ball|round, ring -> ring|round, checkerboard -> checkerboard, stripes -> background."""
    extra = {"ball": "|round", "ring": "|round", "checkerboard": ""}
    rows = ["path,label"]
    for clip in sorted(folder.rglob("*.mp4")):
        cls = clip.parent.name
        rows.append(f"{clip},{cls + extra[cls] if cls in extra else 'nothing'}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_multilabel_round_trip(capsys, tmp_path):
    """Real backbone (a random tiny one learns nothing in a few epochs): sigmoid head, tuned thresholds
    saved, several labels predicted per clip, background rows with no label."""
    write_sample_dataset(tmp_path / "train", per_class=5, seconds=1.5, fps=8, size=(112, 96), seed=0)
    write_sample_dataset(tmp_path / "test", per_class=2, seconds=1.5, fps=8, size=(112, 96), seed=1)
    train_csv = _manifest(tmp_path / "train", tmp_path / "train.csv")
    test_csv = _manifest(tmp_path / "test", tmp_path / "test.csv")
    run_dir = tmp_path / "run"
    code, res = run_json(capsys, "train", train_csv, "--out", run_dir, "--frames", "2", "--views", "1",
                         "--epochs", "30", "--workers", "1", "--background", "nothing")
    assert code == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"] == "multilabel" and config["background"] == "nothing"
    assert config["labels"] == ["ball", "checkerboard", "ring", "round"]
    assert len(config["thresholds"]) == 4 and all(0 < t < 1 for t in config["thresholds"])
    val = res["val"]
    assert set(val) >= {"mAP", "per_class_ap", "f1_micro", "f1_macro", "per_class", "n"}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val"]["mAP"] == val["mAP"] and "val_map" in (run_dir / "history.csv").read_text()
    assert not (run_dir / "confusion_matrix.png").exists()

    code, ev = run_json(capsys, "eval", run_dir, test_csv)
    assert code == 0 and ev["task"] == "multilabel" and ev["n"] == 8
    assert ev["mAP"] >= 0.8 and ev["f1_micro"] >= 0.7, ev
    assert ev["thresholds"] == dict(zip(config["labels"], config["thresholds"]))

    balls = sorted((tmp_path / "test" / "ball").glob("*.mp4"))
    stripes = sorted((tmp_path / "test" / "stripes").glob("*.mp4"))
    code, pred = run_json(capsys, "predict", run_dir, *balls, *stripes, "-k", "2")
    assert code == 0
    results = pred["results"]
    for r in results:
        assert len(r["predictions"]) == 2 and all(0 <= p["score"] <= 1 for p in r["predictions"])
        chosen = {p["label"]: p["score"] for p in r["predictions"]}
        assert all(config["thresholds"][config["labels"].index(lab)] <= chosen.get(lab, 1) for lab in r["labels"])
    assert any({"ball", "round"} <= set(r["labels"]) for r in results[:2])  # several labels for one clip
    assert all("ball" not in r["labels"] for r in results[2:])

    code, out, _ = run(capsys, "predict", run_dir, balls[0])
    assert code == 0 and "multi-label" in out


def test_background_and_task_options(capsys, tmp_path):
    data = tmp_path / "data"
    write_sample_dataset(data, classes=2, per_class=3, seconds=1.0, fps=6, size=(64, 48), seed=0)
    code, _, err = run(capsys, "train", data, "--out", tmp_path / "r0", *TINY, "--background", "nope")
    assert code == 2 and "--background 'nope' is not a class" in err
    code, _ = run_json(capsys, "train", data, "--out", tmp_path / "r1", *TINY, "--epochs", "1", "--background", "ball")
    config = json.loads((tmp_path / "r1" / "config.json").read_text())
    assert code == 0 and config["task"] == "single_label" and config["background"] == "ball"
    assert "ball" in config["labels"] and "thresholds" not in config
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\n" + "".join(f"{p},{p.parent.name}|x\n" for p in sorted(data.rglob("*.mp4"))))
    code, _, err = run(capsys, "train", csv, "--out", tmp_path / "r2", *TINY, "--task", "single_label")
    assert code == 2 and "--task multilabel" in err
