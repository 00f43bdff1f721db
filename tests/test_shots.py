"""Shot boundaries on composed videos whose cuts, dissolves and fades are known to the frame."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.videos import write_video
from vidtune.data.sample import write_sample_dataset
from vidtune.tag.shots import ShotDetector, detect_shots, distance, match_boundaries, signature
from vidtune.tag.synthetic import Piece, compose_video

FPS = 25


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    root = tmp_path_factory.mktemp("shots")
    info = write_sample_dataset(root / "clips", per_class=2, seconds=3.0, fps=12, size=(96, 72), seed=3)
    clips = info.files
    pieces = [
        Piece(clips[0], "a", seconds=2.4),
        Piece(clips[2], "b", seconds=2.4, transition="cut"),
        Piece(clips[4], "c", seconds=2.8, transition="dissolve", frames=10),
        Piece(clips[6], "d", seconds=2.8, transition="fade", frames=8),
        Piece(clips[1], "a", seconds=2.4, transition="cut"),
        Piece(clips[3], "b", seconds=2.8, transition="dissolve", frames=6),
        Piece(clips[5], "c", seconds=2.4, transition="cut"),
    ]
    truth = compose_video(root / "composed.mp4", pieces, fps=FPS, size=(128, 96))
    return root / "composed.mp4", truth


def test_compose_ground_truth_is_consistent(composed):
    path, truth = composed
    kinds = [t["type"] for t in truth["transitions"]]
    assert kinds == ["cut", "dissolve", "fade", "cut", "dissolve", "cut"]
    assert truth["segments"][0]["start"] == 0 and truth["segments"][-1]["end"] == pytest.approx(truth["duration"])
    for s, t in zip(truth["segments"][1:], truth["segments"][:-1]):
        assert s["start"] == t["end"]


def test_finds_every_cut_dissolve_and_fade_within_one_frame(composed):
    path, truth = composed
    res = detect_shots(path)
    frame = 1.0 / FPS
    m = match_boundaries(res.boundaries, truth["boundaries"], tolerance=frame)
    assert m["precision"] == 1.0 and m["recall"] == 1.0, (res.to_dict()["transitions"], truth["transitions"])
    for gt, boundary in zip(truth["transitions"], truth["boundaries"]):
        found = min(res.transitions, key=lambda t: abs(t.time - boundary))
        if gt["type"] == "cut":
            assert found.kind == "cut" and found.first == gt["first"]
        else:  # the blended span itself, to a frame
            assert found.kind == "gradual"
            assert abs(found.first - gt["first"]) <= 1 and abs(found.last - gt["last"]) <= 1
    # shots tile the video
    assert res.shots[0].start == 0 and res.shots[-1].end == pytest.approx(res.duration, abs=0.05)
    assert len(res.shots) == len(truth["transitions"]) + 1


def test_still_and_slowly_changing_video_has_one_shot(tmp_path):
    # a slow pan of a gradient plus noise: change every frame, but no boundary
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, 200)[None, :, None] * np.ones((72, 1, 3))
    frames = [np.clip(np.roll(base, i, axis=1)[:, :96] + rng.normal(0, 4, (72, 96, 3)), 0, 255).astype(np.uint8)
              for i in range(75)]
    path = write_video(tmp_path / "pan.mp4", frames, fps=25)
    res = detect_shots(path)
    assert res.transitions == [] and len(res.shots) == 1


def test_signature_distance_bounds():
    black = np.zeros((36, 48, 3), np.uint8)
    white = np.full((36, 48, 3), 255, np.uint8)
    assert distance(signature(black), signature(black)) == 0
    assert distance(signature(black), signature(white)) == pytest.approx(1 / 3 + 2.0, abs=1e-3)


def test_detector_memory_keeps_only_recent_signatures():
    det = ShotDetector(fps=25)
    rng = np.random.default_rng(1)
    for i in range(2000):
        det.push(i / 25, rng.integers(0, 255, (36, 48, 3), dtype=np.uint8) if i % 500 == 0 else
                 np.full((36, 48, 3), (i // 500) * 60, np.uint8))
    assert len(det.sigs) <= det._keep
    assert det.finish().frames == 2000


def test_match_boundaries_counts_one_to_one():
    m = match_boundaries([1.0, 1.02, 5.0], [1.01, 3.0], tolerance=0.04)
    assert m["tp"] == 1 and m["precision"] == pytest.approx(1 / 3) and m["recall"] == 0.5


def test_shots_cli_json(composed, capsys):
    from vidtune.cli.main import main

    path, truth = composed
    assert main(["shots", str(path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["results"][0]
    assert len(r["shots"]) == len(truth["transitions"]) + 1
    assert {t["type"] for t in r["transitions"]} == {"cut", "gradual"}
    assert main(["shots", str(path)]) == 0  # table
    assert "shots" in capsys.readouterr().out


def test_shots_cli_bad_file_is_reported(tmp_path, capsys):
    from vidtune.cli.main import main

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    assert main(["shots", str(bad), "--json"]) == 1
    r = json.loads(capsys.readouterr().out)["results"][0]
    assert r["path"] == str(bad) and "error" in r


def test_a_cut_smeared_over_three_frames_is_a_cut_not_a_gradual_transition():
    """A hard cut that compression or blur spreads over 3 frames (0.08 s) is a cut at its largest change; a
    blend over 4 frames or more stays gradual."""
    from vidtune.tag.shots import ShotDetector

    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (72, 96, 3), dtype=np.uint8) for _ in range(2))
    a = np.clip(a.astype(int) // 2 + 40, 0, 255).astype(np.uint8)

    def run(middle: list[float]) -> list:
        det = ShotDetector(FPS)
        frames = [a] * 50 + [(w * b + (1 - w) * a).astype(np.uint8) for w in middle] + [b] * 50
        for i, f in enumerate(frames):
            det.push(i / FPS, f)
        return det.finish().transitions

    smeared = run([0.3, 0.65])  # two in-between frames: no single frame carries most of the change
    assert [t.kind for t in smeared] == ["cut"] and smeared[0].first == smeared[0].last and 50 <= smeared[0].first <= 52
    blend = run([0.2, 0.4, 0.6, 0.8])
    assert [t.kind for t in blend] == ["gradual"]
