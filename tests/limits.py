"""A wall-clock limit for test bodies that might hang (decoders fed garbage, special files)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


@contextmanager
def hard_timeout(seconds: int, error: type[BaseException] = TimeoutError, what: str = "the body"):
    """Raise ``error`` if the body runs longer than ``seconds`` (SIGALRM: main thread only; elsewhere
    the body runs without a limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(*_):
        raise error(f"{what} did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
