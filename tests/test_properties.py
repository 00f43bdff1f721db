"""Property-based tests (hypothesis): manifest parsing, samplers, and the decoder fed garbage.

The decoder properties: whatever bytes a file holds, opening and sampling it either works or raises
``VideoDecodeError`` (never another exception type, never a crash), and never runs past the
per-file time limit.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.limits import hard_timeout
from tests.videos import write_indexed_video
from vidtune.data.corruptions import get_corruption
from vidtune.data.manifest import load_dataset
from vidtune.data.sampling import clip_span
from vidtune.errors import DatasetError, VideoDecodeError, VidtuneError
from vidtune.io import open_video, probe
from vidtune.runs.features import Sampling

# -- manifests -------------------------------------------------------------------------------------
# Text a user could type into a cell: any printable character, commas, quotes, unicode, inner spaces.
# (Leading/trailing spaces are stripped by design; '|' separates labels of multi-label rows.)
_cell_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="|\x85")
_cell = st.text(_cell_chars, min_size=1, max_size=12).map(str.strip).filter(bool)
_name = _cell.filter(lambda s: "/" not in s and s not in (".", "..") and not s.startswith("~"))
_row = st.fixed_dictionaries({
    "path": st.lists(_name, min_size=1, max_size=3).map("/".join),
    "label": _cell,
    "split": st.sampled_from([None, "train", "val", "test"]),
    "segment": st.one_of(st.none(), st.tuples(st.floats(0, 100), st.floats(0.01, 50))),
})


def _expected(rows: list[dict], base: Path) -> list[tuple]:
    """Rows as load_dataset should return them: first occurrence of each (path, segment) kept."""
    seen = {}
    for r in rows:
        start, end = (None, None) if r["segment"] is None else (r["segment"][0], r["segment"][0] + r["segment"][1])
        key = (str(base / r["path"]), start, end)
        seen.setdefault(key, (key[0], r["label"], r["split"], start, end))
    return list(seen.values())


def _unique_labels(rows):
    """Same (path, segment) with two labels is an error by design; keep those out of the happy path."""
    by_key = {}
    for r in rows:
        by_key.setdefault((r["path"], r["segment"]), set()).add(r["label"])
    return all(len(v) == 1 for v in by_key.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=8).filter(_unique_labels), blank=st.lists(st.booleans(), max_size=8),
       fmt=st.sampled_from(["csv", "jsonl"]))
def test_manifest_round_trip(tmp_path, rows, blank, fmt):
    out = io.StringIO(newline="")
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["path", "label", "split", "start", "end"])
    for i, r in enumerate(rows):
        start, end = ("", "") if r["segment"] is None else (r["segment"][0], r["segment"][0] + r["segment"][1])
        if fmt == "csv":
            w.writerow([r["path"], r["label"], r["split"] or "", repr(start) if start != "" else "",
                        repr(end) if end != "" else ""])
        else:
            obj = {"path": r["path"], "label": r["label"], "split": r["split"]}
            if r["segment"] is not None:
                obj.update(start=start, end=end)
            out.write(json.dumps(obj, ensure_ascii=bool(i % 2)) + "\n")
        if i < len(blank) and blank[i]:
            out.write("\n")  # blank lines anywhere are skipped
    path = tmp_path / f"m.{fmt}"
    path.write_text(out.getvalue(), encoding="utf-8")
    items = load_dataset(path)
    got = [(str(it.path), it.label, it.split, it.start, it.end) for it in items]
    assert got == _expected(rows, tmp_path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_manifest_garbage_is_a_dataset_error_or_rows(tmp_path, data):
    for suffix in (".csv", ".jsonl"):
        p = tmp_path / f"g{suffix}"
        p.write_bytes(data)
        try:
            items = load_dataset(p)
        except DatasetError as exc:
            assert str(exc)  # a message, never an empty error
        else:
            assert all(it.path and it.label for it in items)


# -- samplers --------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(fps=st.floats(0.5, 240), frames=st.integers(1, 500_000), n=st.integers(1, 64), views=st.integers(1, 5),
       mode=st.sampled_from(["centre", "grid", "random"]), seed=st.integers(0, 2**32 - 1),
       span=st.one_of(st.none(), st.tuples(st.floats(0, 1), st.floats(0.001, 2))))
def test_sampler_timestamps_inside_sorted_counted(fps, frames, n, views, mode, seed, span):
    """For any frame rate and length: right count, sorted, inside the video (and the segment)."""
    duration = frames / fps
    start = end = None
    if span is not None:
        start, end = span[0] * duration, span[0] * duration + span[1] * duration
        assume(start < duration * (1 - 1e-9))
        assume(min(end, duration) - start > 1e-9 * duration)
    s = Sampling(n, mode, views)
    t = s.timestamps(duration, start, end, np.random.default_rng(seed))
    assert t.shape == (s.per_clip,)
    assert np.all(np.diff(t) >= 0)
    lo, hi = clip_span(duration, start, end)
    assert np.all(t >= lo) and np.all(t < hi) and np.all(t < duration)
    idx = np.floor(t * fps)  # the frame each time falls in
    assert idx.min() >= 0 and idx.max() <= frames - 1


@settings(max_examples=150, deadline=None)
@given(duration=st.floats(0.05, 7200), n=st.integers(1, 32), seed=st.integers(0, 2**32 - 1),
       name=st.sampled_from(["frame_drop", "frame_rate"]), severity=st.integers(1, 5))
def test_temporal_corruptions_keep_times_inside_and_sorted(duration, n, seed, name, severity):
    t = Sampling(n, "centre").timestamps(duration, None, None)
    out = get_corruption(name, severity, seed=seed % 1000).retime(t, duration, np.random.default_rng(seed))
    assert out.shape == t.shape
    assert np.all(out >= 0) and np.all(out < duration)
    assert np.all(np.diff(out) >= 0)


# -- decoder fed garbage ---------------------------------------------------------------------------
# Derandomized: the same examples on every CI run (a 2,000-example random campaign per test found one
# bug, now fixed and pinned below with @example); explore more with a bigger max_examples locally.
def _hard_timeout(seconds: int):
    """Fail (instead of hanging the suite) if the body runs longer than ``seconds``."""
    return hard_timeout(seconds, TimeoutError, "the decoder")


def _open_and_sample(path: Path) -> None:
    """Everything a dataset does with a file; only VideoDecodeError may escape."""
    with _hard_timeout(30):
        try:
            info = probe(path)
            with open_video(path) as r:
                d = max(info.duration, 0.1)
                r.frames_at([0.0, d / 3, d / 2, d * 0.99, d + 5], short_side=32)
                r.frames_at([d / 4, 0.01], short_side=None)
        except VideoDecodeError as exc:
            assert exc.reason and str(path) in str(exc)


_HEADERS = [b"", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2", b"\x1aE\xdf\xa3",
            b"RIFF\x00\x10\x00\x00AVI LIST", b"\x00\x00\x01\xba", b"\x47\x40\x00\x10", b"OggS\x00\x02",
            b"FLV\x01\x05\x00\x00\x00\x09", b"\x89PNG\r\n\x1a\n", b"GIF89a"]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from(_HEADERS), body=st.binary(min_size=0, max_size=6000),
       ext=st.sampled_from([".mp4", ".mkv", ".avi", ".webm", ".ts", ".bin"]))
def test_random_bytes_raise_vidtune_error(tmp_path, header, body, ext):
    p = tmp_path / f"junk{ext}"
    p.write_bytes(header + body)
    if not p.stat().st_size:
        with pytest.raises(VideoDecodeError, match="empty"):
            open_video(p)
        return
    _open_and_sample(p)


@pytest.fixture(scope="module")
def good_videos(tmp_path_factory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("fuzz")
    out = {}
    for name, kw in {"a.mp4": {}, "b.mkv": {}, "c.avi": {"codec": "mpeg4"}, "d.webm": {"codec": "libvpx-vp9"}}.items():
        out[name] = write_indexed_video(d / name, 24, h=32, w=48, gop=6, **kw).read_bytes()
    return out


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["a.mp4", "b.mkv", "c.avi", "d.webm"]),
       edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
                      min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.floats(0.05, 1)))
@example(name="d.webm", edits=[(0.17578125, b"\x00")], cut=None)  # found by this test: size changes mid-stream
def test_damaged_real_videos_raise_vidtune_error_or_decode(tmp_path, good_videos, name, edits, cut):
    """Real files with overwritten bytes (bit rot) and cut short (interrupted copies)."""
    data = bytearray(good_videos[name])
    for pos, junk in edits:
        at = int(pos * len(data))
        data[at : at + len(junk)] = junk
    if cut is not None:
        data = data[: max(1, int(cut * len(data)))]
    p = tmp_path / name
    p.write_bytes(bytes(data))
    _open_and_sample(p)


# -- the time limit per file -----------------------------------------------------------------------
def test_decode_time_limit_raises_video_decode_error(tmp_path, monkeypatch):
    from vidtune.io.pyav_backend import PyAVReader, default_time_limit

    path = write_indexed_video(tmp_path / "v.mp4", 60, h=32, w=48, gop=5)
    with PyAVReader(path) as reader:
        reader.time_limit = 1e-9  # already spent before the first frame is decoded
        with pytest.raises(VideoDecodeError, match="time limit"):
            reader.frames_at([0.5, 1.5])
        reader.time_limit = None  # the reader stays usable afterwards
        assert reader.frames_at([0.5]).shape == (1, 32, 48, 3)
    monkeypatch.setenv("VIDTUNE_DECODE_TIMEOUT", "0")
    assert default_time_limit() is None
    monkeypatch.setenv("VIDTUNE_DECODE_TIMEOUT", "2.5")
    assert default_time_limit() == 2.5
    monkeypatch.setenv("VIDTUNE_DECODE_TIMEOUT", "1e-9")
    with pytest.raises(VideoDecodeError, match="VIDTUNE_DECODE_TIMEOUT"):
        open_video(path)  # opening is timed too (it decodes the first frame)
    monkeypatch.delenv("VIDTUNE_DECODE_TIMEOUT")
    assert default_time_limit() == 120.0


def test_slow_file_is_skipped_by_the_dataset_not_fatal(tmp_path, monkeypatch):
    from vidtune.data.manifest import VideoItem
    from vidtune.models.backbones import PretrainedConfig
    from vidtune.runs.features import ClipDataset

    path = write_indexed_video(tmp_path / "v.mp4", 30, h=32, w=48)
    monkeypatch.setenv("VIDTUNE_DECODE_TIMEOUT", "1e-9")
    ds = ClipDataset([VideoItem(path=path, label="x")], Sampling(4), PretrainedConfig(input_size=32, crop_pct=1.0))
    res = ds[0]
    assert res["frames"] is None and "time limit" in res["error"]


def test_vidtune_error_is_the_base(tmp_path):
    assert issubclass(VideoDecodeError, VidtuneError)
