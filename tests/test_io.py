"""Tests for vidtune.io: frame-accurate seeking, probing, rotation, resizing and bad inputs."""

from __future__ import annotations

import functools
import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.videos import (
    decode_all,
    encoder_available,
    expected_indices,
    frame_with_index,
    index_from_frame,
    write_audio_only,
    write_image_as,
    write_indexed_video,
    write_no_frames_video,
    write_random_bytes,
    write_text,
    write_truncated,
    write_video,
)
from vidtune.errors import VideoDecodeError
from vidtune.io import open_video, probe
from vidtune.io.pyav_backend import PyAVReader

REAL_FILES = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]


def _digest(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(arr).tobytes(), digest_size=16).hexdigest()


@functools.cache
def _ground_truth(path: str) -> tuple[list[int], Fraction, list[str], tuple[int, ...]]:
    """Full sequential decode of ``path``: pts, time base, per-frame digests, frame shape."""
    import av

    with av.open(path) as c:
        s = c.streams.video[0]
        pts, digests, shape = [], [], None
        for f in c.decode(s):
            arr = f.to_ndarray(format="rgb24")
            pts.append(f.pts)
            digests.append(_digest(arr))
            shape = arr.shape
        return pts, Fraction(s.time_base), digests, shape


def _assert_frames_match(path, frames: np.ndarray, timestamps) -> None:
    pts, tb, digests, shape = _ground_truth(str(path))
    want = expected_indices(pts, tb, timestamps)
    assert frames.shape == (len(timestamps), *shape)
    assert frames.dtype == np.uint8
    got = [_digest(f) for f in frames]
    # name the expected frame index of every mismatch (and which frame came instead, if any)
    bad = [
        (t, w, digests.index(g) if g in digests else None)
        for t, w, g in zip(timestamps, want, got)
        if g != digests[w]
    ]
    assert not bad, f"(t, expected frame, returned frame) mismatches: {bad}"


def _duration(path) -> float:
    pts, tb, _, _ = _ground_truth(str(path))
    step = float(np.median(np.diff(sorted(pts)))) if len(pts) > 1 else 0
    return float((max(pts) - min(pts) + step) * tb)


# -- seeking: real H.264 files (with B-frames) ------------------------------------------------------
@pytest.mark.parametrize("name", REAL_FILES)
def test_seek_is_pixel_exact_on_real_files(sample_videos_dir, name):
    path = sample_videos_dir / name
    dur = _duration(path)
    rng = np.random.default_rng(sum(map(ord, name)))
    rand_sorted = sorted(rng.uniform(0, dur, 10).tolist())
    rand_unsorted = rng.uniform(0, dur, 10).tolist()
    pts, tb, _, _ = _ground_truth(str(path))
    fps = (len(pts) - 1) / float((max(pts) - min(pts)) * tb)
    boundaries = [k / fps for k in (1, 2, 3, 7, 10, 25, 50) if k < len(pts)]  # exact frame starts
    repeated = [rand_unsorted[0], rand_unsorted[0], 0.0, rand_unsorted[0], 0.0]
    edges = [-1.0, -1e-6, 0.0, dur - 1e-3, dur, dur + 0.5, 1e6]

    with open_video(path) as reader:  # one reader: decoder state carries over between calls
        for ts in (rand_sorted, rand_unsorted, boundaries, repeated, edges, rand_sorted[::-1]):
            _assert_frames_match(path, reader.frames_at(ts), ts)
    with open_video(path) as reader:  # a fresh reader whose first request is far into the file
        ts = [dur * 0.9, dur * 0.1]
        _assert_frames_match(path, reader.frames_at(ts), ts)


def test_far_past_end_gives_last_frame(sample_videos_dir):
    path = sample_videos_dir / "bikes.mp4"
    with open_video(path) as reader:
        out = reader.frames_at([9.99, 10.0, 11.0, 100.0])
    pts, _, digests, _ = _ground_truth(str(path))
    last = digests[pts.index(max(pts))]
    assert [_digest(f) for f in out] == [last] * 4


# -- seeking: synthetic videos of several codecs and containers ------------------------------------
_SYNTHETIC = [
    ("x264_bframes.mp4", dict(codec="libx264", bframes=3, gop=8)),
    ("x264.mkv", dict(codec="libx264", bframes=2, gop=10)),
    ("mpeg4.avi", dict(codec="mpeg4", bframes=2, gop=10)),
    ("mpeg4.mp4", dict(codec="mpeg4", bframes=2, gop=10)),
    ("vp9.webm", dict(codec="libvpx-vp9", gop=10)),
    ("x264_audio.mp4", dict(codec="libx264", bframes=2, gop=10, audio=True)),
    ("x264_opengop.mp4", dict(codec="libx264", bframes=3, gop=10, options={"x264-params": "open-gop=1"})),
    ("x264_opengop.mkv", dict(codec="libx264", bframes=3, gop=10, options={"x264-params": "open-gop=1"})),
    ("hevc.mp4", dict(codec="libx265", bframes=2, gop=10)),
    ("hevc.mkv", dict(codec="libx265", bframes=2, gop=10)),
    # the codecs people's files hold: HEVC as iPhones write it (.mov, hvc1 tag), AV1 in WebM and Matroska,
    # ProRes from editing suites, MJPEG from webcams and older cameras
    ("hevc_hvc1.mov", dict(codec="libx265", bframes=2, gop=10, codec_tag="hvc1")),
    ("av1.webm", dict(codec="libsvtav1", gop=10)),
    ("av1.mkv", dict(codec="libsvtav1", gop=10)),
    ("prores.mov", dict(codec="prores_ks", pix_fmt="yuv422p10le")),
    ("mjpeg.avi", dict(codec="mjpeg", pix_fmt="yuvj420p")),
]


@pytest.mark.parametrize("name,kwargs", _SYNTHETIC, ids=[n for n, _ in _SYNTHETIC])
def test_seek_is_pixel_exact_on_synthetic(tmp_path, name, kwargs):
    if not encoder_available(kwargs["codec"]):
        pytest.skip(f"encoder {kwargs['codec']} not available")
    n, fps = 60, 25
    path = write_indexed_video(tmp_path / name, n, fps=fps, **kwargs)
    rng = np.random.default_rng(7)
    dur = n / fps
    timestamps = rng.uniform(-0.1, dur + 0.1, 20).tolist() + [k / fps for k in (0, 1, 13, 29, 59)]
    with open_video(path) as reader:
        got = reader.frames_at(timestamps)
        again = reader.frames_at(sorted(timestamps, reverse=True))
    _assert_frames_match(path, got, timestamps)
    _assert_frames_match(path, again, sorted(timestamps, reverse=True))
    # the pattern identifies the frame too (guards against a ground truth that is itself wrong)
    want = [min(max(int(np.floor(t * fps + 1e-9)), 0), n - 1) for t in timestamps]
    assert [index_from_frame(f) for f in got] == want


def test_sparse_sampling_decodes_fewer_frames_than_full_decode(tmp_path, monkeypatch):
    n, fps, gop = 300, 25, 10
    path = write_indexed_video(tmp_path / "long.mp4", n, h=32, w=48, fps=fps, gop=gop, bframes=2)
    decoded = []
    original = PyAVReader._next_frame

    def counting(self):
        frame = original(self)
        if frame is not None:
            decoded.append(frame.pts)
        return frame

    monkeypatch.setattr(PyAVReader, "_next_frame", counting)
    timestamps = [(k + 0.5) * n / fps / 8 for k in range(8)]
    with open_video(path) as reader:
        assert reader.info.keyframes >= n // gop - 1  # the container index is there to seek with
        decoded.clear()
        out = reader.frames_at(timestamps)
    assert [index_from_frame(f) for f in out] == [int(t * fps) for t in timestamps]
    # each sample needs at most one GOP (+ reorder delay) of decoding; a full decode needs all 300
    assert len(decoded) <= 8 * (gop + 4), f"decoded {len(decoded)} frames for 8 samples"
    assert len(decoded) < n // 2

    # dense, sorted requests decode forward instead of seeking: every frame about once
    every = [(k + 0.5) / fps for k in range(0, n, 2)]
    with open_video(path) as reader:
        decoded.clear()
        out = reader.frames_at(every)
    assert [index_from_frame(f) for f in out] == list(range(0, n, 2))
    assert len(decoded) <= n + gop, f"decoded {len(decoded)} frames for a {n}-frame video"


# -- variable frame rate ---------------------------------------------------------------------------
_VFR_PTS = [0.0, 0.04, 0.10, 0.50, 0.52, 0.90, 1.00, 1.30, 1.31, 1.60, 1.62, 2.20]


@pytest.mark.parametrize("ext", ["mkv", "mp4"])
def test_variable_frame_rate(tmp_path, ext):
    path = write_indexed_video(tmp_path / f"vfr.{ext}", len(_VFR_PTS), pts=_VFR_PTS, gop=4)
    info = probe(path)
    assert info.variable_fps is True
    assert info.frame_count == len(_VFR_PTS) and info.frame_count_exact
    ends = _VFR_PTS[1:] + [_VFR_PTS[-1] + 0.3]
    timestamps, want = [], []
    for i, (start, end) in enumerate(zip(_VFR_PTS, ends)):
        for t in (start, (start + end) / 2, end - 0.002):
            timestamps.append(t)
            want.append(i)
    rng = np.random.default_rng(3)
    order = rng.permutation(len(timestamps))
    with open_video(path) as reader:
        out = reader.frames_at([timestamps[k] for k in order])
    assert [index_from_frame(f) for f in out] == [want[k] for k in order]
    _assert_frames_match(path, out, [timestamps[k] for k in order])


@pytest.mark.parametrize("fps", [30, 120, 240])
def test_constant_frame_rate_is_not_flagged_variable(tmp_path, fps):
    # Matroska stores 1 ms ticks: 120 fps gives 8/8/9 ms steps, which is still constant frame rate
    path = write_indexed_video(tmp_path / "cfr.mkv", 40, h=16, w=16, fps=fps)
    info = probe(path)
    assert info.variable_fps is False
    assert info.frame_count == 40 and info.frame_count_exact
    assert info.fps == pytest.approx(fps, rel=0.02)
    assert info.duration == pytest.approx(40 / fps, abs=0.002)
    assert probe(path, scan_packets=False).variable_fps is None


# -- rotation metadata -----------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    n, h, w = 6, 48, 80
    path = write_indexed_video(tmp_path / f"rot{rotation}.mp4", n, h=h, w=w, rotation=rotation)
    _, _, raw = decode_all(path)
    info = probe(path)
    assert info.rotation == rotation
    assert (info.coded_width, info.coded_height) == (w, h)
    assert (info.width, info.height) == ((h, w) if rotation % 180 else (w, h))
    k = rotation // 90
    with open_video(path) as reader:
        out = reader.frames_at([0.0, 0.05, 0.13])  # frames 0, 1, 3
        small = reader.frames_at([0.13], short_side=24)
    assert out.shape == (3, info.height, info.width, 3)
    for got, idx in zip(out, (0, 1, 3)):
        np.testing.assert_array_equal(got, np.rot90(raw[idx], k))  # counter-clockwise
        assert index_from_frame(np.rot90(got, -k)) == idx
    # frame 1 has only its bottom-right cell set: a CCW turn moves it to the right place
    corner = {90: (0, -1), 180: (0, 0), 270: (-1, 0)}[rotation]  # (row, col) of that cell after rotation
    one = out[1].astype(int).mean(axis=2)
    assert one[corner[0], corner[1]] > 128 and one[-1 - corner[0], -1 - corner[1]] < 128
    exp_hw = (24, int(24 * 80 / 48)) if rotation % 180 == 0 else (int(24 * 80 / 48), 24)
    assert small.shape == (1, *exp_hw, 3)
    assert index_from_frame(np.rot90(small[0], -k)) == 3


# -- resizing and odd sizes ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,short,expected_hw",
    [
        ("bikes.mp4", 112, (112, int(112 * 640 / 272))),
        ("bikes.mp4", 300, (300, int(300 * 640 / 272))),  # upscaling
        ("bigbuckbunny.mp4", 224, (224, int(224 * 1280 / 720))),
        ("carphone_pristine.mp4", 72, (72, int(72 * 193 / 144))),  # SAR 128/117: display width 193
    ],
)
def test_short_side_resize_real(sample_videos_dir, name, short, expected_hw):
    with open_video(sample_videos_dir / name) as reader:
        out = reader.frames_at([0.5, 1.0], short_side=short)
        native = reader.frames_at([0.5])
    assert out.shape == (2, *expected_hw, 3)
    assert native.shape[1:3] == (reader.info.coded_height, reader.info.coded_width)
    # the resized frame is the native frame scaled, not some other picture
    import av

    ref = av.VideoFrame.from_ndarray(native[0], format="rgb24").reformat(
        width=expected_hw[1], height=expected_hw[0], interpolation="BILINEAR"
    )
    assert np.abs(out[0].astype(int) - ref.to_ndarray().astype(int)).mean() < 8


def test_sample_aspect_ratio_in_info(sample_videos_dir):
    info = probe(sample_videos_dir / "carphone_pristine.mp4")
    assert (info.coded_width, info.coded_height) == (176, 144)
    assert (info.width, info.height) == (193, 144)


@pytest.mark.parametrize(
    "h,w,short,codec",
    [
        (17, 33, 8, "libx264"),  # odd sizes: 4:4:4
        (33, 17, 9, "libx264"),
        (1, 1, 1, "libx264"),
        (2160, 4096, 64, "libx264"),
        (30, 46, 15, "mpeg4"),
    ],
)
def test_odd_sizes(tmp_path, h, w, short, codec):
    n = 3 if h * w > 10**6 else 8
    frames = np.stack([frame_with_index(i, h, w) for i in range(n)])
    path = write_video(tmp_path / f"s{h}x{w}.mp4", frames, codec=codec, gop=4)
    info = probe(path)
    assert (info.width, info.height, info.frame_count) == (w, h, n)
    with open_video(path) as reader:
        native = reader.frames_at([0.0, (n - 1) / 25])
        small = reader.frames_at([0.0], short_side=short)
    _assert_frames_match(path, native, [0.0, (n - 1) / 25])
    exp = (short, max(1, int(short * w / h))) if h <= w else (max(1, int(short * h / w)), short)
    assert small.shape == (1, *exp, 3)


# -- probe -----------------------------------------------------------------------------------------
def test_probe_real_files(sample_videos_dir):
    bikes = probe(sample_videos_dir / "bikes.mp4")
    assert (bikes.width, bikes.height) == (640, 272)
    assert bikes.fps == pytest.approx(25)
    assert bikes.frame_count == 250 and bikes.frame_count_exact
    assert bikes.duration == pytest.approx(10.0, abs=0.05)
    assert bikes.has_audio is False
    assert bikes.variable_fps is False
    assert bikes.codec == "h264" and bikes.rotation == 0

    bbb = probe(sample_videos_dir / "bigbuckbunny.mp4")
    assert bbb.has_audio is True
    assert (bbb.width, bbb.height) == (1280, 720)
    assert bbb.frame_count == 132
    assert bbb.duration == pytest.approx(132 / 25, abs=0.05)

    quick = probe(sample_videos_dir / "bikes.mp4", scan_packets=False)
    assert quick.frame_count == 250 and quick.variable_fps is None


def test_probe_synthetic_with_audio(tmp_path):
    path = write_indexed_video(tmp_path / "a.webm", 15, codec="libvpx-vp9", audio=True, fps=30)
    info = probe(path)
    assert info.has_audio and info.frame_count == 15 and info.codec == "vp9"
    assert info.duration == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize("ext,codec", [("mkv", "libx264"), ("webm", "libvpx-vp9"), ("mp4", "libx264")])
def test_audio_longer_than_video(tmp_path, ext, codec, monkeypatch):
    # the container's duration covers the 2 s longer audio track; the video's is 1 s
    import tests.videos as tv

    write_sine = tv._write_sine
    monkeypatch.setattr(tv, "_write_sine", lambda out, stream, seconds: write_sine(out, stream, seconds + 2))
    path = write_indexed_video(tmp_path / f"long_audio.{ext}", 25, codec=codec, audio=True, gop=5)
    info = probe(path)
    assert info.has_audio and info.frame_count == 25
    assert info.duration == pytest.approx(1.0, abs=0.05)
    with open_video(path) as reader:  # not mistaken for a truncated video
        out = reader.frames_at([0.5, 1.5, 2.5])
    assert [index_from_frame(f) for f in out] == [12, 24, 24]


def test_timestamp_edge_values(sample_videos_dir):
    with open_video(sample_videos_dir / "bikes.mp4") as reader:
        with pytest.raises(ValueError):
            reader.frames_at([])
        with pytest.raises(ValueError, match="NaN"):
            reader.frames_at([1.0, float("nan")])
        out = reader.frames_at(np.array([float("-inf"), float("inf")]))
    _assert_frames_match(sample_videos_dir / "bikes.mp4", out, [-1.0, 1e6])


# -- bad inputs ------------------------------------------------------------------------------------
def _good_mp4(tmp_path, **kwargs) -> Path:
    return write_indexed_video(tmp_path / "good.mp4", 50, gop=10, **kwargs)


_BAD = {
    "missing": (lambda d: d / "nope.mp4", "not found"),
    "directory": (lambda d: (d / "dir.mp4").mkdir() or d / "dir.mp4", "directory"),
    "zero_bytes": (lambda d: (d / "zero.mp4").write_bytes(b"") or d / "zero.mp4", "empty"),
    "random_bytes": (lambda d: write_random_bytes(d / "rand.mp4", 10_000, seed=1), "not a readable video"),
    "text_file": (lambda d: write_text(d / "notes.mp4", "hello\n" * 50), "not a readable video"),
    "png_renamed": (lambda d: write_image_as(d / "png.mp4", "png"), "still image"),
    "jpeg_renamed": (lambda d: write_image_as(d / "jpg.mp4", "jpeg"), "still image"),
    "audio_only": (lambda d: write_audio_only(d / "audio.mp4"), "no video stream"),
    "no_frames": (lambda d: write_no_frames_video(d / "empty.mp4"), "no decodable frames"),
    "truncated_half": (
        lambda d: write_truncated(_good_mp4(d), d / "half.mp4", 0.5),
        "not a readable video",
    ),
    "truncated_5pct": (
        lambda d: write_truncated(_good_mp4(d), d / "five.mp4", 0.05),
        "not a readable video",
    ),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_inputs_raise_video_decode_error(tmp_path, case):
    make, reason = _BAD[case]
    path = make(tmp_path)
    with pytest.raises(VideoDecodeError) as exc:
        open_video(path)
    assert exc.value.path == str(path)
    assert reason in exc.value.reason
    assert str(path) in str(exc.value)
    with pytest.raises(VideoDecodeError):
        probe(path)


@pytest.mark.parametrize("name,kwargs", [("cut.mp4", dict(faststart=True)), ("cut.mkv", {})])
def test_frames_past_decodable_end_of_truncated_file(tmp_path, name, kwargs):
    n, fps = 100, 25
    full = write_indexed_video(tmp_path / ("full_" + name), n, fps=fps, gop=10, **kwargs)
    cut = write_truncated(full, tmp_path / name, 0.5)
    with open_video(cut) as reader:
        assert reader.info.duration == pytest.approx(n / fps, abs=0.1)  # the header still claims 4 s
        early = reader.frames_at([0.1, 0.5])
        assert [index_from_frame(f) for f in early] == [2, 12]
        with pytest.raises(VideoDecodeError, match="truncated"):
            reader.frames_at([0.2, n / fps - 0.1])


def _remux_with_decode_times_as_pts(src, dst):
    """An MP4 whose B-frame stream lost its composition offsets (pts = dts), like OpenCV's box.mp4."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        first = None
        for pkt in inp.demux(s_in):
            if pkt.dts is None:
                continue
            first = pkt.dts if first is None else first
            pkt.pts = pkt.dts = pkt.dts - first  # no negative times, so no edit list hides frame 0
            pkt.stream = s_out
            out.mux(pkt)
    return dst


def test_decode_order_timestamps_are_corrected(tmp_path):
    """Frames come out in display order but carry shuffled pts: use the monotonic clock, like FFmpeg."""
    n, fps = 60, 25
    src = write_indexed_video(tmp_path / "src.mp4", n, fps=fps, bframes=2, gop=12)
    bad = _remux_with_decode_times_as_pts(src, tmp_path / "no_ctts.mp4")
    with av.open(str(bad)) as c:
        raw = [f.pts for f in c.decode(video=0)]
    assert any(b < a for a, b in zip(raw, raw[1:])), "the remux should reproduce out-of-order pts"
    ks = list(range(0, n, 7)) + [n - 1, 3, 30, 2]
    with open_video(bad) as reader:
        frames = reader.frames_at([(k + 0.5) / fps for k in ks])
    assert [index_from_frame(f) for f in frames] == ks


def test_decode_order_timestamps_are_found_at_open_and_no_frame_is_decoded_twice(tmp_path, monkeypatch):
    """The pts-as-dts clock is found while opening (a few frames decoded ahead and kept), so a sparse
    request is served once on the right clock instead of being decoded again from the start."""
    n, fps = 120, 25
    src = write_indexed_video(tmp_path / "src.mp4", n, fps=fps, bframes=2, gop=30)
    decoded = []
    original = PyAVReader._check_clock

    def counting(self, frame):  # called once for every frame that comes out of the decoder
        decoded.append(frame.pts)
        return original(self, frame)

    monkeypatch.setattr(PyAVReader, "_check_clock", counting)
    for path in (src, _remux_with_decode_times_as_pts(src, tmp_path / "no_ctts.mp4")):
        decoded.clear()
        ks = [int((k + 0.5) * n / 8) for k in range(8)]
        with open_video(path) as reader:
            frames = reader.frames_at([(k + 0.5) / fps for k in ks])
        assert [index_from_frame(f) for f in frames] == ks
        assert len(decoded) <= n + 2 * 12, (path.name, len(decoded))  # the probe may be decoded twice, no more


def test_codec_names_and_undecodable_codec(tmp_path):
    """The codec is named as people know it (av1, not the decoder libdav1d); a stream whose codec this FFmpeg
    cannot decode is a clear error naming the cause and the fix, not "damaged"."""
    from vidtune.errors import VideoDecodeError
    from vidtune.io import probe

    for name, kw, want in [("a.webm", dict(codec="libsvtav1"), "av1"),
                           ("b.mov", dict(codec="libx265", codec_tag="hvc1"), "hevc"),
                           ("c.mov", dict(codec="prores_ks", pix_fmt="yuv422p10le"), "prores"),
                           ("d.avi", dict(codec="mjpeg", pix_fmt="yuvj420p"), "mjpeg")]:
        if encoder_available(kw["codec"]):
            assert probe(write_indexed_video(tmp_path / name, 12, **kw)).codec == want
    src = write_indexed_video(tmp_path / "m.avi", 12, codec="mpeg4")
    data = src.read_bytes()
    assert data.count(b"FMP4") >= 1
    odd = tmp_path / "odd.avi"
    odd.write_bytes(data.replace(b"FMP4", b"QQZZ"))  # a FourCC no decoder knows
    with pytest.raises(VideoDecodeError, match="codec cannot be decoded.*Re-encode"):
        probe(odd)
