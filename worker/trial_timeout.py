"""A study's ``trial_timeout_s``: when a trial must stop, and how the worker stops it.

A trial over its timeout is stopped at its next report (``Deadline.check``) and recorded
FAIL with the reason ``timeout after N s``; it counts in the budget and is not retried
(it would time out again). A trainer that stops reporting is stopped by a watchdog thread,
which raises ``TrialTimeout`` inside the trainer's thread once the timeout has passed: it
takes effect at the trainer's next Python instruction (a call into native code, such as
one long torch operation or ``time.sleep``, finishes first).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# How often the watchdog looks, and how long past the timeout it lets the next report come.
WATCH_EVERY_S = 0.5
REPORT_SLACK_S = 1.0


class TrialTimeout(Exception):
    """The trial ran past its study's ``trial_timeout_s``."""

    # Raised by the watchdog inside another thread, it is built with no arguments.
    def __init__(self, limit_s: float | None = None) -> None:
        super().__init__("timeout" if limit_s is None else f"timeout after {limit_s:g} s")


class Deadline:
    """When a trial that started at `started` (time.monotonic) must stop; None: never."""

    def __init__(self, limit_s: float | None, started: float | None = None) -> None:
        self.limit_s = limit_s
        self.started = time.monotonic() if started is None else started

    def passed(self, slack: float = 0.0) -> bool:
        return self.limit_s is not None and time.monotonic() - self.started > self.limit_s + slack

    def check(self) -> None:
        """Raise TrialTimeout once the deadline has passed (called at every report)."""
        if self.passed():
            raise TrialTimeout(self.limit_s)

    @contextmanager
    def watched(self) -> Iterator[None]:
        """Stop the calling thread with TrialTimeout if the block outlives the deadline."""
        if self.limit_s is None:
            yield
            return
        thread = threading.get_ident()
        done = threading.Event()
        lock = threading.Lock()
        fired = []

        def watch() -> None:
            while not done.wait(WATCH_EVERY_S):
                if self.passed(REPORT_SLACK_S):
                    with lock:
                        if not done.is_set():
                            _raise_in(thread, TrialTimeout)
                            fired.append(True)
                    return

        watcher = threading.Thread(target=watch, name="trial-timeout", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            with lock:
                done.set()
                if fired:
                    _raise_in(thread, None)  # one not delivered yet must not escape the block
            watcher.join()


def _raise_in(thread: int, exc: type[BaseException] | None) -> None:
    """Make `thread` raise `exc` at its next Python instruction (None: cancel a pending one)."""
    target = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), target)
