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
