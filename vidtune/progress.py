"""Progress reporting hook: the library reports, the CLI draws (the library never prints).

A task counts work in a ``unit``: ``"s"`` (seconds of video), ``"frames"``, ``"clips"``, ``"epochs"``
or ``"videos"``. Long jobs count seconds or frames, not files, so one long video among short ones
moves the count while it is read (``on_progress`` callbacks report the seconds done inside a video).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

UNITS = ("s", "frames", "clips", "epochs", "videos", "steps", "items")


class Task(Protocol):
    def advance(self, n: float = 1) -> None: ...

    def update(self, **fields) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None,
             unit: str = "videos") -> contextlib.AbstractContextManager[Task]: ...


class NullTask:
    """A task that reports nothing (what :class:`NullProgress` gives)."""

    def advance(self, n: float = 1) -> None:
        pass

    def update(self, **fields) -> None:
        pass


class NullProgress:
    """Reports nothing; the default for library calls."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None, unit: str = "videos") -> Iterator[Task]:
        yield NullTask()


def each_video(paths, work, description: str, progress: Progress | None = None,
               durations: list[float] | None = None) -> tuple[list, list[dict]]:
    """``work(path)`` for every path, with progress; a video that fails with a vidtune error is skipped
    and reported as ``{"path", "reason"}`` instead of ending the job.

    ``durations`` (seconds of each video, 0 when unknown): progress counts seconds of video, and ``work``
    is called as ``work(path, on_progress=f)``, where ``f(seconds)`` reports how far into that video it is.
    """
    from vidtune.errors import VideoDecodeError, VidtuneError

    done, skipped = [], []
    if durations is None:
        with (progress or NullProgress()).task(description, total=len(paths), unit="videos") as task:
            for p in paths:
                try:
                    done.append(work(p))
                except VideoDecodeError as exc:
                    skipped.append({"path": str(p), "reason": exc.reason})
                except VidtuneError as exc:
                    skipped.append({"path": str(p), "reason": str(exc)})
                task.advance()
        return done, skipped
    total = float(sum(durations))
    with (progress or NullProgress()).task(description, total=total or None, unit="s") as task:
        base = 0.0
        for p, d in zip(paths, durations):
            report = seconds_reporter(task, base, d)
            try:
                done.append(work(p, on_progress=report))
            except VideoDecodeError as exc:
                skipped.append({"path": str(p), "reason": exc.reason})
            except VidtuneError as exc:
                skipped.append({"path": str(p), "reason": str(exc)})
            base += d
            task.update(completed=base)
    return done, skipped


def seconds_reporter(task: Task, base: float, duration: float, share: float = 1.0,
                     offset: float = 0.0) -> Callable[[float], None]:
    """``f(seconds into the video)`` -> the task's count set to ``base + offset + share * seconds`` (capped at
    the video's share); ``share``/``offset`` split one video's seconds among several passes over it."""

    def report(seconds: float) -> None:
        done = min(max(float(seconds), 0.0), duration)
        task.update(completed=base + offset + share * done)

    return report
