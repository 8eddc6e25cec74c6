"""A trial's log in the database: workers write it, the API and the CLI read it.

The log is what the trial printed (its trainer's stdout and stderr, and Python logging
from inside the trainer) and, when it failed, its traceback at the end. Only the last
`MAX_LOG_BYTES` are kept; what was dropped from the start is counted and said.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from search_spaces.storage import upsert
from search_spaces.tables import trial_logs_table

MAX_LOG_BYTES = 2**20


@dataclass(frozen=True)
class TrialLog:
    text: str
    dropped_bytes: int
    updated_at: float

    def render(self) -> str:
        """The text as served: a note of what was dropped first, when anything was."""
        if not self.dropped_bytes:
            return self.text
        kept = f"{MAX_LOG_BYTES // 2**20} MiB"
        return (
            f"[... {self.dropped_bytes} earlier bytes dropped: the log keeps the last {kept}]\n"
            + (self.text)
        )


def write_log(
    conn: sa.Connection, trial_id: int, study_name: str, number: int, text: str, dropped: int
) -> None:
    """Store a trial's whole log so far (it replaces the last one written)."""
    row = {
        "trial_id": trial_id,
        "study_name": study_name,
        "number": number,
        "text": text,
        "dropped_bytes": dropped,
        "updated_at": time.time(),
    }
    upsert(conn, trial_logs_table, ["trial_id"], [row])


def read_log(engine: sa.Engine, trial_id: int) -> TrialLog | None:
    """The trial's log, or None when it has printed nothing yet."""
    t = trial_logs_table.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.text, t.dropped_bytes, t.updated_at).where(t.trial_id == trial_id)
        ).first()
    return None if row is None else TrialLog(row.text, int(row.dropped_bytes), row.updated_at)
