import json
import os

import pytest

from vidtune.data.manifest import load_dataset
from vidtune.data.splits import stratified_split
from vidtune.errors import DatasetError


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_folder_per_class_any_extension_and_symlink_loop(tmp_path):
    for name in ("a/1.mp4", "a/sub/2.MKV", "b/3.webm", "b/4.avi", "b/notes.txt", "b/.hidden.mp4", "c/5.mov"):
        touch(tmp_path / name)
    os.symlink(tmp_path / "a", tmp_path / "a" / "sub" / "loop")  # a folder loop must not hang
    items = load_dataset(tmp_path)
    got = sorted((it.label, it.path.name) for it in items)
    assert got == [("a", "1.mp4"), ("a", "2.MKV"), ("b", "3.webm"), ("b", "4.avi"), ("c", "5.mov")]


def test_csv_manifest_relative_paths_blank_lines_duplicates_unicode(tmp_path):
    (tmp_path / "m").mkdir()
    text = ("path,label,split,start,end\n"
            "clips/a b.mp4,\"dog, small\",train,1.5,3\n"
            "\n"
            "clips/a b.mp4,\"dog, small\",train,1.5,3\n"
            "/abs/x.mp4,猫,val,,\n"
            "y.mp4,dog,Validation,,\n")
    (tmp_path / "m" / "list.csv").write_text(text, encoding="utf-8")
    items = load_dataset(tmp_path / "m" / "list.csv")
    assert len(items) == 3  # blank line skipped, duplicate row dropped
    first = items[0]
    assert first.path == tmp_path / "m" / "clips" / "a b.mp4"
    assert first.label == "dog, small" and first.split == "train" and (first.start, first.end) == (1.5, 3.0)
    assert items[1].label == "猫" and str(items[1].path) == "/abs/x.mp4" and items[1].start is None
    assert items[2].split == "val"


def test_jsonl_manifest(tmp_path):
    rows = [{"path": "a.mp4", "label": "x"}, {"path": "b.mp4", "label": ["x", "y"], "split": "test"}]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = load_dataset(p)
    assert [it.label for it in items] == ["x", "x|y"]
    assert items[1].split == "test"


@pytest.mark.parametrize("text,match", [
    ("file,label\na.mp4,x\n", "missing column"),
    ("path,label,split\na.mp4,x,holdout\n", "split must be one of"),
    ("path,label,start,end\na.mp4,x,3,1\n", "end .* must be after start"),
    ("path,label,start\na.mp4,x,abc\n", "must be a number"),
    ("path,label\na.mp4,\n", "empty label"),
    ("path,label\na.mp4,x\na.mp4,y\n", "two labels"),
])
def test_csv_errors(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DatasetError, match=match):
        load_dataset(p)


def test_bad_sources(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="empty_class: class folder has no video files"):
        load_dataset(tmp_path)
    (tmp_path / "x.jsonl").write_text("{not json}\n")
    with pytest.raises(DatasetError, match="invalid JSON"):
        load_dataset(tmp_path / "x.jsonl")


def test_manifest_bad_types_and_encoding(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"path": 5, "label": "a"}\n')
    with pytest.raises(DatasetError, match="path must be a string"):
        load_dataset(p)
    c = tmp_path / "latin.csv"
    c.write_bytes("path,label\nvid\xe9o.mp4,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(c)


def test_csv_error_reports_the_file_line(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("path,label\n\n\na.mp4,x\nb.mp4,\n")
    with pytest.raises(DatasetError, match=r"m.csv:5: empty label"):
        load_dataset(p)


def test_stratified_split_is_seeded_and_keeps_every_class(tmp_path):
    for c, n in (("big", 30), ("small", 3), ("single", 1)):
        for i in range(n):
            touch(tmp_path / c / f"{i}.mp4")
    items = load_dataset(tmp_path)
    a = stratified_split(items, 0.2, seed=1)
    b = stratified_split(items, 0.2, seed=1)
    c = stratified_split(items, 0.2, seed=2)
    assert [it.path for it in a["val"]] == [it.path for it in b["val"]]
    assert [it.path for it in a["val"]] != [it.path for it in c["val"]]
    val = [it.label for it in a["val"]]
    assert val.count("big") == 6 and val.count("small") == 1 and val.count("single") == 0
    assert len(a["train"]) + len(a["val"]) == 34


def test_split_column_wins(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("path,label,split\na.mp4,x,train\nb.mp4,x,val\nc.mp4,y,train\nd.mp4,y,test\n")
    s = stratified_split(load_dataset(p), 0.5, seed=0)
    assert [it.path.name for it in s["val"]] == ["b.mp4"]
    assert [it.path.name for it in s["test"]] == ["d.mp4"]
