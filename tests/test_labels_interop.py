"""Labels in and out: Label Studio and CVAT exports read as manifests (frames timed on the video's own clock),
a run's results written for Label Studio / CVAT / FiftyOne, and round trips through them.

The fixtures in tests/data/ are export files in the tools' documented formats; the videos they name are
made here. The Label Studio SDK and FiftyOne checks run in the interop environment that the test command
sets up beside the main one (``$VIDTUNE_INTEROP_PYTHON``; those tools pin numpy/OpenCV/Starlette versions
that would change vidtune's own environment), and skip with that reason where it is missing.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests import videos
from vidtune.cli.main import main
from vidtune.data.exports import read_export
from vidtune.data.external import FrameClock, sniff_format
from vidtune.data.manifest import load_dataset
from vidtune.data.sample import write_sample_dataset
from vidtune.errors import DatasetError

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "3", "--epochs", "2", "--workers", "0"]
VFR_PTS = [i * 0.04 if i < 15 else 0.6 + (i - 15) * 0.1 for i in range(30)]  # 25 fps, then 10 fps


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def media(tmp_path):
    """The videos the Label Studio / CVAT fixtures name, under one media root."""
    (tmp_path / "clips").mkdir()
    (tmp_path / "3").mkdir()
    videos.write_indexed_video(tmp_path / "clips" / "walk.mp4", 30)
    videos.write_indexed_video(tmp_path / "clips" / "run.mp4", 30)
    videos.write_indexed_video(tmp_path / "3" / "5e2a9c1f-jump.mp4", 30)
    videos.write_video(tmp_path / "clips" / "vfr walk.mkv", np.stack(videos.indexed_frames(30, 48, 64)), pts=VFR_PTS)
    return tmp_path


def rows(items):
    return [(Path(it.path).name, it.label, it.start, it.end) for it in items]


def test_sniff_by_content(tmp_path):
    assert sniff_format(DATA / "labelstudio" / "video_project.json") == "labelstudio"
    assert sniff_format(DATA / "cvat" / "video_1_1.xml") == "cvat"
    assert sniff_format(DATA / "cvat" / "images_1_1.xml") == "cvat"
    m = tmp_path / "m.jsonl"
    m.write_text('{"path": "a.mp4", "label": "x"}\n')
    assert sniff_format(m) is None  # a vidtune manifest stays one
    assert sniff_format(tmp_path) is None


def test_labelstudio_import(media):
    shutil.copy(DATA / "labelstudio" / "video_project.json", media)
    res = read_export(media / "video_project.json")
    assert res.format == "labelstudio"
    assert rows(res.items) == [
        ("walk.mp4", "walking", None, None),  # choices: the whole video
        # timelinelabels: 1-based frames 1-10 and 16-30 of a VFR file (25 fps then 10 fps), timed by its frames;
        # the cancelled annotation of the same task (jumping over 1-30) is not read
        ("vfr walk.mkv", "walking", 0.0, 0.4),
        ("vfr walk.mkv", "running", 0.6, 2.1),
        ("5e2a9c1f-jump.mp4", "jumping|running", None, None),  # /data/upload/3/... under the media root; 2 choices
        # videorectangle track: keyframe 5 -> disabled at 12, again from 20 to the end (frame 30)
        ("run.mp4", "person", 0.16, 0.48),
        ("run.mp4", "person", 0.76, 1.2),
    ]
    assert res.multilabel
    assert [m.ref for m in res.missing] == ["/data/local-files/?d=clips/gone.mp4"]
    assert "not found under" in res.missing[0].reason and "--media-root" in res.missing[0].reason


def test_labelstudio_upload_name_without_prefix(tmp_path):
    """An upload whose file the user keeps under its original name (Label Studio adds 8 hex digits)."""
    videos.write_indexed_video(tmp_path / "jump.mp4", 10)
    export = [{"id": 1, "data": {"video": "/data/upload/3/5e2a9c1f-jump.mp4"},
               "annotations": [{"id": 1, "result": [{"type": "choices", "value": {"choices": ["x"]},
                                                     "from_name": "c", "to_name": "video"}]}]}]
    (tmp_path / "e.json").write_text(json.dumps(export))
    res = read_export(tmp_path / "e.json")
    assert rows(res.items) == [("jump.mp4", "x", None, None)] and not res.missing


def test_cvat_video_import(media):
    shutil.copy(DATA / "cvat" / "video_1_1.xml", media / "clips")
    res = read_export(media / "clips" / "video_1_1.xml")
    assert res.format == "cvat"
    assert rows(res.items) == [
        ("walk.mp4", "walking", 0.0, 0.4),  # shown frames 0-9, outside from 10
        ("walk.mp4", "running", 0.6, 1.2),  # never put outside: to the task's last frame (29)
        ("walk.mp4", "walking", 0.8, 0.92),  # frame tags 20-22 merged
    ]


def test_cvat_images_import_with_frame_step(media):
    """CVAT for images of a video task every 2nd frame: image i is video frame 2i and stands for 2 frames."""
    shutil.copy(DATA / "cvat" / "images_1_1.xml", media / "clips")
    res = read_export(media / "clips" / "images_1_1.xml")
    assert rows(res.items) == [("run.mp4", "standing", 0.0, 0.16), ("run.mp4", "running", 0.24, 0.48)]


def test_cvat_zip_and_refused_entities(media, tmp_path):
    import zipfile

    with zipfile.ZipFile(media / "clips" / "task.zip", "w") as z:
        z.write(DATA / "cvat" / "video_1_1.xml", "annotations.xml")
    assert len(read_export(media / "clips" / "task.zip").items) == 3
    bomb = media / "clips" / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
                    "<annotations><meta><source>walk.mp4</source></meta>&y;</annotations>")
    with pytest.raises(DatasetError, match="refused XML"):
        read_export(bomb, "cvat")


def test_import_cli_writes_manifest_and_lists_missing(capsys, media):
    shutil.copy(DATA / "labelstudio" / "video_project.json", media)
    out = media / "m.csv"
    code, stdout, err = run(capsys, "labels", "import", media / "video_project.json", "--from", "labelstudio",
                            "--media-root", media, "--out", out, "--json")
    assert code == 1, err  # written, but one file of the export was not found
    summary = json.loads(stdout)
    assert summary["rows"] == 6 and summary["videos"] == 4 and summary["multilabel"]
    assert summary["classes"] == ["jumping", "person", "running", "walking"]
    assert summary["missing"][0]["ref"].endswith("gone.mp4")
    with open(out, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["path", "label", "start", "end", "group"]
    back = load_dataset(out, multilabel=True)
    assert rows(back) == rows(read_export(media / "video_project.json").items)
    # the wrong tool named: a clear error, exit 2
    code, _, err = run(capsys, "labels", "import", media / "video_project.json", "--from", "cvat")
    assert code == 2 and "looks like a labelstudio export" in err


def test_import_nothing_found_exits_2(capsys, tmp_path):
    shutil.copy(DATA / "labelstudio" / "video_project.json", tmp_path)
    code, _, err = run(capsys, "labels", "import", tmp_path / "video_project.json")
    assert code == 2 and "not found" in err and "no labelled video" in err


@pytest.fixture(scope="module")
def ls_dataset(tmp_path_factory):
    """The sample task's videos labelled in 'Label Studio' (whole-video choices), as its JSON export."""
    root = tmp_path_factory.mktemp("lsdata")
    write_sample_dataset(root / "videos", per_class=4, seconds=1.5, fps=8, size=(112, 96), seed=0)
    tasks = []
    for i, p in enumerate(sorted((root / "videos").rglob("*.mp4"))):
        rel = p.relative_to(root).as_posix()
        tasks.append({"id": i + 1, "data": {"video": f"/data/local-files/?d={rel}"},
                      "annotations": [{"id": i + 1, "was_cancelled": False, "ground_truth": False,
                                       "result": [{"type": "choices", "from_name": "label", "to_name": "video",
                                                   "value": {"choices": [p.parent.name]}, "origin": "manual"}]}]})
    (root / "export.json").write_text(json.dumps(tasks))
    return root


@pytest.fixture(scope="module")
def ls_run(ls_dataset):
    """A run trained on the Label Studio export itself (recognised from its content by `train`)."""
    run_dir = ls_dataset / "run"
    assert main(["train", str(ls_dataset / "export.json"), "--out", str(run_dir), *TINY, "-q"]) == 0
    return run_dir


def test_train_on_export_then_export_and_import_back(capsys, ls_dataset, ls_run, tmp_path):
    """import -> train -> export -> import keeps paths, labels and spans."""
    run_dir = ls_run
    classes = sorted(json.loads((run_dir / "config.json").read_text())["labels"])
    assert classes == sorted({p.parent.name for p in (ls_dataset / "videos").rglob("*.mp4")})
    vids = sorted((ls_dataset / "videos").rglob("*.mp4"))[:3]

    # Label Studio: choices + timeline pre-annotations, and the matching labelling config
    tasks_file = tmp_path / "tasks.json"
    code, stdout, err = run(capsys, "labels", "export", run_dir, *vids, "--to", "labelstudio", "--timeline",
                            "--media-root", ls_dataset, "--out", tasks_file, "--json", "-q")
    assert code == 0, err
    summary = json.loads(stdout)
    config_file = tmp_path / "tasks.label_config.xml"
    assert summary["files"] == [str(tasks_file), str(config_file)]
    tasks = json.loads(tasks_file.read_text())
    assert [t["data"]["video"] for t in tasks] == [f"/data/local-files/?d={v.relative_to(ls_dataset).as_posix()}"
                                                   for v in vids]
    for t in tasks:
        kinds = {r["type"] for r in t["predictions"][0]["result"]}
        assert kinds == {"choices", "timelinelabels"}
    # a reviewer accepts the pre-annotations: they become annotations, and the import gives back the same
    accepted = [{**t, "annotations": [{"id": i, "result": t["predictions"][0]["result"]}]} for i, t in enumerate(tasks)]
    (ls_dataset / "accepted.json").write_text(json.dumps(accepted))
    back = read_export(ls_dataset / "accepted.json")
    clock = FrameClock()
    for t, v in zip(tasks, vids):
        got = [it for it in back.items if Path(it.path) == v]
        choice = next(r for r in t["predictions"][0]["result"] if r["type"] == "choices")
        assert [it.label for it in got if it.start is None] == choice["value"]["choices"]
        spans = [(it.label, it.start, it.end) for it in got if it.start is not None]
        want = []
        for r in t["predictions"][0]["result"]:
            if r["type"] == "timelinelabels":
                a, b = r["value"]["ranges"][0]["start"], r["value"]["ranges"][0]["end"]
                want.append((r["value"]["timelinelabels"][0], *clock.span(v, a - 1, b - 1)))
        assert sorted(spans) == sorted(want) and spans
    # the segments cover the video as `vidtune tag` gave them, to within a frame
    code, stdout, err = run(capsys, "tag", run_dir, vids[0], "--json", "-q")
    segs = json.loads(stdout)["results"][0]["segments"]
    got = sorted((it.start, it.end) for it in back.items if Path(it.path) == vids[0] and it.start is not None)
    frame = 1 / 8
    assert len(got) == len(segs)
    for (a, b), s in zip(got, sorted(segs, key=lambda s: s["start"])):
        assert abs(a - s["start"]) <= frame + 1e-6 and abs(b - s["end"]) <= frame + 1e-6

    # CVAT for video: one file per video; importing it gives back the timeline
    cvat_dir = tmp_path / "cvat"
    code, stdout, err = run(capsys, "labels", "export", run_dir, *vids, "--to", "cvat", "--out", cvat_dir, "--json", "-q")
    assert code == 0, err
    files = json.loads(stdout)["files"]
    assert [Path(f).name for f in files] == [v.stem + ".xml" for v in vids]
    for f, v in zip(files, vids):
        res = read_export(f, media_root=v.parent)
        assert {Path(it.path) for it in res.items} == {v}
        t = next(t for t in tasks if t["data"]["video"].endswith(v.relative_to(ls_dataset).as_posix()))
        want = sorted((r["value"]["timelinelabels"][0], *clock.span(v, r["value"]["ranges"][0]["start"] - 1,
                                                                    r["value"]["ranges"][0]["end"] - 1))
                      for r in t["predictions"][0]["result"] if r["type"] == "timelinelabels")
        assert sorted((it.label, it.start, it.end) for it in res.items) == want


def _interop_python() -> str:
    py = os.environ.get("VIDTUNE_INTEROP_PYTHON") or str(REPO / ".venv-interop" / "bin" / "python")
    if not Path(py).is_file():
        pytest.skip("the interop environment (label-studio-sdk, fiftyone) is not set up: scripts/test.sh makes it "
                    "with scripts/_interop_env.sh")
    return py


def _in_interop(code: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FIFTYONE_DATABASE_VALIDATION": "false",
           "FIFTYONE_DO_NOT_TRACK": "true"}
    return subprocess.run([_interop_python(), "-c", textwrap.dedent(code), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_labelstudio_tasks_validate_with_the_sdk(capsys, ls_dataset, ls_run, tmp_path):
    """The exported predictions and config pass label-studio-sdk's own label-interface checks."""
    vids = sorted((ls_dataset / "videos").rglob("*.mp4"))[:2]
    out = tmp_path / "t.json"
    code, _, err = run(capsys, "labels", "export", ls_run, *vids, "--to", "labelstudio", "--timeline",
                       "--out", out, "-q")
    assert code == 0, err
    proc = _in_interop("""
        import json, sys
        from label_studio_sdk.label_interface import LabelInterface
        li = LabelInterface(open(sys.argv[2]).read())
        tasks = json.load(open(sys.argv[1]))
        names = {c.name for c in li.controls}
        assert names == {"label", "timeline"}, names
        for t in tasks:
            assert li.validate_task({"data": t["data"]})  # every variable the config uses is in the data
            for p in t["predictions"]:
                assert li.validate_prediction(p), li.validate_prediction(p, return_errors=True)
        # a wrong label is refused: the check is real
        bad = json.loads(json.dumps(tasks[0]["predictions"][0]))
        bad["result"][0]["value"]["choices"] = ["no such label"]
        assert not li.validate_prediction(bad)
        print("ok", len(tasks))
    """, out, tmp_path / "t.label_config.xml")
    assert proc.returncode == 0 and proc.stdout.startswith("ok 2"), proc.stderr[-3000:]


def test_fiftyone_dataset(capsys, ls_dataset, ls_run, tmp_path):
    """Predictions, timeline and embeddings land in a real FiftyOne dataset (its own database)."""
    vids = sorted((ls_dataset / "videos").rglob("*.mp4"))[:3]
    records = tmp_path / "fo.json"
    code, stdout, err = run(capsys, "labels", "export", ls_run, *vids, "--to", "fiftyone", "--out", records,
                            "--json", "-q")
    assert code == 0, err
    payload = json.loads(records.read_text())
    assert len(payload["samples"]) == 3 and all(len(s["embedding"]) > 0 and s["segments"] for s in payload["samples"])
    proc = _in_interop("""
        import json, sys
        import fiftyone as fo
        from vidtune.labels.fiftyone_dataset import load_into_fiftyone, read_records
        name = "vidtune-test-" + str(abs(hash(sys.argv[1])))
        summary = load_into_fiftyone(read_records(sys.argv[1]), name)
        ds = fo.load_dataset(name)
        s = ds.first()
        rec = json.load(open(sys.argv[1]))["samples"]
        assert len(ds) == 3
        assert s.predictions.label == rec[0]["labels"][0]
        assert len(s.timeline.detections) == len(rec[0]["segments"])
        d = s.timeline.detections[0]
        assert d.support[0] >= 1 and d.support[1] >= d.support[0]
        assert len(s.embedding) == len(rec[0]["embedding"])
        if summary["similarity"]:
            view = ds.sort_by_similarity(s.id, k=2, brain_key=summary["similarity"])
            assert view.first().id == s.id
        print(json.dumps(summary))
        fo.delete_dataset(name)
    """, records)
    if proc.returncode != 0 and "database" in proc.stderr.lower() and "could not" in proc.stderr.lower():
        pytest.skip(f"FiftyOne's database could not start here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["samples"] == 3 and summary["embedded"] == 3


def test_fiftyone_missing_extra_is_clear(capsys, ls_dataset, ls_run, tmp_path, monkeypatch):
    """Without FiftyOne in this environment and no --out: exit 2 naming the extra."""
    monkeypatch.setitem(sys.modules, "fiftyone", None)
    vids = sorted((ls_dataset / "videos").rglob("*.mp4"))[:1]
    code, _, err = run(capsys, "labels", "export", ls_run, *vids, "--to", "fiftyone", "-q")
    assert code == 2 and "vidtune[fiftyone]" in err
    # with --out the records are kept and the message says how to load them
    code, stdout, err = run(capsys, "labels", "export", ls_run, *vids, "--to", "fiftyone", "-q",
                            "--out", tmp_path / "r.json")
    assert code == 0 and "python -m vidtune.labels.fiftyone_dataset" in err


def test_index_embeddings_export_to_fiftyone_records(capsys, tmp_path):
    """`labels export INDEX --to fiftyone`: each indexed video's stored vector and its segments' vectors,
    read back from the index (no recomputation), in a records file the FiftyOne loader accepts."""
    from tests.indexes import TINY
    from vidtune.index.search import build_index
    from vidtune.index.store import VideoIndex
    from vidtune.labels.fiftyone_dataset import read_records

    clips = [videos.write_indexed_video(tmp_path / f"v{i}.mp4", 24 + 8 * i) for i in range(2)]
    build_index(tmp_path / "ix", clips, TINY)
    records = tmp_path / "ix.json"
    code, stdout, err = run(capsys, "labels", "export", tmp_path / "ix", "--to", "fiftyone", "--out", records, "-q",
                            "--json")
    assert code == 0, err
    assert "python -m vidtune.labels.fiftyone_dataset" in json.loads(stdout).get("note", "") or json.loads(
        stdout).get("dataset")
    payload = read_records(records)
    with VideoIndex.open(tmp_path / "ix") as ix:
        rows = {r.path: r for r in ix.videos()}
        for s in payload["samples"]:
            e = ix.stored_embedding(rows[s["filepath"]].id)
            assert np.allclose(s["embedding"], e.video, atol=1e-6)
            assert [(c["start"], c["end"]) for c in s["clips"]] == [(round(float(a), 4), round(float(b), 4))
                                                                    for a, b in zip(e.starts, e.ends)]
    assert sorted(s["filepath"] for s in payload["samples"]) == sorted(str(c.resolve()) for c in clips)
    # an index holds no classifier: only FiftyOne takes it
    code, _, err = run(capsys, "labels", "export", tmp_path / "ix", "--to", "labelstudio")
    assert code == 2 and "FiftyOne only" in err


def test_import_prints_the_manifest_relative_to_the_working_folder(capsys, media, monkeypatch):
    shutil.copy(DATA / "labelstudio" / "video_project.json", media)
    monkeypatch.chdir(media)
    code, stdout, err = run(capsys, "labels", "import", "video_project.json")
    assert code == 1  # gone.mp4 is missing
    rows_out = list(csv.reader(stdout.splitlines()))
    assert rows_out[0] == ["path", "label", "start", "end", "group"]
    assert rows_out[1][:2] == ["clips/walk.mp4", "walking"]  # readable from here, as printed
    assert f"not found under {media}" in err  # the folder searched, spelled out
