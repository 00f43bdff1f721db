"""End-to-end CLI tests on real encoded videos: train -> eval -> predict, bad inputs, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests import videos
from vidtune.cli.main import main
from vidtune.data.sample import write_sample_dataset

TINY = ["--backbone", "test_efficientnet", "--no-pretrained", "--frames", "3", "--epochs", "2", "--workers", "1"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def run_json(capsys, *argv) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    assert out.strip(), err
    return code, json.loads(out)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    """4 classes x 10 short clips for training, and a held-out set from another seed."""
    root = tmp_path_factory.mktemp("sample")
    write_sample_dataset(root / "train", per_class=10, seconds=1.5, fps=8, size=(112, 96), seed=0)
    write_sample_dataset(root / "test", per_class=4, seconds=1.5, fps=8, size=(112, 96), seed=1)
    return root


@pytest.fixture
def corrupt_files(tmp_path):
    """One file of each kind a dataset of 10,000 real videos will contain sooner or later."""
    d = tmp_path / "corrupt"
    d.mkdir()
    src = videos.write_indexed_video(tmp_path / "src.mp4", 40, h=48, w=64)
    made = {
        "zero.mp4": lambda p: p.write_bytes(b""),
        "random.mp4": lambda p: videos.write_random_bytes(p, 5000, seed=1),
        "text.mp4": lambda p: p.write_text("this is not a video\n"),
        "image.mp4": lambda p: p.write_bytes(videos.encode_image(videos.frame_with_index(3, 48, 64), "png")),
        "audio.mp4": lambda p: videos.write_audio_only(p),
        "truncated.mp4": lambda p: videos.write_truncated(src, p, 0.05),
        "noframes.avi": lambda p: videos.write_no_frames_video(p),
    }
    for name, fn in made.items():
        fn(d / name)
    return d


def test_train_eval_predict_real_backbone(capsys, sample_data, tmp_path, monkeypatch):
    """The default offline backbone reaches accuracy far above chance (25%) with a linear probe."""
    run_dir = tmp_path / "run"
    code, res = run_json(capsys, "train", sample_data / "train", "--out", run_dir, "--frames", "4", "--epochs", "20",
                         "--workers", "1")
    assert code == 0
    assert res["run"] == str(run_dir) and res["skipped"] == []
    assert res["val"]["top1"] >= 0.75 and res["val"]["n"] == 8
    for name in ("model.safetensors", "last.safetensors", "config.json", "metrics.json", "history.csv", "skipped.json",
                 "learning_curves.png", "confusion_matrix.png"):
        assert (run_dir / name).stat().st_size > 0, name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["labels"] == ["ball", "checkerboard", "ring", "stripes"]
    assert config["model"]["backbone"] == "efficientnet_lite0" and config["transform"]["crop_pct"] == 0.875
    assert config["train"]["strategy"] == "linear"
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss") and len(history) >= 2

    # A second run with another head and learning rate is served from the feature cache: no decoding.
    import vidtune.data.clips as clips

    def no_decoding(*a, **k):
        raise AssertionError("decoded a video although its features are cached")

    monkeypatch.setattr(clips, "open_video", no_decoding)
    code, res2 = run_json(capsys, "train", sample_data / "train", "--out", tmp_path / "run2", "--frames", "4",
                          "--epochs", "5", "--temporal", "attention", "--grid", "1", "--lr", "3e-3",
                          "--no-flow", "--workers", "0")  # grid 1, no flow: the same pooled vectors (attention
    # defaults to 3x3 tokens and flow cues, cached under other keys)
    assert code == 0 and res2["skipped"] == []

    # Evaluating on the training data reuses the cached grid's centre column: still no decoding.
    code, ev_train = run_json(capsys, "eval", run_dir, sample_data / "train", "--workers", "0")
    assert code == 0 and ev_train["n"] == 40 and ev_train["skipped"] == []
    monkeypatch.undo()

    code, ev = run_json(capsys, "eval", run_dir, sample_data / "test", "--workers", "1")
    assert code == 0
    assert ev["n"] == 16 and ev["top1"] >= 0.75 and ev["mean_class_accuracy"] >= 0.75 and ev["skipped"] == []
    assert len(ev["confusion"]) == 4
    code, out, _ = run(capsys, "eval", run_dir, sample_data / "test", "--workers", "1")
    assert code == 0 and "mean class accuracy" in out and "confusion matrix" in out

    good = sorted((sample_data / "test" / "ring").glob("*.mp4"))[:2]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    code, pred = run_json(capsys, "predict", run_dir, *good, bad, "-k", "3")
    assert code == 1  # one input failed, the others are still reported
    results = pred["results"]
    assert [r["path"] for r in results] == [str(p) for p in (*good, bad)]
    for r in results[:2]:
        assert len(r["predictions"]) == 3
        assert r["predictions"][0]["label"] == "ring"
        assert abs(sum(p["score"] for p in r["predictions"]) - 1) < 0.2
    assert "error" in results[2] and results[2]["error"]

    code, folder = run_json(capsys, "predict", run_dir, sample_data / "test" / "ball")  # folders are searched
    assert code == 0 and len(folder["results"]) == 4
    assert all(r["predictions"][0]["label"] == "ball" for r in folder["results"])


def test_console_script_and_module_entry_points():
    exe = shutil.which("vidtune")
    assert exe, "the vidtune console script is not installed"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("vidtune ")
    proc = subprocess.run([sys.executable, "-m", "vidtune", "train", "/nonexistent/data", "--out", "/tmp/x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "dataset not found" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupt_files_are_skipped_and_reported(capsys, sample_data, corrupt_files, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_data / "train", data)
    for f in corrupt_files.iterdir():
        shutil.copy(f, data / "ball" / f.name)
    code, res = run_json(capsys, "train", data, "--out", tmp_path / "run", *TINY, "--val-split", "0.25")
    assert code == 0
    skipped = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in res["skipped"]}
    assert set(skipped) == {f.name for f in corrupt_files.iterdir()}
    assert all(reason for reason in skipped.values())
    assert "empty" in skipped["zero.mp4"]
    assert "audio" in skipped["audio.mp4"]
    assert "image" in skipped["image.mp4"]
    assert "no decodable frames" in skipped["noframes.avi"] or "no video" in skipped["noframes.avi"]
    on_disk = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert sorted(s["path"] for s in on_disk) == sorted(s["path"] for s in res["skipped"])


def test_end_to_end_strategy_skips_corrupt_files(capsys, sample_data, corrupt_files, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_data / "train", data)
    shutil.copy(corrupt_files / "random.mp4", data / "ring" / "random.mp4")
    code, res = run_json(capsys, "train", data, "--out", tmp_path / "run", *TINY, "--strategy", "partial",
                         "--unfreeze", "1", "--batch-size", "8")
    assert code == 0
    assert [s["path"].rsplit("/", 1)[-1] for s in res["skipped"]] == ["random.mp4"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["strategy"] == "partial"
    code, ev = run_json(capsys, "eval", tmp_path / "run", sample_data / "test", "--workers", "1")
    assert code == 0 and ev["n"] == 16


def test_class_left_empty_is_a_clear_error(capsys, sample_data, corrupt_files, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(sample_data / "train" / "ball", data / "ball")
    shutil.copytree(corrupt_files, data / "broken")
    code, out, err = run(capsys, "train", data, "--out", tmp_path / "run", *TINY)
    assert code == 2
    assert "'broken'" in err and "no readable training videos" in err and "Traceback" not in err


def test_nothing_readable_is_a_clear_error(capsys, corrupt_files, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(corrupt_files, data / "a")
    shutil.copytree(corrupt_files, data / "b")
    code, _, err = run(capsys, "train", data, "--out", tmp_path / "run", *TINY)
    assert code == 2 and "no readable training videos" in err


@pytest.mark.parametrize("setup,argv_tail,message", [
    (None, [], "dataset not found"),
    ("empty", [], "no class sub-folders"),
    ("manifest", [], "missing column"),
])
def test_bad_dataset_arguments_exit_2(capsys, tmp_path, setup, argv_tail, message):
    data = tmp_path / "data"
    if setup == "empty":
        data.mkdir()
    elif setup == "manifest":
        data = tmp_path / "m.csv"
        data.write_text("file,class\na.mp4,x\n")
    code, _, err = run(capsys, "train", data, "--out", tmp_path / "run", *argv_tail)
    assert code == 2 and message in err and "Traceback" not in err


def test_unknown_backbone_suggests_names(capsys, sample_data, tmp_path):
    code, _, err = run(capsys, "train", sample_data / "train", "--out", tmp_path / "r", "--backbone", "efficientnet_lite")
    assert code == 2
    assert "unknown backbone" in err and "efficientnet_lite0" in err


def test_info_reports_good_and_bad_files(capsys, sample_videos_dir, tmp_path):
    bad = tmp_path / "bad.mkv"
    bad.write_text("nope")
    code, res = run_json(capsys, "info", sample_videos_dir / "bikes.mp4", bad)
    assert code == 1
    good, err = res["results"]
    assert good["width"] == 640 and good["height"] == 272 and good["frame_count"] == 250
    assert abs(good["duration"] - 10.0) < 1e-6 and good["fps"] == 25 and good["variable_fps"] is False
    assert err["path"] == str(bad) and err["error"]
    code, out, stderr = run(capsys, "info", sample_videos_dir / "bigbuckbunny.mp4", bad)
    assert code == 1 and "1280x720" in out and "bad.mkv" in stderr


def test_damaged_runs_give_clear_errors(capsys, sample_data, tmp_path):
    code, _, err = run(capsys, "eval", tmp_path / "missing_run", sample_data / "test")
    assert code == 2 and "run folder not found" in err
    run_dir = tmp_path / "run"
    assert main(["train", str(sample_data / "train"), "--out", str(run_dir), *TINY, "--json"]) == 0
    capsys.readouterr()
    (run_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    code, _, err = run(capsys, "predict", run_dir, sample_data / "test" / "ball" / "ball_000.mp4")
    assert code == 2 and "tampered" in err
    (run_dir / "config.json").write_text("{}")
    code, _, err = run(capsys, "eval", run_dir, sample_data / "test")
    assert code == 2 and "not a vidtune run" in err


def test_imbalanced_data_reports_mean_class_accuracy(capsys, tmp_path):
    data = tmp_path / "imb"
    write_sample_dataset(data, classes=2, per_class=12, imbalance=4, seconds=1.0, fps=6, size=(64, 64), seed=3)
    counts = {d.name: len(list(d.iterdir())) for d in data.iterdir()}
    assert max(counts.values()) >= 3 * min(counts.values())
    code, res = run_json(capsys, "train", data, "--out", tmp_path / "run", *TINY)
    assert code == 0
    assert res["val"]["mean_class_accuracy"] is not None
    assert set(res["val"]["per_class"]) == set(counts)


def test_manifest_with_splits_and_segments(capsys, sample_data, tmp_path):
    """CSV manifest: relative paths, split column, start/end segments; eval defaults to the test rows."""
    rows = ["path,label,split,start,end"]
    for cls_dir in sorted((sample_data / "train").iterdir()):
        for i, f in enumerate(sorted(cls_dir.glob("*.mp4"))[:6]):
            split = "train" if i < 4 else "val" if i == 4 else "test"
            rows.append(f"{f.relative_to(sample_data)},{cls_dir.name},{split},0.25,1.25")
    manifest = sample_data / f"manifest_{tmp_path.name}.csv"
    manifest.write_text("\n".join(rows) + "\n")
    try:
        code, res = run_json(capsys, "train", manifest, "--out", tmp_path / "run", *TINY)
        assert code == 0 and res["val"]["n"] == 4
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        assert sum(config["data"]["train"].values()) == 16
        code, ev = run_json(capsys, "eval", tmp_path / "run", manifest, "--workers", "0")
        assert code == 0 and ev["n"] == 4  # the 4 test rows
        code, ev_all = run_json(capsys, "eval", tmp_path / "run", manifest, "--split", "all", "--workers", "0")
        assert ev_all["n"] == 24
    finally:
        manifest.unlink()


@pytest.mark.parametrize("option,value,message", [
    ("--lr", "-1", "--lr must be > 0"),
    ("--weight-decay", "-1", "--weight-decay must be >= 0"),
    ("--label-smoothing", "2", "--label-smoothing must be in [0, 1)"),
    ("--device", "foo", "is not a device"),
    ("--workers", "-1", "--workers must be >= 0"),
    ("--frames", "0", "--frames must be >= 1"),
    ("--strategy", "everything", "--strategy must be one of"),
    ("--temporal", "lstm", "--temporal must be one of"),
])
def test_bad_training_options_exit_2_before_any_work(capsys, sample_data, tmp_path, option, value, message):
    code, out, err = run(capsys, "train", sample_data / "train", "--out", tmp_path / "r", *TINY, option, value,
                         "--json")
    assert code == 2 and message in err and "Traceback" not in err
    assert json.loads(out)["error"]  # --json callers get a parseable error too


def test_unusable_out_and_cache_dir_fail_fast(capsys, sample_data, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run(capsys, "train", sample_data / "train", "--out", afile, *TINY)
    assert code == 2 and "is not a folder" in err
    code, _, err = run(capsys, "train", sample_data / "train", "--out", tmp_path / "r", *TINY, "--cache-dir", afile)
    assert code == 2 and "--cache-dir" in err


def test_no_validation_keeps_the_json_shape(capsys, sample_data, tmp_path):
    code, res = run_json(capsys, "train", sample_data / "train", "--out", tmp_path / "r", *TINY, "--val-split", "0")
    assert code == 0
    assert res["val"]["n"] == 0
    assert {"top1", "mean_class_accuracy", "per_class", "confusion"} <= set(res["val"])


def test_eval_split_val_reproduces_the_runs_holdout(capsys, sample_data, tmp_path):
    code, res = run_json(capsys, "train", sample_data / "train", "--out", tmp_path / "r", *TINY, "--seed", "3")
    code, ev = run_json(capsys, "eval", tmp_path / "r", sample_data / "train", "--split", "val", "--workers", "1")
    assert code == 0
    assert ev["n"] == res["val"]["n"] == 8
    assert ev["top1"] == pytest.approx(res["val"]["top1"])
    assert ev["confusion"] == res["val"]["confusion"]


def test_user_strings_are_not_rich_markup(capsys, tmp_path):
    data = tmp_path / "d"
    write_sample_dataset(data, classes=["[bold]ball", "ring"], per_class=3, seconds=1.0, fps=6, size=(64, 64))
    code, out, err = run(capsys, "train", data, "--out", tmp_path / "r", *TINY, "--val-split", "0.34")
    assert code == 0 and "[bold]ball" in out
    code, out, err = run(capsys, "info", tmp_path / "no[/b]ne.mp4")
    assert code == 1 and "no[/b]ne.mp4" in err and "Traceback" not in err


def test_damaged_format_version(capsys, sample_data, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", str(sample_data / "train"), "--out", str(run_dir), *TINY, "--json"]) == 0
    capsys.readouterr()
    config = json.loads((run_dir / "config.json").read_text())
    config["format_version"] = "x"
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, err = run(capsys, "predict", run_dir, sample_data / "test" / "ball" / "ball_000.mp4")
    assert code == 2 and "format_version" in err


def test_weights_and_config_from_different_runs_are_refused(capsys, sample_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for run_dir in (a, b):
        assert main(["train", str(sample_data / "train"), "--out", str(run_dir), *TINY, "--json"]) == 0
    capsys.readouterr()
    shutil.copy(b / "model.safetensors", a / "model.safetensors")  # same shapes, another run
    code, _, err = run(capsys, "eval", a, sample_data / "test")
    assert code == 2 and "different runs" in err


def test_linear_training_is_reproducible_with_or_without_cache_hits(capsys, sample_data, tmp_path):
    cache = tmp_path / "cache"
    args = [*TINY, "--temporal", "attention", "--epochs", "3", "--cache-dir", cache, "--balance", "sampler"]
    for name in ("cold", "warm"):  # the second run is served entirely from the cache
        assert main(["train", str(sample_data / "train"), "--out", str(tmp_path / name), *map(str, args),
                     "--json"]) == 0
    capsys.readouterr()

    def history(name):  # drop the timing column
        return [line.rsplit(",", 1)[0] for line in (tmp_path / name / "history.csv").read_text().splitlines()]

    assert history("cold") == history("warm")


def test_eval_counts_classes_the_run_never_saw_as_wrong_and_lists_them(capsys, sample_data, tmp_path):
    classes = sorted(d.name for d in (sample_data / "train").iterdir() if d.is_dir())
    part = tmp_path / "part"
    part.mkdir()
    for name in classes[:2]:  # labelled only part of the classes
        (part / name).symlink_to(sample_data / "train" / name)
    assert main(["train", str(part), "--out", str(tmp_path / "run"), *TINY, "--json"]) == 0
    capsys.readouterr()
    code, ev = run_json(capsys, "eval", tmp_path / "run", sample_data / "test", "--workers", "0")
    assert code == 0
    assert ev["unseen_labels"] == {name: 4 for name in classes[2:]}
    assert ev["n"] == 16 and ev["labels"] == classes[:2] + classes[2:]
    assert ev["top1"] <= 0.5 + 1e-9  # the 8 clips of unseen classes are all wrong
    assert ev["per_class"][classes[2]]["accuracy"] == 0.0 and len(ev["confusion"]) == 4
    assert all(row[2:] == [0, 0] for row in ev["confusion"])  # never predicted
    code, out, err = run(capsys, "eval", tmp_path / "run", sample_data / "test", "--workers", "0")
    assert code == 0 and "never saw" in err and classes[3] in err
