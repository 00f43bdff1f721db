"""Terminal output owned by the CLI: progress on stderr (rich bars on a terminal, plain lines otherwise),
tables on stdout."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape as _markup_escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Piped or captured output (logs, CI) gets wide tables instead of rich's 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def escape(text) -> str:
    """``text`` for a rich markup string or a table cell: every control character (``\\r``, ``\\n``, ESC...)
    and undecodable file-name byte shown as an escape (:func:`vidtune.utils.printable`), so a file named
    ``a\\rb.mp4`` cannot rewrite the line or the table it is printed in, and markup escaped."""
    from vidtune.utils import printable

    return _markup_escape(printable(text))


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=err, show_path=False, markup=False)
    handler.addFilter(_printable_record)
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)


def _printable_record(record: logging.LogRecord) -> bool:
    """Log lines name files: their control characters are shown escaped, like in tables."""
    from vidtune.utils import printable

    try:
        record.msg, record.args = printable(record.getMessage()), None
    except Exception:  # a malformed message: let the handler report it as it would
        pass
    return True


class _RichTask:
    def __init__(self, bar: Progress, task_id):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: float = 1) -> None:
        self.bar.advance(self.task_id, n)

    def update(self, **fields) -> None:
        self.bar.update(self.task_id, **fields)


def progress_interval() -> float:
    """Seconds between plain progress lines (``VIDTUNE_PROGRESS_INTERVAL``, default 10)."""
    try:
        v = float(os.environ.get("VIDTUNE_PROGRESS_INTERVAL", "") or 10.0)
    except ValueError:
        return 10.0
    return v if v > 0 else 10.0


def _fmt_duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt_amount(x: float, unit: str) -> str:
    if unit == "s":
        return _fmt_duration(x) if x >= 60 else f"{x:.1f}s"
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 or x >= 100 else f"{x:.1f}"


_UNIT_NAMES = {"s": "of video", "frames": "frames", "clips": "clips", "epochs": "epochs", "videos": "videos",
               "steps": "steps", "items": "items"}


class LineTask:
    """Plain progress lines for a stderr that is not a terminal (a log file, CI, nohup, SLURM):
    ``[HH:MM:SS] WHAT: DONE/TOTAL UNIT (PCT), RATE, ETA``, every ``interval`` seconds (a background
    thread keeps the pace even while one long item has not reported yet) and at each further 10%
    (at most every ``interval / 4`` seconds). A task shorter than ``interval / 4`` prints nothing; one
    that printed anything prints a last ``done`` line."""

    def __init__(self, description: str, total: float | None, unit: str, interval: float, stream=None):
        self.description, self.total, self.unit, self.interval = description, total, unit, interval
        self.stream = stream
        self.completed = 0.0
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self.last_decile = 0
        self.printed = False
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, name="vidtune-progress", daemon=True)
        self.thread.start()

    # Task protocol
    def advance(self, n: float = 1) -> None:
        with self.lock:
            self.completed += n
        self._maybe()

    def update(self, **fields) -> None:
        with self.lock:
            if "total" in fields:
                self.total = fields["total"]
            if "completed" in fields and fields["completed"] is not None:
                self.completed = float(fields["completed"])
            if "advance" in fields and fields["advance"] is not None:
                self.completed += float(fields["advance"])
            if "description" in fields and fields["description"]:
                self.description = str(fields["description"])
        self._maybe()

    # lines
    def _tick(self) -> None:
        while not self.stop.wait(min(1.0, self.interval / 4)):
            if time.monotonic() - self.last_line >= self.interval:
                self._emit()

    def _maybe(self) -> None:
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self._emit()
            return
        if self.total and now - self.t0 >= self.interval / 4 and now - self.last_line >= self.interval / 4:
            decile = int(10 * min(self.completed / self.total, 1.0))
            if self.last_decile < decile < 10:  # 100%: the "done" line says it
                self._emit()

    def line(self, final: bool = False) -> str:
        with self.lock:
            done, total, unit = self.completed, self.total, self.unit
        elapsed = time.monotonic() - self.t0
        what = _UNIT_NAMES.get(unit, unit)
        parts = []
        if total:
            parts.append(f"{_fmt_amount(done, unit)}/{_fmt_amount(total, unit)} {what} ({100 * done / total:.0f}%)")
        else:
            parts.append(f"{_fmt_amount(done, unit)} {what}")
        if final:
            parts.append(f"done in {_fmt_duration(elapsed)}")
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            if unit == "s":
                parts.append(f"{rate:.2f}x real time" if rate < 10 else f"{rate:.0f}x real time")
            else:
                parts.append(f"{rate:.2f} {unit}/s" if rate < 10 else f"{rate:.0f} {unit}/s")
            if not final and total and total > done:
                parts.append(f"ETA {_fmt_duration((total - done) / rate)}")
        elif not final:
            parts.append(f"{_fmt_duration(elapsed)} elapsed")
        return f"[{time.strftime('%H:%M:%S')}] {self.description}: " + ", ".join(parts)

    def _emit(self, final: bool = False) -> None:
        text = self.line(final)
        with self.lock:
            self.last_line = time.monotonic()
            if self.total:
                self.last_decile = int(10 * min(self.completed / self.total, 1.0))
            self.printed = True
        stream = self.stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            stream.write(text + "\n")
            stream.flush()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        if self.printed:
            self._emit(final=True)


class RichProgress:
    """Implements vidtune.progress.Progress on stderr: rich bars on a terminal, plain timestamped lines
    (what, how far, rate, ETA; see :class:`LineTask`) when stderr is a file or pipe; nothing with --quiet."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bars = enabled and err.is_terminal

    @contextlib.contextmanager
    def task(self, description: str, total: float | None, unit: str = "videos"):
        if not self.enabled:
            from vidtune.progress import NullTask

            yield NullTask()
            return
        if not self.bars:
            line = LineTask(description, total, unit, progress_interval())
            try:
                yield line
            finally:
                line.close()
            return
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                       console=err, transient=False)
        with bar:
            yield _RichTask(bar, bar.add_task(description, total=total, unit=_UNIT_NAMES.get(unit, unit)))


def print_json(obj) -> None:
    """One JSON object on stdout, always valid JSON in valid UTF-8: NaN/inf become null, file names that
    are not UTF-8 keep their bytes as ``\\udcXX`` escapes (see :func:`vidtune.utils.json_text`)."""
    from vidtune.utils import json_text

    sys.stdout.write(json_text(obj, strict=False) + "\n")
    sys.stdout.flush()


def tolerate_undecodable_names() -> None:
    """Human output (tables, messages) shows a file name that is not UTF-8 with ``\\udcXX`` escapes
    instead of stopping on UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")


def fmt_pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"
