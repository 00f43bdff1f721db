"""Corruptions: each changes frames the way it claims, is deterministic, and worsens with severity."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from tests.videos import index_from_frame, write_indexed_video
from vidtune.data.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    TEMPORAL,
    RandomCorruption,
    corrupt,
    disk_kernel,
    get_corruption,
    line_kernel,
    parse_corruptions,
    parse_severities,
)
from vidtune.errors import VidtuneError
from vidtune.runs.features import FrameOp

PIXEL = [n for n in CORRUPTIONS if n not in TEMPORAL]
TIMES = np.arange(6) / 3.0  # 6 frames over 2 s


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """A textured, moving, coloured 6-frame clip (96 x 128): edges, flat areas, mid-tones."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(40, 216, (12, 16, 3)).astype(np.float32)
    base = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)  # (96, 128, 3) 8-px blocks
    yy, xx = np.mgrid[0:96, 0:128]
    frames = []
    for i in range(6):
        f = base + 25 * np.sin((xx + 3 * i) / 3.0)[..., None] + 0.15 * (yy - 48)[..., None]
        frames.append(np.clip(f, 0, 255))
    return np.stack(frames).astype(np.uint8)


def test_registry_and_frame_op_protocol():
    assert set(CORRUPTIONS) == {"gaussian_noise", "shot_noise", "defocus_blur", "motion_blur", "camera_shake",
                                "compression", "brightness", "contrast", "exposure", "frame_drop", "frame_rate"}
    assert set(TEMPORAL) == {"frame_drop", "frame_rate"}
    ids = set()
    for name in CORRUPTIONS:
        for s in SEVERITIES:
            op = get_corruption(name, s, seed=1)
            assert isinstance(op, FrameOp)
            assert pickle.loads(pickle.dumps(op)) == op  # decoding workers get a copy
            ids.add(op.cache_id)
    assert len(ids) == len(CORRUPTIONS) * len(SEVERITIES)  # no two ever share cached features
    assert get_corruption("shot_noise", 2, seed=1).cache_id != get_corruption("shot_noise", 2, seed=2).cache_id


@pytest.mark.parametrize("name", PIXEL)
def test_pixel_corruption_is_deterministic_and_psnr_falls_with_severity(clip, name):
    scores = []
    for s in SEVERITIES:
        a = get_corruption(name, s, seed=7)(clip, TIMES, np.random.default_rng(3))
        b = get_corruption(name, s, seed=7)(clip.copy(), TIMES, np.random.default_rng(3))
        assert a.shape == clip.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
        scores.append(psnr(clip, a))
    assert all(np.isfinite(scores)), scores  # every level changes the frames
    assert all(x > y for x, y in zip(scores, scores[1:])), f"{name}: PSNR by severity {scores}"
    assert scores[-1] < 32, f"{name}: severity 5 is too mild ({scores[-1]:.1f} dB)"


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "motion_blur", "camera_shake", "exposure"])
def test_random_corruptions_depend_on_seed_and_rng(clip, name):
    op = get_corruption(name, 3, seed=0)
    a = op(clip, TIMES, np.random.default_rng(1))
    assert not np.array_equal(a, op(clip, TIMES, np.random.default_rng(2)))
    assert not np.array_equal(a, get_corruption(name, 3, seed=1)(clip, TIMES, np.random.default_rng(1)))
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    op(clip, TIMES, rng)
    assert rng.bit_generator.state == state  # the op peeks, so retime and __call__ see the same stream


def test_gaussian_noise_is_zero_mean_with_the_stated_sigma():
    grey = np.full((4, 64, 64, 3), 128, np.uint8)
    for s, sigma in zip(SEVERITIES, (0.08, 0.12, 0.18, 0.26, 0.38)):
        d = get_corruption("gaussian_noise", s)(grey, None, None).astype(float) - 128
        assert abs(d.mean()) < 2
        # clipping at 0/255 shrinks the largest sigmas a little
        assert d.std() == pytest.approx(sigma * 255, rel=0.12 if s < 4 else 0.25)


def test_shot_noise_grows_with_brightness():
    frame = np.zeros((2, 64, 64, 3), np.uint8)
    frame[:, :, :32] = 16
    frame[:, :, 32:] = 128
    d = get_corruption("shot_noise", 3)(frame, None, None).astype(float) - frame
    assert d[:, :, 32:].std() > 2 * d[:, :, :32].std()  # Poisson: variance proportional to signal
    assert abs(d[:, :, 32:].mean()) < 3


def _spread(op, size=97) -> np.ndarray:
    """The picture of a single bright point after ``op``: its point spread function."""
    pt = np.zeros((1, size, size, 3), np.uint8)
    pt[0, size // 2, size // 2] = 255
    return op(pt, None, None)[0, :, :, 0].astype(float)


def test_defocus_is_a_disk_and_motion_blur_a_streak():
    size = 224  # sizes are given for 224-pixel frames
    disk = _spread(get_corruption("defocus_blur", 5), size)
    ys, xs = np.nonzero(disk > 0.2 * disk.max())
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1  # round
    assert 15 <= ys.max() - ys.min() <= 19  # radius 9 at severity 5
    streak = _spread(get_corruption("motion_blur", 5, seed=3), size)
    ys, xs = np.nonzero(streak > 0)
    cov = np.cov(np.stack([ys, xs]).astype(float))
    ev = np.linalg.eigvalsh(cov)
    assert ev[1] > 20 * ev[0]  # a line, not a blob
    assert np.hypot(ys.max() - ys.min(), xs.max() - xs.min()) == pytest.approx(28, abs=4)
    # kernels are normalised: a flat picture keeps its value
    np.testing.assert_allclose(disk_kernel(3.3).sum(), 1.0)
    np.testing.assert_allclose(line_kernel(7.5, 33).sum(), 1.0)
    flat = np.full((1, 40, 50, 3), 90, np.uint8)
    for name in ("defocus_blur", "motion_blur"):
        np.testing.assert_array_equal(get_corruption(name, 4)(flat, None, None), flat)


def test_blur_sizes_scale_with_resolution():
    small = _spread(get_corruption("defocus_blur", 5), 112)
    ys, _ = np.nonzero(small > 0.2 * small.max())
    assert 7 <= ys.max() - ys.min() <= 10  # half the frame, half the radius


def test_camera_shake_moves_smoothly_over_time(clip):
    still = np.repeat(clip[:1], 5, axis=0)  # the scene does not move: only the camera does
    times = np.array([0.0, 0.01, 0.02, 0.5, 1.0])
    out = get_corruption("camera_shake", 4, seed=2)(still, times, np.random.default_rng(0))
    near = np.abs(out[1].astype(float) - out[0]).mean()
    far = max(np.abs(out[k].astype(float) - out[0]).mean() for k in (3, 4))
    assert far > 3 * near  # 10 ms apart the camera has barely moved; half a second later it has
    assert np.abs(out.astype(float) - still).mean() > 5


def test_compression_really_reencodes(clip, monkeypatch):
    import av

    calls = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: calls.append(k.get("format")) or real_open(*a, **k))
    out = get_corruption("compression", 5)(clip, TIMES, None)
    assert calls == ["mp4", "mp4"]  # encoded to and decoded from an in-memory MP4
    flat = np.full((3, 65, 81, 3), 100, np.uint8)  # odd sizes survive 4:2:0
    assert get_corruption("compression", 5)(flat, None, None).shape == flat.shape
    assert psnr(flat, get_corruption("compression", 5)(flat, None, None)) > 40  # flat areas survive
    assert psnr(clip, out) < 30  # texture does not
    mp4v = get_corruption("compression", 5, codec="mpeg4")(clip, TIMES, None)
    assert mp4v.shape == clip.shape and psnr(clip, mp4v) < 35


def test_brightness_contrast_exposure(clip):
    assert get_corruption("brightness", 3)(clip, None, None).mean() > clip.mean() + 40
    low = get_corruption("contrast", 3)(clip, None, None).astype(float)
    assert low.std() < 0.3 * clip.std()
    assert low.mean() == pytest.approx(clip.mean(), abs=2)
    still = np.repeat(clip[:1], 12, axis=0)
    times = np.linspace(0, 2.2, 12)
    out = get_corruption("exposure", 5, seed=4)(still, times, np.random.default_rng(0)).astype(float)
    means = out.mean(axis=(1, 2, 3))
    assert means.max() - means.min() > 60  # the exposure swings over the clip
    assert np.abs(np.diff(means)).max() < 0.6 * (means.max() - means.min())  # smoothly, not frame by frame
    assert (out >= 254.5).mean() > 0.05 or (out <= 1).mean() > 0.05  # highlights blow out or shadows crush


def test_frame_drop_freezes_on_earlier_frames():
    ts = np.linspace(0, 9.95, 200)
    changed = []
    for s in SEVERITIES:
        op = get_corruption("frame_drop", s, seed=1)
        out = op.retime(ts, 10.0, np.random.default_rng(0))
        np.testing.assert_array_equal(out, op.retime(ts, 10.0, np.random.default_rng(0)))
        assert np.all(out <= ts) and np.all(out >= 0)
        frozen = out != ts
        changed.append(frozen.mean())
        # frozen samples within one lost run show the same instant
        assert len(np.unique(out[frozen])) < frozen.sum() or frozen.sum() <= 1
    assert all(a <= b for a, b in zip(changed, changed[1:])) and changed[-1] > 0.5 > changed[0]


def test_frame_rate_holds_frames_at_a_lower_rate():
    ts = np.linspace(1.0, 3.0, 16)
    for s, fps in zip(SEVERITIES, (12, 8, 5, 3, 2)):
        out = get_corruption("frame_rate", s, seed=0).retime(ts, 4.0, np.random.default_rng(0))
        assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() < 4.0
        np.testing.assert_allclose(out * fps, np.round(out * fps), atol=1e-6)  # on the low-rate grid
    slow = get_corruption("frame_rate", 5).retime(ts, 4.0, np.random.default_rng(0))
    assert len(np.unique(slow)) < len(ts)  # frames repeat


def test_temporal_corruptions_through_the_decoder(tmp_path):
    """ClipDataset calls retime before decoding: frame_drop returns earlier frames, repeated."""
    from vidtune.data.manifest import VideoItem
    from vidtune.models.backbones import PretrainedConfig
    from vidtune.runs.features import ClipDataset, Sampling

    path = write_indexed_video(tmp_path / "v.mp4", 100, h=48, w=64, fps=25)
    cfg = PretrainedConfig(input_size=48, crop_pct=1.0)
    item = VideoItem(path=path, label="x")
    sampling = Sampling(16, "centre")
    clean = ClipDataset([item], sampling, cfg)[0]["frames"].numpy()
    op = get_corruption("frame_drop", 5, seed=0)
    dropped = ClipDataset([item], sampling, cfg, frame_op=op)[0]["frames"].numpy()
    want = [index_from_frame(f) for f in clean]
    got = [index_from_frame(f) for f in dropped]
    assert want == sorted(set(want)) and got != want
    assert all(g <= w for g, w in zip(got, want)) and len(set(got)) < len(got)
    noisy = ClipDataset([item], sampling, cfg, frame_op=get_corruption("gaussian_noise", 2))[0]["frames"].numpy()
    assert noisy.shape == clean.shape and 10 < psnr(clean, noisy) < 30


def test_random_corruption_for_training(clip):
    aug = RandomCorruption(seed=3, severities=(1, 2, 3))
    assert isinstance(aug, FrameOp) and pickle.loads(pickle.dumps(aug)) == aug
    chosen = [aug.choose(np.random.default_rng(k)) for k in range(200)]
    assert {c.name for c in chosen} == set(CORRUPTIONS)
    assert {c.severity for c in chosen} == {1, 2, 3}
    for k in range(30):  # retime and __call__ of one clip agree on the corruption
        rng = np.random.default_rng(k)
        op = aug.choose(rng)
        ts = aug.retime(TIMES, 2.0, rng)
        out = aug(clip, ts, rng)
        if op.name in TEMPORAL:
            assert np.array_equal(out, clip)
            np.testing.assert_array_equal(ts, op.retime(TIMES, 2.0, rng))
        else:
            np.testing.assert_array_equal(ts, TIMES)
            np.testing.assert_array_equal(out, op(clip, TIMES, rng))
    only = RandomCorruption(names=("brightness",), severities=(5,), p=0.5)
    outs = [only(clip, TIMES, np.random.default_rng(k)) for k in range(40)]
    clean = sum(np.array_equal(o, clip) for o in outs)
    assert 8 < clean < 32  # about half the clips stay clean
    assert RandomCorruption(seed=0).cache_id != RandomCorruption(seed=1).cache_id
    assert RandomCorruption(p=0.0)(clip, TIMES, np.random.default_rng(0)) is clip


def test_bad_arguments_are_clear_errors(clip):
    with pytest.raises(VidtuneError, match="severity must be one of"):
        get_corruption("contrast", 6)
    with pytest.raises(VidtuneError, match="Did you mean gaussian_noise"):
        get_corruption("gausian_noise")
    with pytest.raises(VidtuneError, match="changes which frames are decoded"):
        corrupt(clip, "frame_drop")
    with pytest.raises(VidtuneError, match="severities"):
        RandomCorruption(severities=(0, 2))
    with pytest.raises(ValueError, match="uint8"):
        get_corruption("contrast")(clip.astype(np.float32), None, None)
    assert parse_corruptions("contrast, brightness,contrast") == ["contrast", "brightness"]
    assert parse_corruptions(None) == list(CORRUPTIONS)
    assert parse_severities("1-3,5") == [1, 2, 3, 5] and parse_severities(None) == [1, 2, 3, 4, 5]
    for bad in ("0", "2,x", "4-7"):
        with pytest.raises(VidtuneError, match="severities"):
            parse_severities(bad)
    np.testing.assert_array_equal(corrupt(clip, "brightness", 1, seed=0),
                                  get_corruption("brightness", 1).apply(clip))
