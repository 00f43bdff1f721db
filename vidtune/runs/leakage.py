"""Which videos a run trained and validated on, and whether an evaluation set shares any of them.

A run folder's ``split.json`` lists its training and validation clips (path, segment, group,
content fingerprint). ``evaluate`` compares the clips it scores with it: a test clip whose file,
or whose content under another name (a copy), was seen in training makes the score optimistic,
and the user hears about it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from vidtune.data.manifest import VideoItem
from vidtune.errors import VidtuneError
from vidtune.utils import file_digest

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"


def _digest(path, cache) -> str | None:
    try:
        return cache.digest(path) if cache is not None else file_digest(path)
    except (OSError, VidtuneError):  # missing, unreadable, or a FIFO/device refused unread
        return None


def split_record(used: dict[str, list[VideoItem]], cache=None) -> dict:
    """``{"train": [...], "val": [...]}`` rows of path, start, end, group, label and content digest."""
    return {name: [{"path": str(it.path), "start": it.start, "end": it.end, "group": it.group, "label": it.label,
                    "digest": _digest(it.path, cache)} for it in items]
            for name, items in used.items()}


def shared_with_training(run_dir, items: list[VideoItem], cache=None) -> list[dict]:
    """Evaluation clips whose file or content the run trained or validated on:
    ``[{"path", "seen_as", "split", "how": "same file" | "same content"}]``. Empty for runs written
    before ``split.json`` existed."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s is unreadable (%s); not checking the evaluation set against the training set", path, exc)
        return []
    by_path, by_digest = {}, {}
    for split in ("train", "val", "unlabeled"):  # unlabeled: pool clips a --unlabeled run trained on
        for row in record.get(split, []):
            by_path.setdefault(os.path.realpath(row["path"]), (row["path"], split))
            if row.get("digest"):
                by_digest.setdefault(row["digest"], (row["path"], split))
    found = []
    for it in items:
        hit = by_path.get(os.path.realpath(it.path))
        how = "same file"
        if hit is None and by_digest:
            hit = by_digest.get(_digest(it.path, cache))
            how = "same content"
        if hit is not None:
            found.append({"path": str(it.path), "seen_as": hit[0], "split": hit[1], "how": how})
    return found
