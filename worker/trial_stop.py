"""Stopping a running trainer from outside: its timeout, and the grace after SIGTERM.

A trainer stops by itself at its next report when the worker asks (an exception raised
from ``report``). One that reports too rarely, or never, is stopped from another thread:
``stop_trainer`` raises an exception inside the trainer's thread, which takes effect at
the trainer's next Python instruction (a call into native code, such as one long torch
operation or ``time.sleep``, finishes first). Only code inside ``trainer_section`` (the
trainer call itself) can be stopped this way, never the worker recording a result.

A study's ``trial_timeout_s``: a trial over it is stopped at its next report
(``Deadline.check``) or by its watchdog (``Deadline.watched``) and recorded FAIL with the
reason ``timeout after N s``; it counts in the budget and is not retried.
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


class _Section:
    """The trainer call now running in this process (a worker trains one at a time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread: int | None = None
        self.raised = False


_section = _Section()


@contextmanager
def trainer_section() -> Iterator[None]:
    """The block in which `stop_trainer` may stop this thread: the trainer call."""
    with _section.lock:
        _section.thread, _section.raised = threading.get_ident(), False
    try:
        yield
    finally:
        with _section.lock:
            if _section.raised:  # raised but not yet delivered: it must not escape the block
                _raise_in(_section.thread, None)
            _section.thread, _section.raised = None, False


def stop_trainer(exc: type[BaseException]) -> bool:
    """Raise `exc` in the running trainer's thread; False when no trainer is running."""
    with _section.lock:
        if _section.thread is None or _section.raised:
            return False
        _raise_in(_section.thread, exc)
        _section.raised = True
        return True


def _raise_in(thread: int | None, exc: type[BaseException] | None) -> None:
    """Make `thread` raise `exc` at its next Python instruction (None: cancel a pending one)."""
    if thread is None:
        return
    target = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), target)


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
        """Run the block as the trainer section, stopped by TrialTimeout past the deadline."""
        with trainer_section():
            if self.limit_s is None:
                yield
                return
            done = threading.Event()

            def watch() -> None:
                while not done.wait(WATCH_EVERY_S):
                    if self.passed(REPORT_SLACK_S) and stop_trainer(TrialTimeout):
                        return

            watcher = threading.Thread(target=watch, name="trial-timeout", daemon=True)
            watcher.start()
            try:
                yield
            finally:
                done.set()
                watcher.join()
