"""Thumbnails and sprite sheets, decoded with vidtune's own reader and cached as JPEG files.

A sprite sheet is one JPEG of ``n`` frames side by side, evenly spaced over a time span: the strip
a result card shows for its matched segment. Files are cached under ``<cache>/thumbs`` by a key of
the video's resolved path, size and modification time and the request, so an edited video gets new
pictures; in read-only mode nothing is written and a small in-memory cache stands in. Both are
bounded: 256 sheets in memory, :data:`MAX_DISK_FILES` on disk (the least recently written go first).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from vidtune.errors import ConfigError

MAX_FRAMES = 32
MAX_HEIGHT = 360
MAX_DISK_FILES = 4096  # ~10-40 KB each


def frame_times(start: float, end: float, n: int) -> list[float]:
    """``n`` times at the centres of ``n`` equal parts of ``[start, end]``."""
    if end <= start:
        return [start] * n
    step = (end - start) / n
    return [start + step * (i + 0.5) for i in range(n)]


def check_request(n: int, height: int) -> None:
    if not 1 <= n <= MAX_FRAMES:
        raise ConfigError("n", f"must be between 1 and {MAX_FRAMES}, got {n}")
    if not 16 <= height <= MAX_HEIGHT:
        raise ConfigError("h", f"must be between 16 and {MAX_HEIGHT} pixels, got {height}")


def sprite_jpeg(path, times: list[float], height: int = 72) -> bytes:
    """The frames at ``times`` scaled to ``height`` pixels, side by side, as one JPEG."""
    from PIL import Image

    from vidtune.io import open_video

    check_request(len(times), height)
    with open_video(path) as r:
        duration = r.info.duration or 0.0
        ts = [min(max(0.0, float(t)), max(0.0, duration - 1e-3)) for t in times]
        frames = r.frames_at(ts, short_side=height)  # (T, H', W', 3) uint8, short side = height
    tiles = []
    for f in frames:
        img = Image.fromarray(f)
        w = max(1, round(img.width * height / img.height))
        tiles.append(np.asarray(img.resize((w, height), Image.BILINEAR)))
    sheet = Image.fromarray(np.concatenate(tiles, axis=1))
    buf = io.BytesIO()
    sheet.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


class ThumbCache:
    """Sprite sheets on disk under ``folder`` (or only in memory when ``folder`` is None)."""

    def __init__(self, folder: Path | None, memory_items: int = 256, disk_files: int = MAX_DISK_FILES):
        self.folder = folder
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._items = memory_items
        self._disk = disk_files
        self._writes = 0
        self._lock = threading.Lock()
        if folder is not None:
            self.prune()

    def prune(self) -> None:
        """Keep at most ``disk_files`` sheets on disk (the most recently written)."""
        try:
            files = [(p.stat().st_mtime_ns, p) for p in self.folder.glob("*.jpg")]
        except OSError:
            return
        if len(files) <= self._disk:
            return
        files.sort()
        for _, p in files[:len(files) - self._disk * 9 // 10]:
            p.unlink(missing_ok=True)

    def sprite(self, path: Path, start: float, end: float, n: int, height: int) -> bytes:
        check_request(n, height)
        st = path.stat()
        ident = f"{path}|{st.st_size}|{st.st_mtime_ns}|{start:.3f}|{end:.3f}|{n}|{height}"
        key = hashlib.blake2b(ident.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        file = self.folder / f"{key}.jpg" if self.folder is not None else None
        if file is not None and file.is_file():
            data = file.read_bytes()
        else:
            data = sprite_jpeg(path, frame_times(start, end, n), height)
            if file is not None:
                from vidtune.utils import atomic_path

                with atomic_path(file) as tmp:
                    Path(tmp).write_bytes(data)
                with self._lock:
                    self._writes += 1
                    due = self._writes % max(1, self._disk // 16) == 0
                if due:
                    self.prune()
        with self._lock:
            self._memory[key] = data
            while len(self._memory) > self._items:
                self._memory.popitem(last=False)
        return data
