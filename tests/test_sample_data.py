"""The built-in synthetic sample dataset: layout, determinism, encoded properties, argument checks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from vidtune.data.sample import (
    DESIGNS,
    SampleDataError,
    SampleDataExistsError,
    default_class_names,
    write_sample_dataset,
)
from vidtune.errors import VidtuneError

# Small and short so the whole module runs in a few seconds.
SMALL = dict(size=(64, 48), seconds=1.0, fps=8)


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def video_props(path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(video=0))
        return dict(
            codec=stream.codec_context.name,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(stream.average_rate),
            frames=len(frames),
            pix_fmt=frames[0].format.name,
            # Duration from the frame timestamps: last frame's start + one frame.
            duration=float((frames[-1].pts - frames[0].pts) * stream.time_base)
            + 1 / float(stream.average_rate),
        )


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "ds"
    calls = []
    info = write_sample_dataset(out, per_class=3, seed=7, progress=lambda d, t: calls.append((d, t)), **SMALL)
    return out, info, calls


def test_default_class_names():
    assert default_class_names(4) == ["ball", "checkerboard", "stripes", "ring"]
    assert default_class_names(len(DESIGNS)) == list(DESIGNS)
    for bad in (1, len(DESIGNS) + 1, 2.0, True):
        with pytest.raises(ValueError):
            default_class_names(bad)


def test_layout_counts_and_progress(small_ds):
    out, info, calls = small_ds
    assert info.out_dir == out
    assert info.classes == ["ball", "checkerboard", "stripes", "ring"]
    assert info.counts == dict.fromkeys(info.classes, 3)
    assert info.total == 12 and len(info.files) == 12
    for name in info.classes:
        assert sorted(p.name for p in (out / name).iterdir()) == [f"{name}_{i:03d}.mp4" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == sorted(info.classes)
    assert set(info.files) == {p for p in out.rglob("*") if p.is_file()}  # no temp files left
    assert calls == [(i, 12) for i in range(1, 13)]


def test_files_decode_with_requested_properties(small_ds):
    _, info, _ = small_ds
    assert (info.size, info.fps, info.frames, info.codec) == ((64, 48), 8, 8, "libx264")
    for path in info.files[::4]:
        p = video_props(path)
        assert p["codec"] == "h264" and p["pix_fmt"] == "yuv420p"
        assert (p["width"], p["height"]) == (64, 48)
        assert p["fps"] == pytest.approx(8.0)
        assert abs(p["frames"] - 8) <= 1
        assert p["duration"] == pytest.approx(1.0, abs=1 / 8 + 1e-6)


def test_same_seed_identical_different_seed_differs(small_ds, tmp_path):
    out, info, _ = small_ds
    again = write_sample_dataset(tmp_path / "again", per_class=3, seed=7, **SMALL)
    other = write_sample_dataset(tmp_path / "other", per_class=1, seed=8, **SMALL)
    for a, b in zip(info.files, again.files):
        assert np.array_equal(decode(a), decode(b)), a.name
    first = decode(info.files[0])
    assert not np.array_equal(first, decode(other.files[0]))
    # Clips of one class differ from each other, and frames move over time.
    assert not np.array_equal(first, decode(info.files[1]))
    assert np.abs(first[0].astype(int) - first[-1].astype(int)).mean() > 1.0


def test_encoding_is_bit_exact(small_ds, tmp_path):
    """Same arguments -> byte-identical files (x264 cpu-independent, numpy RGB->YUV), repeatedly."""
    out, info, _ = small_ds
    for k in range(3):
        again = write_sample_dataset(
            tmp_path / f"r{k}", classes=["ring", "ball"], per_class=2, seed=7, **SMALL
        )
        for path in again.files:
            assert path.read_bytes() == (out / path.parent.name / path.name).read_bytes(), path.name


@pytest.mark.parametrize("codec, container", [("libx264", "mkv"), ("mpeg4", "avi")])
def test_other_containers_are_byte_reproducible(tmp_path, codec, container):
    a, b = (
        write_sample_dataset(tmp_path / d, classes=2, per_class=1, codec=codec, container=container, **SMALL)
        for d in "ab"
    )
    assert [p.suffix for p in a.files] == ["." + container] * 2
    assert [p.read_bytes() for p in a.files] == [p.read_bytes() for p in b.files]


def test_clip_does_not_depend_on_other_classes(small_ds, tmp_path):
    out, _, _ = small_ds
    sub = write_sample_dataset(tmp_path / "sub", classes=["ring", "ball"], per_class=1, seed=7, **SMALL)
    assert sub.classes == ["ring", "ball"]
    assert np.array_equal(decode(sub.files[0]), decode(out / "ring" / "ring_000.mp4"))


def test_custom_names_get_distinct_designs(tmp_path):
    info = write_sample_dataset(tmp_path / "ds", classes=["cat", "stripes", "dog"], per_class=1, **SMALL)
    assert info.classes == ["cat", "stripes", "dog"]
    assert [p.parent.name for p in info.files] == ["cat", "stripes", "dog"]
    clips = [decode(p) for p in info.files]
    assert not np.array_equal(clips[0], clips[2])


def test_imbalance(tmp_path):
    info = write_sample_dataset(tmp_path / "ds", per_class=8, imbalance=4.0, seed=1, **SMALL)
    counts = [info.counts[c] for c in info.classes]
    assert counts == [8, 5, 3, 2]
    assert counts[0] / counts[-1] == 4
    for name, n in info.counts.items():
        assert len(list((tmp_path / "ds" / name).glob("*.mp4"))) == n


def test_mpeg4_avi_and_mp4(tmp_path):
    avi = write_sample_dataset(tmp_path / "avi", classes=2, per_class=1, codec="mpeg4", **SMALL)
    mp4 = write_sample_dataset(
        tmp_path / "mp4", classes=2, per_class=1, codec="mpeg4", container="mp4", **SMALL
    )
    assert [p.suffix for p in avi.files] == [".avi", ".avi"]
    assert [p.suffix for p in mp4.files] == [".mp4", ".mp4"]
    for path in (avi.files[0], mp4.files[0]):
        p = video_props(path)
        assert p["codec"] == "mpeg4" and (p["width"], p["height"]) == (64, 48)
        assert abs(p["frames"] - 8) <= 1
    # Both encode the same source frames.
    diff = np.abs(decode(avi.files[0]).astype(int) - decode(mp4.files[0]).astype(int)).mean()
    assert diff < 3.0


def test_odd_size_is_rounded_down_to_even(tmp_path):
    info = write_sample_dataset(tmp_path / "ds", classes=2, per_class=1, size=(65, 49), seconds=0.5, fps=6)
    assert info.size == (64, 48)
    p = video_props(info.files[0])
    assert (p["width"], p["height"]) == (64, 48)
    assert abs(p["frames"] - 3) <= 1


def test_frames_survive_coding(tmp_path):
    """The object is clearly visible after H.264: the frame is far from a blurred background."""
    info = write_sample_dataset(tmp_path / "ds", classes=["checkerboard", "ball"], per_class=1, size=(96, 64))
    frames = decode(info.files[0]).astype(np.float32)
    assert frames.shape == (24, 64, 96, 3)
    assert frames.std(axis=(1, 2)).mean() > 10.0


def test_non_empty_out_dir_needs_overwrite(small_ds, tmp_path):
    out = tmp_path / "ds"
    write_sample_dataset(out, classes=2, per_class=3, **SMALL)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(SampleDataExistsError) as exc:
        write_sample_dataset(out, classes=2, per_class=1, **SMALL)
    assert isinstance(exc.value, FileExistsError) and isinstance(exc.value, VidtuneError)
    info = write_sample_dataset(out, classes=2, per_class=1, overwrite=True, **SMALL)
    assert sorted(p.name for p in (out / "ball").iterdir()) == ["ball_000.mp4"]  # stale clips removed
    assert (out / "notes.txt").read_text() == "keep me"
    assert info.total == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(per_class=0), "per_class"),
        (dict(per_class=2.5), "per_class"),
        (dict(classes=1), "between 2"),
        (dict(classes=["only"]), "at least 2"),
        (dict(classes=len(DESIGNS) + 1), "between 2"),
        (dict(classes="ball"), "list of class names"),
        (dict(classes=["a", "A"]), "unique"),
        (dict(classes=["a", "b/c"]), "folder name"),
        (dict(classes=["a", ""]), "non-empty"),
        (dict(classes=["a", ".hidden"]), "folder name"),
        (dict(size=(15, 120)), "size"),
        (dict(size=(160, 8)), "size"),
        (dict(size=(160,)), "size"),
        (dict(size=(100_000, 120)), "size"),
        (dict(seconds=0), "seconds"),
        (dict(seconds=float("nan")), "seconds"),
        (dict(seconds=0.01, fps=12), "no frames"),
        (dict(fps=0), "fps"),
        (dict(fps=12.5), "fps"),
        (dict(imbalance=0.5), "imbalance"),
        (dict(per_class=2, imbalance=10.0), "smallest class"),
        (dict(codec="vp9"), "codec"),
        (dict(codec="libx264", container="avi"), "avi"),
        (dict(progress=3), "progress"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match) as exc:
        write_sample_dataset(tmp_path / "ds", **kwargs)
    assert isinstance(exc.value, SampleDataError)
    assert not (tmp_path / "ds").exists()  # validated before anything is written


def test_out_dir_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        write_sample_dataset(f, per_class=1, **SMALL)


def test_time_base_matches_fps(small_ds):
    _, info, _ = small_ds
    with av.open(str(info.files[0])) as c:
        s = c.streams.video[0]
        assert s.average_rate == Fraction(8)
        assert Path(c.name).suffix == ".mp4"


# ---------------------------------------------------------------------------------------------------
# kind="motion": classes that differ only in the order of frames
# ---------------------------------------------------------------------------------------------------

from vidtune.data.sample import (  # noqa: E402
    MOTION_CLASSES,
    _motion_key,
    _MotionClip,
    motion_pairs,
    render_motion_clip,
)

MOTION_NAMES = [
    "left", "right", "up", "down", "clockwise", "anticlockwise",
    "approach", "recede", "zoom_in", "zoom_out", "appear", "disappear",
]
SEGMENT_FRAMES = [1, 4, 7, 10, 13, 16, 19, 22]  # 8 segment centres of a 24-frame clip (the trainer's sampling)


def motion_frames(name: str, index: int, seed: int = 0, size=(160, 120), sel=SEGMENT_FRAMES) -> np.ndarray:
    """The 8 frames a classifier samples from a 2 s, 12 fps clip, rendered before encoding."""
    motion, backwards = MOTION_CLASSES[name]
    clip = _MotionClip(motion, backwards, _motion_key(seed, name, index), size[0], size[1], 24)
    return np.stack([clip.frame(i) for i in sel])


def centre_square(frames: np.ndarray, grid: int = 24) -> np.ndarray:
    """Central square of the short side (what the classifier's centre crop keeps), block-averaged to grid^2."""
    t, h, w, _ = frames.shape
    s = min(h, w)
    k = s // grid
    y0, x0 = (h - grid * k) // 2, (w - grid * k) // 2
    f = frames[:, y0 : y0 + grid * k, x0 : x0 + grid * k].astype(np.float32) / 255.0
    return f.reshape(t, grid, k, grid, k, 3).mean((2, 4))


def _pool(a: np.ndarray, p: int = 6) -> np.ndarray:
    g = a.shape[-1]
    return a.reshape(p, g // p, p, g // p).mean((1, 3)).ravel()


def order_blind_features(f: np.ndarray) -> np.ndarray:
    """Mean over frames of the small frames: the same for any order of the frames."""
    return f.mean(0).ravel()


def order_aware_features(f: np.ndarray) -> np.ndarray:
    """Frame differences, made blind to the sign of object/background contrast: the normal-flow field
    (-dI/dt * grad I, summed over consecutive frames) and last-minus-first edge energy, pooled to 6x6."""
    gray = f.mean(-1)
    gy, gx = np.gradient(gray, axis=(1, 2))
    energy = np.sqrt(gx**2 + gy**2)
    dt = np.diff(gray, axis=0)
    fx = (-dt * 0.5 * (gx[1:] + gx[:-1])).sum(0)
    fy = (-dt * 0.5 * (gy[1:] + gy[:-1])).sum(0)
    return np.concatenate([_pool(fx), _pool(fy), _pool(energy[-1] - energy[0])])


def ridge_cv_accuracy(x: np.ndarray, y: np.ndarray, folds: int = 4, lam: float = 1.0) -> float:
    """Held-out accuracy of a ridge (one-hot least squares) classifier, ``folds``-fold, seeded."""
    order = np.random.default_rng(0).permutation(len(y))
    hits = 0
    for k in range(folds):
        te = order[k::folds]
        tr = np.setdiff1d(order, te)
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        z = (x - mu) / sd
        onehot = np.eye(y.max() + 1)[y[tr]]
        a = z[tr]
        w = np.linalg.solve(a.T @ a + lam * len(tr) * np.eye(a.shape[1]), a.T @ onehot)
        hits += int(((z[te] @ w).argmax(1) == y[te]).sum())
    return hits / len(y)


@pytest.fixture(scope="module")
def motion_features():
    """Baseline features of 20 clips of each of the 12 motion classes."""
    blind, aware, labels = [], [], []
    for k, name in enumerate(MOTION_NAMES):
        for i in range(20):
            f = centre_square(motion_frames(name, i))
            blind.append(order_blind_features(f))
            aware.append(order_aware_features(f))
            labels.append(k)
    return np.stack(blind), np.stack(aware), np.array(labels)


def test_motion_class_names_come_in_pairs():
    assert list(MOTION_CLASSES) == MOTION_NAMES
    assert default_class_names(4, "motion") == ["left", "right", "up", "down"]
    for n in (2, 4, 6, 8, 10, 12):
        names = default_class_names(n, "motion")
        assert names == MOTION_NAMES[:n]
        pairs = motion_pairs(names)
        assert len(pairs) == n // 2 and sorted(sum(pairs, ())) == sorted(names)
    assert motion_pairs() == [tuple(MOTION_NAMES[i : i + 2]) for i in range(0, 12, 2)]
    assert default_class_names(4) == ["ball", "checkerboard", "stripes", "ring"]  # appearance stays the default
    for bad in (1, 13):
        with pytest.raises(SampleDataError, match="between 2 and 12"):
            default_class_names(bad, "motion")


def test_motion_dataset_layout_and_determinism(tmp_path):
    info = write_sample_dataset(tmp_path / "a", kind="motion", classes=4, per_class=2, seed=3, **SMALL)
    assert info.kind == "motion" and info.classes == ["left", "right", "up", "down"]
    assert info.counts == dict.fromkeys(info.classes, 2)
    assert [p.relative_to(tmp_path / "a").as_posix() for p in info.files] == [
        f"{c}/{c}_{i:03d}.mp4" for c in info.classes for i in range(2)
    ]
    again = write_sample_dataset(tmp_path / "b", kind="motion", classes=4, per_class=2, seed=3, **SMALL)
    assert [p.read_bytes() for p in info.files] == [p.read_bytes() for p in again.files]
    # A clip depends on its class, index and seed only, not on the other classes written.
    sub = write_sample_dataset(tmp_path / "c", kind="motion", classes=["down", "up"], per_class=1, seed=3, **SMALL)
    assert sub.files[0].read_bytes() == (tmp_path / "a" / "down" / "down_000.mp4").read_bytes()
    other = write_sample_dataset(tmp_path / "d", kind="motion", classes=2, per_class=1, seed=4, **SMALL)
    assert other.files[0].read_bytes() != info.files[0].read_bytes()
    # The decoded video is the rendered clip, up to H.264 loss.
    decoded = decode(info.files[0])
    rendered = render_motion_clip("left", 0, seed=3, size=(64, 48), frames=8)
    assert decoded.shape == rendered.shape == (8, 48, 64, 3)
    # (sensor noise is smoothed by the encoder: compare 4x4 block means)
    assert np.abs(centre_square(decoded, 12) - centre_square(rendered, 12)).mean() < 0.02
    # The appearance kind is unchanged by the motion kind's existence.
    app = write_sample_dataset(tmp_path / "e", kind="appearance", classes=2, per_class=1, seed=7, **SMALL)
    ref = write_sample_dataset(tmp_path / "f", classes=2, per_class=1, seed=7, **SMALL)
    assert [p.read_bytes() for p in app.files] == [p.read_bytes() for p in ref.files]


def test_motion_cli(tmp_path, capsys):
    import json

    from vidtune.cli.main import main

    rc = main(["sample-data", str(tmp_path / "m"), "--kind", "motion", "--classes", "2", "--per-class", "1",
               "--size", "64x48", "--seconds", "1", "--fps", "8", "--json", "-q"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["kind"] == "motion" and res["classes"] == ["left", "right"] and res["files"] == 2
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["left", "right"]
    rc = main(["sample-data", str(tmp_path / "x"), "--kind", "motion", "--classes", "13", "--json"])
    assert rc == 2 and "between 2 and 12" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.parametrize("a, b", motion_pairs())
def test_partner_class_is_the_same_clip_played_backwards(a, b):
    for index in (0, 5):
        fwd = render_motion_clip(a, index, seed=11, size=(80, 60), frames=9)
        back = render_motion_clip(b, index, seed=11, size=(80, 60), frames=9, key_class=a)
        assert np.array_equal(back, fwd[::-1])
        assert np.abs(fwd[0].astype(int) - fwd[-1].astype(int)).mean() > 2.0  # something changes
        # By default each class draws its own clips.
        assert not np.array_equal(render_motion_clip(b, index, seed=11, size=(80, 60), frames=9), back)


def test_object_stays_inside_the_centre_crop():
    """The centre crop (central 224/256 of the short side) shows at least 85% of the object's box in every
    frame, and the motion is large: e.g. at least a third of the short side for left/right/up/down."""
    w, h = 160, 120
    half = 0.5 * 0.875 * min(w, h)
    for name, (motion, backwards) in MOTION_CLASSES.items():
        for index in range(40):
            clip = _MotionClip(motion, backwards, _motion_key(0, name, index), w, h, 24)
            geo = np.array([clip.geometry(i) for i in range(24)])  # cx, cy, r, opacity, magnification
            cx, cy, r = geo[:, 0], geo[:, 1], geo[:, 2]
            vis_x = (np.minimum(cx + r, w / 2 + half) - np.maximum(cx - r, w / 2 - half)) / (2 * r)
            vis_y = (np.minimum(cy + r, h / 2 + half) - np.maximum(cy - r, h / 2 - half)) / (2 * r)
            assert (vis_x * vis_y).min() > 0.85, (name, index)
            moved = np.hypot(cx[-1] - cx[0], cy[-1] - cy[0])
            if motion in ("horizontal", "vertical"):
                assert moved > min(w, h) / 3
            if motion == "scale":
                assert max(r[0], r[-1]) / min(r[0], r[-1]) > 2.4
            if motion == "zoom":
                assert max(geo[0, 4], geo[-1, 4]) > 1.75
            if motion == "fade":
                assert sorted([geo[0, 3], geo[-1, 3]]) == [0.0, 1.0]


def frame_stats(frames: np.ndarray) -> np.ndarray:
    """Per-frame statistics of the centre crop, (T, 5): brightness and edge energy relative to the clip's
    average, x and y centroid and mass of what differs from the clip's per-pixel median."""
    f = centre_square(frames)
    gray = f.mean(-1)
    gy, gx = np.gradient(gray, axis=(1, 2))
    energy = np.hypot(gx, gy).sum((1, 2))
    sal = np.abs(f - np.median(f, axis=0)).sum(-1)
    mass = sal.sum((1, 2))
    g = np.arange(f.shape[1])
    cx = (sal.sum(1) * g).sum(1) / np.maximum(mass, 1e-6)
    cy = (sal.sum(2) * g).sum(1) / np.maximum(mass, 1e-6)
    bright = gray.mean((1, 2))
    return np.stack([bright - bright.mean(), energy / energy.mean(), cx, cy, mass / mass.mean()], 1)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    grid = np.union1d(a, b)
    return float(np.abs(np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size).max())


@pytest.mark.parametrize("a, b", motion_pairs())
def test_pairs_have_the_same_frame_distribution(a, b):
    """Two independent sets of 30 clips of paired classes: the sorted per-frame statistics over all frames
    match (two-sample KS below the 1% critical value for 30 clips a side, 0.42), so the multiset of frames
    carries no class information; the same statistics of the first frames alone tell the classes apart
    (except for rotation, where any single frame is equally likely in both senses)."""
    sa = np.stack([frame_stats(motion_frames(a, i, seed=1)) for i in range(30)])  # (clips, frames, stats)
    sb = np.stack([frame_stats(motion_frames(b, i, seed=1)) for i in range(30)])
    ks_all = [ks_statistic(sa[:, :, k].ravel(), sb[:, :, k].ravel()) for k in range(sa.shape[2])]
    ks_first = [ks_statistic(sa[:, 0, k], sb[:, 0, k]) for k in range(sa.shape[2])]
    assert max(ks_all) < 0.42, ks_all
    if MOTION_CLASSES[a][0] != "spin":
        assert max(ks_first) > 0.8, ks_first


def test_mean_image_is_the_same_for_left_and_right():
    """Mean over 30 clips and all frames of the object image (|frame - the clip's per-pixel median|, which
    removes the random background): left vs right differ no more than two independent left sets do,
    while their mean first frames differ far more."""

    def object_images(name, first):
        out = []
        for i in range(first, first + 30):
            f = centre_square(motion_frames(name, i, seed=1), grid=12)
            out.append(np.abs(f - np.median(f, axis=0)).sum(-1))
        return out

    left, right, more_left = object_images("left", 0), object_images("right", 0), object_images("left", 30)

    def mean_img(clips, sel=slice(None)):
        return np.concatenate([c[sel] for c in clips]).mean(0)

    gap_lr = np.abs(mean_img(left) - mean_img(right)).mean()
    gap_ll = np.abs(mean_img(left) - mean_img(more_left)).mean()
    gap_first = np.abs(mean_img(left, slice(0, 1)) - mean_img(right, slice(0, 1))).mean()
    assert gap_lr < 1.5 * gap_ll, (gap_lr, gap_ll)
    assert gap_first > 3 * gap_lr, (gap_first, gap_lr)


def test_order_blind_baseline_is_at_chance_order_aware_is_not(motion_features):
    """Ridge classifiers on 12 classes x 20 clips (4-fold): the mean over frames of small frames stays near
    chance (1/12) and near 1/2 within each time-reversed pair; frame differences score far above both."""
    blind, aware, y = motion_features
    acc_blind = ridge_cv_accuracy(blind, y)
    acc_aware = ridge_cv_accuracy(aware, y)
    assert acc_blind < 1 / 12 + 0.1, acc_blind
    assert acc_aware > 0.6, acc_aware
    within_blind, within_aware = [], []
    for a, b in motion_pairs():
        m = np.isin(y, [MOTION_NAMES.index(a), MOTION_NAMES.index(b)])
        yy = (y[m] == MOTION_NAMES.index(b)).astype(int)
        within_blind.append(ridge_cv_accuracy(blind[m], yy))
        within_aware.append(ridge_cv_accuracy(aware[m], yy))
    assert np.mean(within_blind) < 0.65, within_blind
    assert np.mean(within_aware) > 0.85 and min(within_aware) > 0.7, within_aware


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="optical"), "kind must be one of"),
        (dict(kind="motion", classes=13), "between 2 and 12"),
        (dict(kind="motion", classes=["left", "sideways"]), "unknown motion class 'sideways'"),
        (dict(kind="motion", seconds=0.1, fps=12), "at least 2 frames"),
        (dict(kind="appearance", classes=9), "between 2 and 8"),
    ],
)
def test_motion_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(SampleDataError, match=match):
        write_sample_dataset(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()
