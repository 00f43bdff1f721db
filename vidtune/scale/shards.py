"""Deterministic sharding by content: ``--shard I/N`` on ``embed``, ``index build|add``, ``tag`` and
``train`` feature extraction.

N processes (a SLURM array, N terminals, torchrun ranks, Ray tasks) each take the inputs whose
*content* fingerprint falls in their shard: every input lands in exactly one shard for any N, the
split does not depend on the order or the spelling of the paths (a file mounted at another path on
another machine stays in its shard), and identical copies land together (so an index shard reuses a
copy's vectors instead of embedding it twice). A file that cannot be fingerprinted (missing,
unreadable) is assigned by its path instead, so exactly one shard reports it as skipped.

Work already done is skipped by the layers below (the feature cache, an index's unchanged files),
so a rerun of a killed shard finishes what it left.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vidtune.errors import ConfigError, VideoDecodeError
from vidtune.utils import file_digest, stable_hash

T = TypeVar("T")

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based: ``0/4`` ... ``3/4``, like SLURM array ids and torch ranks)."""

    index: int
    count: int

    def __post_init__(self):
        if not isinstance(self.count, int) or self.count < 1:
            raise ConfigError("shard", f"needs at least one shard, got {self.count!r} (write I/N, e.g. 0/4)")
        if not isinstance(self.index, int) or not 0 <= self.index < self.count:
            raise ConfigError("shard", f"{self.index}/{self.count}: shards are numbered 0 to {self.count - 1} "
                                       f"(0-based, like $SLURM_ARRAY_TASK_ID with --array=0-{self.count - 1})")

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = _SHARD.match(str(text))
        if m is None:
            raise ConfigError("shard", f"must look like I/N (shard I of N, 0-based: 0/4 ... 3/4), got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, key: str) -> bool:
        """Whether the input with fingerprint ``key`` (see :func:`shard_key`) belongs to this shard."""
        return shard_of(key, self.count) == self.index


def shard_of(key: str, count: int) -> int:
    """The shard (0 .. count-1) of fingerprint ``key``: uniform, and the same in every process."""
    return int(stable_hash(["shard", key])[:15], 16) % count


def shard_key(path, digest: Callable[[Path], str] | None = None) -> str:
    """What decides a file's shard: its content fingerprint, or its path when it cannot be read."""
    try:
        return "content:" + (digest or file_digest)(Path(path))
    except (OSError, VideoDecodeError):
        return "path:" + str(path)


def select_shard(inputs: Sequence[T], shard: Shard | None, digest: Callable[[Path], str] | None = None,
                 path_of: Callable[[T], object] = lambda x: x) -> list[T]:
    """The inputs of ``shard``, in their given order (all of them when ``shard`` is None).

    ``digest``: the content fingerprint function (pass the feature cache's, which remembers
    fingerprints by path, size and mtime, so a rerun over a million files stats instead of reading);
    ``path_of``: the file of an input (e.g. ``lambda item: item.path`` for dataset rows, whose
    segments of one file then stay together).
    """
    if shard is None or shard.count == 1:
        return list(inputs)
    keys: dict[str, str] = {}
    mine = []
    for x in inputs:
        p = str(path_of(x))
        if p not in keys:
            keys[p] = shard_key(p, digest)
        if shard.owns(keys[p]):
            mine.append(x)
    return mine


def partition(inputs: Iterable[T], count: int, digest: Callable[[Path], str] | None = None,
              path_of: Callable[[T], object] = lambda x: x) -> list[list[T]]:
    """All ``count`` shards at once (one fingerprint per file): what a driver (Ray, a bench) hands out."""
    parts: list[list[T]] = [[] for _ in range(count)]
    keys: dict[str, str] = {}
    for x in inputs:
        p = str(path_of(x))
        if p not in keys:
            keys[p] = shard_key(p, digest)
        parts[shard_of(keys[p], count)].append(x)
    return parts
