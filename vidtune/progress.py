"""Progress reporting hook: the library reports, the CLI draws (the library never prints)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def update(self, **fields) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> contextlib.AbstractContextManager[Task]: ...


class NullTask:
    """A task that reports nothing (what :class:`NullProgress` gives)."""

    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class NullProgress:
    """Reports nothing; the default for library calls."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        yield NullTask()


def each_video(paths, work, description: str, progress: Progress | None = None) -> tuple[list, list[dict]]:
    """``work(path)`` for every path, with progress; a video that fails with a vidtune error is skipped
    and reported as ``{"path", "reason"}`` instead of ending the job."""
    from vidtune.errors import VideoDecodeError, VidtuneError

    done, skipped = [], []
    with (progress or NullProgress()).task(description, total=len(paths)) as task:
        for p in paths:
            try:
                done.append(work(p))
            except VideoDecodeError as exc:
                skipped.append({"path": str(p), "reason": exc.reason})
            except VidtuneError as exc:
                skipped.append({"path": str(p), "reason": str(exc)})
            task.advance()
    return done, skipped
