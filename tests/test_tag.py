"""Tagging long videos: window arithmetic, smoothing/merging on hand-made scores, exports parsed by
their rules, evaluation, the streaming pipeline end to end, and bounded memory on a long video."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest
import torch

from tests.videos import write_video
from vidtune.tag.evaluate import average_precision, evaluate_results, match_segments, read_ground_truth, tiou
from vidtune.tag.exports import cues, srt_time, to_csv, to_srt, to_vtt, vtt_time
from vidtune.tag.segments import (
    multilabel_segments,
    single_label_segments,
    smooth_scores,
    snap_segments,
    window_edges,
)
from vidtune.tag.windows import plan_windows


# -- helpers -----------------------------------------------------------------------------------------
def make_run(path, labels, task="single_label", thresholds=None, background=None, frames=4, seed=0, flow=0):
    """A run folder with a tiny random-init encoder and a mean head (no training needed); ``flow``:
    the head also reads that many optical-flow channels."""
    from vidtune.models.backbones import create_backbone
    from vidtune.models.classifier import VideoClassifier
    from vidtune.models.heads import create_head
    from vidtune.runs.config import RunConfig
    from vidtune.runs.store import save_weights

    torch.manual_seed(seed)
    enc = create_backbone("test_efficientnet", pretrained=False)
    head = create_head("mean", enc.num_features, len(labels), frames, flow=flow)
    model = VideoClassifier(enc, head)
    run_id = uuid.uuid4().hex
    config = {"run_id": run_id, "task": task, "labels": list(labels),
              "model": {"backbone": "test_efficientnet", "temporal": "mean", "frames": frames,
                        "head": {"dropout": 0.0, "dim": 32, **({"flow": flow} if flow else {})}},
              "transform": enc.cfg.to_dict(), "sampling": {"frames": frames, "eval": "centre", "clip_seconds": 2.0},
              "data": {"source": "nowhere"}}
    if thresholds is not None:
        config["thresholds"] = thresholds
    if background is not None:
        config["background"] = background
    path.mkdir(parents=True, exist_ok=True)
    save_weights(model, path / "model.safetensors", run_id)
    RunConfig.from_dict(config).save(path / "config.json")
    return path


def scene_video(path, colours, seconds_each=2.0, fps=10, size=(64, 48), seed=0):
    """Solid-colour scenes with noise and a moving bar, joined by hard cuts."""
    rng = np.random.default_rng(seed)
    w, h = size
    frames = []
    for c in colours:
        for i in range(int(seconds_each * fps)):
            img = np.empty((h, w, 3), np.float32)
            img[:] = c
            x = (i * 3) % w
            img[:, x : x + 6] = 255 - np.asarray(c, np.float32)
            frames.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
    return write_video(path, frames, fps=fps)


# -- windows -------------------------------------------------------------------------------------------
def test_windows_share_one_grid_and_cover_the_video():
    p = plan_windows(duration=10.0, window=2.0, stride=1.0, frames=8)
    assert p.step == 0.25 and p.hop == 4 and p.grid == 40
    starts = p.starts()
    assert starts[:3] == [0, 4, 8] and starts[-1] + p.frames == p.grid
    spans = p.spans()
    assert spans[0].tolist() == [0.0, 2.0] and spans[-1][1] == pytest.approx(10.0)


def test_window_stride_rounds_to_grid_and_short_video_gets_one_window():
    p = plan_windows(duration=10.0, window=2.0, stride=0.9, frames=8)
    assert p.stride == pytest.approx(1.0)
    short = plan_windows(duration=1.2, window=2.0, stride=1.0, frames=4)
    assert short.starts() == [0] and short.window == pytest.approx(1.2) and short.grid == 4
    # a length that is not a multiple of the stride: the last window ends at the video's end
    p = plan_windows(duration=7.3, window=2.0, stride=1.0, frames=4)
    assert p.spans()[-1][1] == pytest.approx(p.grid * p.step) and p.grid * p.step <= 7.3 + p.step


# -- smoothing and merging ------------------------------------------------------------------------------
def test_smoothing_is_a_centred_mean_with_edges():
    s = np.array([[0.0], [3.0], [0.0], [3.0]])
    out = smooth_scores(s, 3)
    assert out[:, 0].tolist() == pytest.approx([1.5, 1.0, 2.0, 1.5])
    assert smooth_scores(s, 1).tolist() == s.tolist()


def test_single_label_merges_runs_and_absorbs_flicker():
    labels = ["bg", "a", "b"]
    # windows centred at 0.5, 1.5, ...: a a a b a a bg bg b b b
    seq = [1, 1, 1, 2, 1, 1, 0, 0, 2, 2, 2]
    scores = np.full((len(seq), 3), 0.1)
    for k, lab in enumerate(seq):
        scores[k, lab] = 0.8
    centres = np.arange(len(seq)) + 0.5
    segs = single_label_segments(scores, centres, 11.0, labels, background="bg", min_segment=1.5)
    assert [(s["label"], s["start"], s["end"]) for s in segs] == [("a", 0.0, 6.0), ("b", 8.0, 11.0)]
    assert segs[0]["score"] == pytest.approx((0.8 * 5 + 0.1) / 6)
    # without the background option it is a label like any other
    segs = single_label_segments(scores, centres, 11.0, labels, min_segment=1.5)
    assert [s["label"] for s in segs] == ["a", "bg", "b"]
    # low-confidence windows drop out
    scores[9] = [0.3, 0.3, 0.4]
    segs = single_label_segments(scores, centres, 11.0, labels, background="bg", min_score=0.5, min_segment=0)
    assert [(s["label"], s["start"], s["end"]) for s in segs][-2:] == [("b", 8.0, 9.0), ("b", 10.0, 11.0)]


def test_multilabel_segments_overlap_bridge_gaps_and_use_thresholds():
    labels = ["x", "y"]
    x = [0.9, 0.9, 0.2, 0.9, 0.9, 0.1, 0.1, 0.1]
    y = [0.1, 0.6, 0.6, 0.6, 0.1, 0.1, 0.6, 0.1]
    scores = np.stack([x, y], axis=1)
    centres = np.arange(8) + 0.5
    segs = multilabel_segments(scores, centres, 8.0, labels, thresholds=[0.5, 0.55], min_segment=1.5)
    got = [(s["label"], s["start"], s["end"]) for s in segs]
    assert got == [("x", 0.0, 5.0), ("y", 1.0, 4.0)]  # the one-window gap in x is bridged; lone y dropped
    segs = multilabel_segments(scores, centres, 8.0, labels, thresholds=[0.5, 0.7], min_segment=0)
    assert {s["label"] for s in segs} == {"x"}


def test_snapping_moves_shared_edges_together():
    segs = [{"start": 0.0, "end": 4.0, "label": "a", "score": 0.9}, {"start": 4.0, "end": 9.0, "label": "b", "score": 0.8}]
    out = snap_segments(segs, [3.72, 8.1], tolerance=0.5, duration=9.0)
    assert [(s["start"], s["end"]) for s in out] == [(0.0, 3.72), (3.72, 9.0)]
    assert snap_segments(segs, [3.72], tolerance=0.1, duration=9.0) == segs
    assert window_edges([0.5, 1.5, 2.5], 3.2).tolist() == [0.0, 1.0, 2.0, 3.2]


# -- exports ---------------------------------------------------------------------------------------------
SEGS = [{"start": 0.0, "end": 61.5, "label": "a&b <x>", "score": 0.91},
        {"start": 30.0, "end": 3725.25, "label": "y", "score": 0.5}]

VTT_CUE = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")
SRT_CUE = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")


def _secs(g):
    return int(g[0]) * 3600 + int(g[1]) * 60 + int(g[2]) + int(g[3]) / 1000


def _parse_blocks(text, timing, header):
    blocks = text.strip("\n").split("\n\n")
    if header:
        assert blocks[0] == "WEBVTT"
        blocks = blocks[1:]
    out = []
    for n, b in enumerate(blocks, 1):
        lines = b.split("\n")
        assert lines[0] == str(n)  # numbered cues
        m = timing.match(lines[1])
        assert m, lines[1]
        a, e = _secs(m.groups()[:4]), _secs(m.groups()[4:])
        assert e > a and len(lines) >= 3 and all(lines[2:])
        assert "-->" not in "\n".join(lines[2:])
        out.append((a, e, "\n".join(lines[2:])))
    return out


def test_time_stamps():
    assert vtt_time(3725.2504) == "01:02:05.250" and srt_time(0.0006) == "00:00:00,001"
    assert srt_time(59.9996) == "00:01:00,000"


def test_webvtt_and_srt_follow_their_rules():
    vtt = to_vtt(SEGS)
    assert vtt.startswith("WEBVTT\n\n")
    cues_v = _parse_blocks(vtt, VTT_CUE, header=True)
    assert [(a, e) for a, e, _ in cues_v] == [(0.0, 30.0), (30.0, 61.5), (61.5, 3725.25)]
    assert cues_v[0][2] == "a&amp;b &lt;x&gt; 0.91"  # entities escaped in WebVTT
    assert cues_v[1][2] == "a&amp;b &lt;x&gt; 0.91, y 0.50"  # overlapping labels share a cue
    cues_s = _parse_blocks(to_srt(SEGS), SRT_CUE, header=False)
    assert [(a, e) for a, e, _ in cues_s] == [(a, e) for a, e, _ in cues_v]
    assert cues_s[0][2] == "a&b <x> 0.91"
    for (_, e1, _), (a2, _, _) in zip(cues_v, cues_v[1:]):
        assert a2 >= e1  # time order, no overlap
    assert to_vtt([]) == "WEBVTT\n" and to_srt([]) == ""


def test_csv_round_trips_through_the_csv_module_and_ground_truth_reader(tmp_path):
    video = tmp_path / "v, with comma.mp4"
    video.write_bytes(b"x")
    text = to_csv([{"path": str(video), "segments": SEGS}])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["label"] for r in rows] == ["a&b <x>", "y"] and float(rows[1]["end"]) == 3725.25
    (tmp_path / "gt.csv").write_text(text)
    gt = read_ground_truth(tmp_path / "gt.csv")
    assert len(gt[str(video.resolve())]) == 2
    assert cues([]) == []


# -- evaluation --------------------------------------------------------------------------------------------
def test_segment_matching_at_tiou():
    pred = [{"start": 0, "end": 10, "label": "a"}, {"start": 10, "end": 12, "label": "a"},
            {"start": 20, "end": 30, "label": "b"}]
    truth = [{"start": 1, "end": 11, "label": "a"}, {"start": 20, "end": 40, "label": "b"}]
    assert tiou(pred[0], truth[0]) == pytest.approx(9 / 11)
    pairs = match_segments(pred, truth, 0.5)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0), (2, 1)]  # tIoU 0.5 exactly counts
    assert match_segments(pred, truth, 0.6) == [(0, 0, pytest.approx(9 / 11))]


def test_average_precision():
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision(np.array([0.5]), np.array([0])))


def test_ground_truth_errors(tmp_path):
    from vidtune.errors import DatasetError

    bad = tmp_path / "gt.csv"
    bad.write_text("file,label\nx.mp4,a\n")
    with pytest.raises(DatasetError, match="path,start,end,label"):
        read_ground_truth(bad)
    bad.write_text("path,start,end,label\nx.mp4,5,2,a\n")
    with pytest.raises(DatasetError, match="start < end"):
        read_ground_truth(bad)


# -- end to end ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag")
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    video = scene_video(root / "scenes.mp4", colours, seconds_each=2.0)
    return root, video


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    """One tiny run for the module (building even a tiny timm model takes seconds on a busy machine)."""
    return make_run(tmp_path_factory.mktemp("runs") / "run", ["r", "g", "b", "y"])


def variant(run, dest, **config_changes):
    """A copy of ``run`` with config.json changed (same weights and run id)."""
    import shutil

    shutil.copytree(run, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(config_changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def test_stream_pictures_equal_random_access_frames(scenes):
    from vidtune.io import open_video
    from vidtune.tag.stream import FrameStream

    _, video = scenes
    stream = FrameStream(video, grid_step=0.3, short_side=40)
    seen = {}
    n = 0
    for f in stream:
        n += 1
        for j in f.samples:
            seen[j] = f.picture
    assert n == 80 and sorted(seen) == list(range(stream.grid_size()))
    times = [(j + 0.5) * 0.3 for j in sorted(seen)]
    with open_video(video) as r:
        ref = r.frames_at(times, short_side=40)
    assert np.array_equal(np.stack([seen[j] for j in sorted(seen)]), ref)


def test_streaming_scores_equal_clip_by_clip_scores(run4, scenes):
    """The shared-grid path gives the logits run_clips gives for each window on its own."""
    from vidtune.runs.store import load_run
    from vidtune.tag.tagger import TagOptions, _scores_by_clips, tag_video

    _, video = scenes
    model, config = load_run(run4)
    res = tag_video(model, config, video, TagOptions(window=2.0, stride=1.0, smooth=0))
    ref, spans, _ = _scores_by_clips(model, config, video, res.plan, torch.device("cpu"), "single")
    assert np.allclose(spans, res.spans)
    assert np.allclose(res.scores, ref, atol=2e-4)
    assert res.scores.shape == (7, 4) and np.allclose(res.scores.sum(1), 1, atol=1e-5)
    assert [t.kind for t in res.shots.transitions] == ["cut", "cut", "cut"]
    assert [round(b, 2) for b in res.shots.boundaries] == [2.0, 4.0, 6.0]


def test_streaming_flow_cues_equal_clip_by_clip_ones(tmp_path, scenes):
    """A run that reads optical-flow cues tags in one streaming pass too, with each window's cues
    exactly as run_clips computes them for the window alone (the last frame has none)."""
    from vidtune.data.flow import FLOW_CHANNELS
    from vidtune.runs.store import load_run
    from vidtune.tag.tagger import TagOptions, _scores_by_clips, _streaming, tag_video

    _, video = scenes
    model, config = load_run(make_run(tmp_path / "flowrun", ["r", "g", "b", "y"], flow=FLOW_CHANNELS, seed=3))
    with torch.no_grad():
        model.head.fc.weight[:, -FLOW_CHANNELS:] *= 50  # make the scores hinge on the flow cues
    assert config.model.flow == FLOW_CHANNELS and _streaming(model, config)
    res = tag_video(model, config, video, TagOptions(window=2.0, stride=1.0, smooth=0))
    ref, spans, _ = _scores_by_clips(model, config, video, res.plan, torch.device("cpu"), "single")
    assert np.allclose(spans, res.spans)
    assert np.allclose(res.scores, ref, atol=2e-4)


def test_tag_cli_outputs(tmp_path, run4, scenes, capsys):
    from vidtune.cli.main import main

    _, video = scenes
    run = variant(run4, tmp_path / "run", background="g")
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["tag", str(run), str(video), str(bad), "--json", "-q", "--scores"]) == 1
    out = json.loads(capsys.readouterr().out)
    ok, err = out["results"]
    assert err["path"] == str(bad) and err["error"]
    assert ok["path"] == str(video) and ok["task"] == "single" and len(ok["shots"]) == 4
    assert all(s["label"] != "g" for s in ok["segments"])  # the run's background label is left out
    assert all(0 <= s["start"] < s["end"] <= ok["duration"] + 1e-6 for s in ok["segments"])
    assert set(ok["segments"][0]) == {"start", "end", "label", "score"}
    assert len(ok["windows"]) == 7 and len(ok["labels"]) == 4
    # exports to files, a plot, and subtitles parse
    assert main(["tag", str(run), str(video), "-q", "--format", "vtt", "--out", str(tmp_path / "t.vtt"),
                 "--plot", str(tmp_path / "t.png"), "--background", "r"]) == 0
    _parse_blocks((tmp_path / "t.vtt").read_text(), VTT_CUE, header=True)
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["tag", str(run), str(video), "-q", "--format", "srt"]) == 0
    _parse_blocks(capsys.readouterr().out, SRT_CUE, header=False)
    assert main(["tag", str(run), str(video), "-q", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["path"] == str(video) for r in rows)
    # several videos: one subtitle file each in a folder
    assert main(["tag", str(run), str(video), str(video), "-q", "--format", "srt",
                 "--out", str(tmp_path / "subs")]) == 0
    assert (tmp_path / "subs" / "scenes.srt").exists()
    assert "scenes.mp4" in capsys.readouterr().out  # the segment table
    # bad options: exit 2 with a message
    assert main(["tag", str(run), str(video), "-q", "--background", "nope", "--json"]) == 2
    assert "nope" in json.loads(capsys.readouterr().out)["error"]


def test_multilabel_run_tags_overlapping_segments_with_its_thresholds(tmp_path, run4, scenes, capsys):
    from vidtune.cli.main import main

    _, video = scenes
    run = variant(run4, tmp_path / "ml", task="multilabel", thresholds=[0.0, 0.0, 1.01, 1.01])
    assert main(["tag", str(run), str(video), "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)["results"][0]
    assert r["task"] == "multilabel"
    # thresholds 0 -> labels r and g cover the whole video at once; 1.01 -> b and y never show
    assert {(s["label"], s["start"], s["end"]) for s in r["segments"]} == {("r", 0.0, 8.0), ("g", 0.0, 8.0)}
    # sigmoid scores: independent per label, not summing to one
    assert main(["tag", str(run), str(video), "--json", "-q", "--scores", "--smooth", "0"]) == 0
    w = json.loads(capsys.readouterr().out)["results"][0]["windows"]
    assert any(abs(sum(x["scores"]) - 1) > 0.05 for x in w)


def test_eval_segments(tmp_path, run4, scenes, capsys):
    from vidtune.cli.main import main
    from vidtune.runs.store import load_run
    from vidtune.tag.tagger import TagOptions, tag_video

    _, video = scenes
    run = run4
    model, config = load_run(run)
    res = tag_video(model, config, video, TagOptions(window=2.0))
    # ground truth = the tagger's own segments -> perfect scores; one shifted -> a miss
    gt = tmp_path / "gt.csv"
    gt.write_text(to_csv([{"path": "scenes.mp4", "segments": res.segments}]))
    (tmp_path / "scenes.mp4").symlink_to(video)
    assert main(["eval-segments", str(run), str(gt), "--json", "-q"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["f1"] == 1.0 and m["frame_accuracy"] == 1.0 and m["boundary_error"] == 0.0
    truth = read_ground_truth(gt)
    key = next(iter(truth))
    truth[key][0] = {**truth[key][0], "label": "other"}
    res.path = key
    m = evaluate_results([res], truth)
    assert m["tp"] == len(res.segments) - 1 and m["recall"] < 1 and m["frame_accuracy"] < 1


def test_memory_stays_bounded_on_a_long_video(tmp_path, run4):
    """Peak RSS tagging a 25-minute video is within a few MB of tagging a 75-second one."""
    script = textwrap.dedent("""
        import resource, sys, numpy as np, torch
        sys.path.insert(0, sys.argv[3])
        from tests.videos import write_video
        from pathlib import Path
        from vidtune.tag.tagger import TagOptions, tag_video
        from vidtune.runs.store import load_run
        torch.set_num_threads(1)
        seconds, out, run = float(sys.argv[1]), Path(sys.argv[2]), sys.argv[4]
        fps = 4
        def frames():
            for i in range(int(seconds * fps)):
                v = (i // (fps * 20)) * 37 % 256  # a new scene every 20 s
                img = np.full((48, 64, 3), v, np.uint8)
                img[:, (i * 2) % 64 :][:, :4] = 255 - v
                yield img
        video = write_video(out / "long.mp4", frames(), fps=fps, gop=50)
        model, config = load_run(run)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = tag_video(model, config, video, TagOptions(window=6.0, stride=6.0))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(peak - before, len(r.spans), len(r.shots.transitions))
    """)
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    results = {}
    for seconds in (75, 1500):
        d = tmp_path / str(seconds)
        d.mkdir()
        p = subprocess.run([sys.executable, "-c", script, str(seconds), str(d), root, str(run4)], capture_output=True,
                           text=True, timeout=240)
        assert p.returncode == 0, p.stderr[-2000:]
        growth_kb, windows, cuts = (int(x) for x in p.stdout.split())
        results[seconds] = (growth_kb, windows, cuts)
    assert results[1500][1] == 250 and results[1500][2] == 74  # every window scored, every scene cut found
    # 20x longer: its 1,000 sampled frames at 168x224 would take 113 MB if they were kept
    assert results[1500][0] - results[75][0] < 24 * 1024, results


def test_low_confidence_labels_get_a_hint_about_min_score_and_background(capsys):
    from vidtune.cli.tag import _low_confidence_hint

    unsure = {"path": "odd.mp4", "task": "single_label",
              "segments": [{"start": 0, "end": 8, "label": "a", "score": 0.34},
                           {"start": 8, "end": 10, "label": "b", "score": 0.81}]}
    _low_confidence_hint(unsure)
    err = capsys.readouterr().err
    assert "odd.mp4" in err and "80%" in err and "--min-score" in err and "--background" in err
    sure = {**unsure, "segments": [{"start": 0, "end": 8, "label": "a", "score": 0.9}]}
    _low_confidence_hint(sure)
    _low_confidence_hint({**unsure, "task": "multilabel"})
    assert capsys.readouterr().err == ""
