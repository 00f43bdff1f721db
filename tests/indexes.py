"""What the index tests share: the tiny embedding settings, a folder of sample clips, an index's whole
content, and a call killed right after the index's new vector file lands."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from vidtune.index import EmbedConfig
from vidtune.index.store import VideoIndex

TINY = EmbedConfig(backbone="test_efficientnet", pretrained=False, window=1.0, stride=0.5, fps=4.0, tta="none")


def sample_clips(tmp_path_factory, classes: int, per_class: int, seed: int):
    """A folder per class of short sample clips (64x48, 1.5 s at 8 fps)."""
    from vidtune.data.sample import write_sample_dataset

    root = tmp_path_factory.mktemp("clips")
    write_sample_dataset(root, classes=classes, per_class=per_class, seconds=1.5, fps=8, size=(64, 48), seed=seed)
    return root


def index_content(ix_dir) -> dict:
    """Everything an index holds: ``videos`` (path -> digest, segment spans and their vectors) and
    ``segment_ids`` (id, path, start of every segment)."""
    with VideoIndex.open(ix_dir) as ix:
        out = {}
        for row in ix.videos():
            ids, starts, ends = ix.video_segments(row.id)
            out[row.path] = (row.digest, starts.tolist(), ends.tolist(), ix.vectors(ids))
        segs = ix.db.execute("SELECT s.id, v.path, s.start FROM segments s JOIN videos v ON v.id = s.video_id "
                             "ORDER BY s.id").fetchall()
    return {"videos": out, "segment_ids": segs}


def killed_after_vector_file(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh process that dies (``os._exit(9)``: no cleanup, no rollback) right after
    the index's new vector file lands, with the SQLite transaction open and its rows written."""
    script = textwrap.dedent("""
        import os
        from vidtune.index import store
        real = os.replace
        def replace_then_die(a, b):
            real(a, b)
            if str(b).endswith(".faiss"):
                os._exit(9)
        store.os.replace = replace_then_die
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
