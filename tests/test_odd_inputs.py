"""Odd inputs that the other test files do not already cover.

Already covered elsewhere (not repeated here): variable frame rate, rotation metadata and odd sizes
in the reader (test_io.py); no-frames stream, audio-only, truncated, random bytes, zero bytes, text
and images with a video extension (test_io.py reader errors, test_cli.py skipped by train); a
symlink loop in a dataset folder, blank lines, labels with commas or unicode (test_manifest.py).

Added here: the same inputs through the *dataset* path (decode -> resize -> crop), real videos with
the wrong extension, non-ASCII and space-containing paths end to end, manifests with missing files,
and the duplicate-row rules.

Duplicate rows (decided): a row is a duplicate when it names the same file *and* segment
(path, start, end) as an earlier one. An exact duplicate is dropped with a warning (counting a clip
twice would double its weight in training and in every metric). The same clip with two different
labels is an error (which one is right cannot be guessed). The same file with different segments is
not a duplicate: both segments are kept.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from tests.videos import (
    decode_all,
    expected_indices,
    frame_with_index,
    index_from_frame,
    write_indexed_video,
    write_video,
)
from vidtune.cli.main import main
from vidtune.data.manifest import VideoItem, load_dataset
from vidtune.data.sample import write_sample_dataset
from vidtune.errors import DatasetError
from vidtune.io import open_video, probe
from vidtune.models.backbones import PretrainedConfig
from vidtune.runs.features import ClipDataset, Sampling

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "3", "--epochs", "2", "--workers", "1"]
CFG = PretrainedConfig(input_size=32, crop_pct=0.875)  # decoded at short side 36, cropped to 32


def _clip(path, n=4, cfg=CFG, **item):
    return ClipDataset([VideoItem(path=path, label="x", **item)], Sampling(n, "centre"), cfg)[0]


@pytest.mark.parametrize("h,w", [(1, 1), (17, 33), (33, 17), (2160, 4096)])
def test_odd_sizes_through_the_dataset_transform(tmp_path, h, w):
    n = 2 if h * w > 10**6 else 6
    frames = np.stack([frame_with_index(i, h, w) for i in range(n)])
    path = write_video(tmp_path / f"{h}x{w}.mp4", frames, gop=2)
    res = _clip(path, n=2)
    assert res["error"] is None
    assert tuple(res["frames"].shape) == (2, 32, 32, 3)
    if h * w > 100:  # the picture survives resizing: top-left cell dark, as written
        assert res["frames"].numpy()[:, :4, :4].mean() < 128


def test_variable_frame_rate_through_the_dataset(tmp_path):
    pts = [0.0, 0.04, 0.10, 0.50, 0.52, 0.90, 1.00, 1.30, 1.31, 1.60, 1.62, 2.20]
    path = write_indexed_video(tmp_path / "vfr.mkv", len(pts), h=48, w=64, pts=pts, gop=4)
    cfg = PretrainedConfig(input_size=48, crop_pct=1.0)
    res = _clip(path, n=6, cfg=cfg)
    info = probe(path)
    assert info.variable_fps
    ts = Sampling(6, "centre").timestamps(info.duration, None, None)
    raw_pts, tb, _ = decode_all(path)
    want = expected_indices(raw_pts, tb, ts)
    got = [index_from_frame(np.asarray(f)) for f in res["frames"].numpy()]
    assert got == want  # frames chosen by time, not by frame count


def test_rotated_video_through_the_dataset_is_upright(tmp_path):
    path = write_indexed_video(tmp_path / "rot.mp4", 8, h=48, w=80, rotation=90)
    res = _clip(path, n=2, cfg=PretrainedConfig(input_size=48, crop_pct=1.0))
    assert res["error"] is None and tuple(res["frames"].shape) == (2, 48, 48, 3)


@pytest.mark.parametrize("ext", [".avi", ".mkv", ".mov", ".webm", ".bin", ""])
def test_real_video_with_the_wrong_extension_decodes(tmp_path, ext):
    """FFmpeg probes the content, so an MP4 named .avi/.mkv/... (or nothing) still decodes."""
    src = write_indexed_video(tmp_path / "src.mp4", 20, h=48, w=64)
    path = tmp_path / f"clip{ext}"
    shutil.copy(src, path)
    with open_video(path) as r:
        assert [index_from_frame(f) for f in r.frames_at([0.0, 0.5])] == [0, 12]
    assert probe(path).container.startswith("mov")


def test_wrong_extensions_in_folders_and_manifests(tmp_path):
    """Folders pick files by video extension; a manifest may name any file, whatever its extension."""
    src = write_indexed_video(tmp_path / "src.mp4", 20, h=48, w=64)
    for name in ("a/clip.avi", "a/clip.bin", "a/notes.txt", "b/x.MKV"):
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp_path / "data" / name)
    items = load_dataset(tmp_path / "data")
    assert sorted(it.path.name for it in items) == ["clip.avi", "x.MKV"]
    (tmp_path / "m.csv").write_text("path,label\ndata/a/clip.bin,a\ndata/a/notes.txt,a\n")
    items = load_dataset(tmp_path / "m.csv")
    assert [_clip(it.path, n=2)["error"] for it in items] == [None, None]


def test_non_ascii_and_space_paths(capsys, tmp_path):
    root = tmp_path / "données vidéo"
    write_sample_dataset(root / "tmp", per_class=3, seconds=1.0, fps=8, size=(96, 80), seed=0)
    # class folders and file names with spaces, accents, CJK, emoji
    olds = sorted(p.name for p in (root / "tmp").iterdir() if p.is_dir())
    names = dict(zip(olds, ["balle ronde", "damier 棋盘", "anneau 💍", "rayures à l'eau"]))
    for old, new in names.items():
        (root / new).mkdir()
        for i, f in enumerate(sorted((root / "tmp" / old).glob("*.mp4"))):
            f.rename(root / new / f"clip {i} é 視頻.mp4")
    shutil.rmtree(root / "tmp")
    items = load_dataset(root)
    assert sorted({it.label for it in items}) == sorted(names.values())
    assert all(_clip(it.path, n=2)["error"] is None for it in items)
    code = main(["info", str(items[0].path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["results"][0]["path"] == str(items[0].path)


def test_manifest_with_missing_files_duplicates_blank_lines_odd_labels(capsys, tmp_path, caplog):
    data = tmp_path / "d"
    write_sample_dataset(data, classes=2, per_class=4, seconds=1.0, fps=8, size=(96, 80), seed=0)
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    labels = {classes[0]: "dog, small", classes[1]: "猫 \"cat\""}
    rows = []
    for c in classes:
        for f in sorted((data / c).glob("*.mp4")):
            rows.append([str(f.relative_to(tmp_path)), labels[c]])
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "label"])
    w.writerows(rows[:3])
    buf.write("\n\n")
    w.writerow(rows[0])  # exact duplicate: dropped with a warning
    w.writerows(rows[3:])
    w.writerow(["d/missing/nowhere.mp4", labels[classes[0]]])  # listed but not on disk
    buf.write("\n")
    manifest = tmp_path / "m.csv"
    manifest.write_text(buf.getvalue(), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        items = load_dataset(manifest)
    assert len(items) == len(rows) + 1  # duplicate dropped, missing file still listed
    assert any("duplicate row" in r.getMessage() for r in caplog.records)
    run = tmp_path / "run ü 視頻"  # a non-ASCII, space-containing output folder too
    code = main(["train", str(manifest), "--out", str(run), *TINY, "--val-split", "0.25",
                 "--json", "--quiet"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [s["path"].endswith("nowhere.mp4") for s in res["skipped"]] == [True]
    assert "No such file" in res["skipped"][0]["reason"] or "not found" in res["skipped"][0]["reason"]
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert sorted(config["labels"]) == sorted(labels.values())


def test_duplicate_row_rules(tmp_path):
    text = ("path,label,start,end\n"
            "a.mp4,x,,\n"
            "a.mp4,x,,\n"        # exact duplicate: dropped
            "./a.mp4,x,,\n"      # the same file written differently is still the same file
            "a.mp4,x,0,1\n"      # another segment of the same file: kept
            "a.mp4,x,1,2\n")
    (tmp_path / "m.csv").write_text(text)
    items = load_dataset(tmp_path / "m.csv")
    assert [(it.start, it.end) for it in items] == [(None, None), (0.0, 1.0), (1.0, 2.0)]
    (tmp_path / "bad.csv").write_text("path,label,start,end\na.mp4,x,0,1\na.mp4,y,0,1\n")
    with pytest.raises(DatasetError, match="two labels"):
        load_dataset(tmp_path / "bad.csv")
