"""Which of a list of files an index must (re)read: the incremental step of every ``index add``.

Files are named once each (duplicates dropped, order kept) and compared by content digest with what the
index stored for them: unchanged ones are listed and skipped, unreadable ones (missing, a folder, FIFO or
device refused unread) are listed with the reason, and the new or changed ones come back to be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from vidtune.errors import VideoDecodeError


def skip_reason(exc: BaseException) -> str:
    """What a skipped file's entry says: the decoder's reason, or why the file could not be read."""
    if isinstance(exc, VideoDecodeError):
        return exc.reason
    return f"cannot read file ({getattr(exc, 'strerror', None) or exc})"


class Changes:
    """The files of one ``add`` split against the stored digests ``known`` (key -> digest).

    ``for path, key, digest in changes.new_or_changed(paths)``: the files to read; ``unchanged`` and
    ``skipped`` (``{"path", "reason"}``) fill up as it goes. A failure while reading one is recorded
    with :meth:`skip` so every skipped file is listed in the order it was met.
    """

    def __init__(self, known: dict[str, str], digest: Callable[[object], str] | None = None,
                 key: Callable[[object], str] = str):
        if digest is None:
            from vidtune.utils import file_digest

            digest = file_digest
        self.known, self.digest, self.key = known, digest, key
        self.added: list[str] = []
        self.unchanged: list[str] = []
        self.skipped: list[dict] = []

    def new_or_changed(self, paths: Iterable) -> Iterator[tuple[object, str, str]]:
        for p in dict.fromkeys(paths):
            key = self.key(p)
            try:
                digest = self.digest(p)
            except (OSError, VideoDecodeError) as exc:
                self.skip(key, exc)
                continue
            if self.known.get(key) == digest:
                self.unchanged.append(key)
                continue
            yield p, key, digest

    def skip(self, key: str, exc: BaseException) -> None:
        self.skipped.append({"path": key, "reason": skip_reason(exc)})
