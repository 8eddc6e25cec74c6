"""Capturing what a trial prints, for its log in the database (search_spaces.trial_logs).

While a trainer runs, its thread's writes to stdout and stderr and its Python logging
records are kept (and still reach the worker's own output), the last MAX_LOG_BYTES of them;
a failed trial's traceback is added at the end. The log is written while the trial runs
(at most every FLUSH_EVERY_S, from its epoch reports) and once more when it ends.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from search_spaces.optuna_adapter import trial_db_id
from search_spaces.trial_logs import MAX_LOG_BYTES, write_log
from worker.claims import Claim
from worker.db_retry import with_db_retry

FLUSH_EVERY_S = 5.0
# The worker's own records are its log's, not the trial's.
_WORKER_LOGGERS = ("noisetune.worker", "worker.claims")


class TrialOutput:
    """The text one trainer call printed, bounded, written to its trials' logs."""

    def __init__(self, claims: list[Claim], header: str = "") -> None:
        self.claims = claims
        self._chunks: list[str] = [header] if header else []
        self._bytes = len(header.encode())
        self.dropped_bytes = 0
        self._lock = threading.Lock()
        self._changed = bool(header)
        self._flushed_at = time.monotonic()

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._chunks.append(text)
            self._bytes += len(text.encode("utf-8", "replace"))
            self._changed = True
            if self._bytes > 2 * MAX_LOG_BYTES:  # trim now and then, not at every write
                self._trim()

    def _trim(self) -> None:
        data = "".join(self._chunks).encode("utf-8", "replace")
        cut = max(0, len(data) - MAX_LOG_BYTES)
        self.dropped_bytes += cut
        self._chunks = [data[cut:].decode("utf-8", "ignore")]
        self._bytes = len(data) - cut

    def text(self) -> str:
        with self._lock:
            if self._bytes > MAX_LOG_BYTES:
                self._trim()
            return "".join(self._chunks)

    def add_traceback(self, exc: BaseException) -> None:
        self.write("\n" + "".join(traceback.format_exception(exc)))

    def flush(self, *, force: bool = False) -> None:
        """Write the log to the database if it changed (while running, at most every 5 s)."""
        due = force or time.monotonic() - self._flushed_at >= FLUSH_EVERY_S
        if not (self._changed and due):
            return
        text = self.text()
        self._changed, self._flushed_at = False, time.monotonic()

        def write() -> None:
            with self.claims[0].engine.begin() as conn:
                for claim in self.claims:
                    trial = claim.trial
                    write_log(conn, trial_db_id(trial), claim.row.name, trial.number, text,
                              self.dropped_bytes)  # fmt: skip

        with_db_retry(write, what="writing a trial's log")

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Keep what this thread prints and logs until the block ends."""
        thread = threading.get_ident()
        handler = _ThreadHandler(self, thread)
        root = logging.getLogger()
        saved = sys.stdout, sys.stderr
        sys.stdout = _Tee(saved[0], self, thread)  # type: ignore[assignment]
        sys.stderr = _Tee(saved[1], self, thread)  # type: ignore[assignment]
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)
            sys.stdout, sys.stderr = saved


class _Tee:
    """A stream that also keeps what one thread writes."""

    def __init__(self, stream: TextIO, output: TrialOutput, thread: int) -> None:
        self._stream, self._output, self._thread = stream, output, thread

    def write(self, text: str) -> int:
        if threading.get_ident() == self._thread:
            self._output.write(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


class _ThreadHandler(logging.Handler):
    """Logging records made in one thread, formatted as the worker formats its own."""

    def __init__(self, output: TrialOutput, thread: int) -> None:
        super().__init__(level=logging.NOTSET)
        self._output, self._thread = output, thread
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._thread or record.name.startswith(_WORKER_LOGGERS):
            return
        try:
            self._output.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
