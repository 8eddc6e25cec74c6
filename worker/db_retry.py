"""Ride through a database restart: retry a call with exponential backoff."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import optuna
import sqlalchemy as sa

log = logging.getLogger("noisetune.worker")
T = TypeVar("T")

# Connection-level failures; a constraint or programming error is not retried. Optuna wraps
# a failed commit (such as a dropped connection) in StorageInternalError.
DB_ERRORS = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    optuna.exceptions.StorageInternalError,
)


def with_db_retry(
    fn: Callable[[], T],
    *,
    stop: threading.Event | None = None,
    what: str = "",
    max_wait: float = 600,
) -> T:
    delay, waited = 0.5, 0.0
    while True:
        try:
            return fn()
        except DB_ERRORS as exc:
            if (stop is not None and stop.is_set()) or waited >= max_wait:
                raise
            log.warning(
                "database unavailable while %s (%s); retrying in %.1fs",
                what,
                str(exc).splitlines()[0],
                delay,
            )
            (stop or threading.Event()).wait(delay)
            waited += delay
            delay = min(delay * 2, 10.0)
