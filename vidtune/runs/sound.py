"""Audio features of clips, cached like frame features, and how they ride along with them.

A fused run's head reads, after each token's visual channels (and flow cues), the clip segment's
audio embedding and one ``present`` flag (0: the clip has no sound, the head uses its learned
"missing" token instead). :func:`append_audio` puts them there, so every path that feeds frame
features to a head (training on cached features, eval, predict, tag, robustness) feeds audio too.

Audio features are cached per clip window in the same :class:`~vidtune.runs.features.FeatureCache`,
keyed by the file's content digest, the window, the segment count and the encoder's id.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from vidtune.audio.decode import read_audio
from vidtune.audio.features import AudioEncoder
from vidtune.data.manifest import VideoItem
from vidtune.data.sampling import clip_span
from vidtune.errors import VidtuneError
from vidtune.progress import NullProgress, Progress
from vidtune.runs.cache import FeatureCache
from vidtune.utils import stable_hash

log = logging.getLogger(__name__)

AUDIO_CACHE_VERSION = 1


def audio_cache_key(item: VideoItem, digest: str, encoder_id: str, segments: int) -> str:
    return stable_hash({"v": AUDIO_CACHE_VERSION, "kind": "audio", "video": digest, "start": item.start,
                        "end": item.end, "encoder": encoder_id, "segments": segments})


def clip_audio_features(encoder: AudioEncoder, item: VideoItem, segments: int) -> torch.Tensor:
    """``(segments, dim + 1)``: the embedding per segment of the clip's window, then the present flag.

    The window is the one frames are sampled from (:func:`~vidtune.data.sampling.clip_span` of the
    video's duration). No audio stream, or no sound anywhere in the window: zeros with flag 0. Sound
    that cannot be decoded is treated as absent (logged), never an error: the frames may still do.
    """
    from vidtune.io import open_video

    missing = torch.zeros(segments, encoder.dim + 1)
    try:
        with open_video(item.path) as reader:
            start, end = clip_span(reader.info.duration, item.start, item.end)
        clip = read_audio(item.path, start, end)
    except (VidtuneError, ValueError) as exc:
        log.warning("no sound used for %s: %s", item.path, getattr(exc, "reason", exc))
        return missing
    if not clip.present or clip.coverage <= 0:
        return missing
    emb = np.asarray(encoder.embed(clip.samples, segments), dtype=np.float32)
    if emb.shape != (segments, encoder.dim):
        raise ValueError(f"audio encoder {encoder.id} returned {emb.shape}, expected {(segments, encoder.dim)}")
    return torch.cat([torch.from_numpy(emb), torch.ones(segments, 1)], dim=1)


def extract_audio_features(encoder: AudioEncoder, items: list[VideoItem], segments: int, *,
                           cache: FeatureCache | None = None, progress: Progress | None = None,
                           description: str = "audio features") -> dict[int, torch.Tensor]:
    """``{item index: (segments, dim + 1)}`` for every item (absent sound gives flag 0, see above)."""
    progress = progress or NullProgress()
    out: dict[int, torch.Tensor] = {}
    todo: list[tuple[int, str | None]] = []
    for i, item in enumerate(items):
        key = None
        if cache is not None:
            try:
                key = audio_cache_key(item, cache.digest(item.path), encoder.id, segments)
            except (OSError, VidtuneError):
                key = None
            hit = cache.get(key) if key is not None else None
            if hit is not None and hit.shape == (segments, encoder.dim + 1):
                out[i] = hit
                continue
        todo.append((i, key))
    if todo:
        with progress.task(f"{description} ({len(todo)} clips)", total=len(todo), unit="clips") as task:
            for i, key in todo:
                out[i] = clip_audio_features(encoder, items[i], segments)
                if cache is not None and key is not None:
                    cache.put(key, out[i])
                task.advance(1)
    return out


def append_audio(x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Frame features ``(N, T, ..., D)`` with each segment's audio ``(N, T, A)`` appended to every token
    (views, grid cells): ``(N, T, ..., D + A)``. The head splits the last ``A`` channels off again."""
    audio = audio.to(x.dtype).to(x.device)
    shape = (*audio.shape[:2], *([1] * (x.dim() - 3)), audio.shape[-1])
    return torch.cat([x, audio.view(shape).expand(*x.shape[:-1], audio.shape[-1])], dim=-1)


def with_sound(encoder: AudioEncoder, used: dict[str, list[VideoItem]], segments: int, x_tr: torch.Tensor,
               x_va: torch.Tensor | None, cache: FeatureCache | None, progress: Progress | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Training features of a fused run: cached frame features ``x_tr (N, T, ...)`` and ``x_va (M, T, ...)``
    of the clips in ``used["train"]`` and ``used["val"]``, each with its clip's audio appended."""
    items = used["train"] + used["val"]
    snd = extract_audio_features(encoder, items, segments, cache=cache, progress=progress)
    a = torch.stack([snd[i] for i in range(len(items))])  # (N + M, T, A + 1)
    n = len(used["train"])
    return append_audio(x_tr, a[:n]), (append_audio(x_va, a[n:]) if x_va is not None else None)
