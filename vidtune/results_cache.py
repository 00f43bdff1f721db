"""A small on-disk cache of JSON results keyed by a hash of everything they depend on (video content,
model, settings), beside the feature cache: transcripts (:mod:`vidtune.audio.speech`) and on-screen text
spans (:mod:`vidtune.text.ocr`), so ``vidtune transcribe``, ``vidtune ocr`` and ``index build|add
--modalities speech,text`` read each video once for the same settings.

Layout: ``CACHE_ROOT/words/KEY[:2]/KEY.json`` holding ``{"key", "kind", "value"}``; an entry whose key or
kind does not match, or that does not parse, is ignored (and recomputed). Writes are atomic; a cache that
cannot be written only costs the cache, never the job.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from vidtune.utils import atomic_write_text, file_digest, json_text, stable_hash

log = logging.getLogger(__name__)

WORDS = "words"


def default_cache_root() -> Path:
    """``VIDTUNE_CACHE`` when set (it wins), else ``$XDG_CACHE_HOME/vidtune/features`` (``~/.cache/...``):
    the feature cache's folder (:func:`vidtune.utils.default_cache_dir`)."""
    from vidtune.utils import default_cache_dir

    return default_cache_dir()


class ResultCache:
    """JSON results under ``root/<area>``, keyed by :meth:`key`. ``hits``/``misses`` count lookups."""

    def __init__(self, root=None, area: str = WORDS):
        self.root = Path(root) if root is not None else default_cache_root()
        self.dir = self.root / area
        self.hits = 0
        self.misses = 0
        self._write_failed = False

    @staticmethod
    def key(kind: str, video, **settings) -> str:
        """The key of ``kind`` (``"transcript"``, ``"ocr"``) for the content of ``video`` and ``settings``."""
        return stable_hash({"kind": kind, "video": file_digest(video), **settings})

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str, kind: str):
        p = self._path(key)
        try:
            entry = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring damaged cache entry %s (%s)", p, exc)
            self.misses += 1
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or entry.get("kind") != kind:
            log.warning("ignoring cache entry %s: it is not a %s result for this key", p, kind)
            self.misses += 1
            return None
        self.hits += 1
        return entry.get("value")

    def put(self, key: str, kind: str, value) -> None:
        try:
            self._path(key).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self._path(key), json_text({"key": key, "kind": kind, "value": value}, indent=None))
        except Exception as exc:  # noqa: BLE001 (OSError, OutputWriteError: the cache is optional)
            if not self._write_failed:
                log.warning("results cache %s is not writable (%s); continuing without caching", self.dir, exc)
            self._write_failed = True


def open_results_cache(cache_dir=None, enabled: bool = True) -> ResultCache | None:
    """The results cache beside the feature cache at ``cache_dir`` (default: :func:`default_cache_root`)."""
    return ResultCache(cache_dir) if enabled else None
