"""Terminal output owned by the CLI: rich progress bars on stderr, tables on stdout."""

from __future__ import annotations

import contextlib
import logging
import sys

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

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task_id, n)

    def update(self, **fields) -> None:
        self.bar.update(self.task_id, **fields)


class RichProgress:
    """Implements vidtune.progress.Progress with rich bars on stderr (hidden with --quiet)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and err.is_terminal

    @contextlib.contextmanager
    def task(self, description: str, total: int | None):
        if not self.enabled:
            from vidtune.progress import NullTask

            yield NullTask()
            return
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=err, transient=False)
        with bar:
            yield _RichTask(bar, bar.add_task(description, total=total))


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
