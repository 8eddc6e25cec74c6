"""noisetune's own tables, beside Optuna's in the same database, and the rules read off them.

The schema is the contract between the service and the workers: the service writes studies
and tokens, workers write themselves, their claims and reservations, and both read all of it.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

metadata = sa.MetaData()

studies_table = sa.Table(
    "noisetune_studies",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("study_id", sa.Integer, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    # running | stopped | failed; "completed" is derived from the trial counts.
    sa.Column("status", sa.String(16), nullable=False, default="running"),
    sa.Column("priority", sa.Integer, nullable=False, default=0),
    sa.Column("n_trials", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Why the workers stopped the study (status "failed"); cleared by resume.
    sa.Column("fail_reason", sa.Text),
    # Trials that failed with an exception since the last one that did not (NULL: none).
    sa.Column("failure_streak", sa.Integer),
    # Its owner's notes, Markdown (at most MAX_NOTES_BYTES of UTF-8; NULL: none).
    sa.Column("notes", sa.Text),
)

MAX_NOTES_BYTES = 64 * 1024

workers_table = sa.Table(
    "noisetune_workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("study_name", sa.String(64)),
    sa.Column("trial_id", sa.Integer),
    sa.Column("trial_number", sa.Integer),
    sa.Column("started_at", sa.Float, nullable=False),
    # Unix seconds from the worker's clock; machines of one fleet are assumed NTP-synced.
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("heartbeat_interval", sa.Float, nullable=False),
    # alive | exited | lost
    sa.Column("state", sa.String(16), nullable=False, default="alive"),
)

trial_runs_table = sa.Table(
    "noisetune_trial_runs",
    metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("study_name", sa.String(64), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("worker_id", sa.String(64), index=True),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    # Whether the trial reached a result of its own and so counts in the study's budget.
    sa.Column("counted", sa.Boolean, nullable=False, default=False),
    sa.Column("fail_reason", sa.Text),
    # Seconds the worker spent claiming the trial (lock wait, budget check, ask): /metrics.
    sa.Column("claim_seconds", sa.Float),
)

# A slot of a study's budget taken by a claim that has not recorded its trials yet: claims
# reserve under the study's lock, then ask Optuna outside it. A claimer that dies leaves
# its reservations to the reaper (they are freed once its worker is found lost).
reservations_table = sa.Table(
    "noisetune_reservations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(64), nullable=False, index=True),
    sa.Column("worker_id", sa.String(64), nullable=False, index=True),
    sa.Column("claim", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # Ids only grow, never reused: the reaper tells claims older than a trial by them.
    sqlite_autoincrement=True,
)

tokens_table = sa.Table(
    "noisetune_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_hash", sa.String(128), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("name", sa.String(255)),
    sa.Column("created_at", sa.Float, nullable=False),
    # Unix seconds; last use is recorded at most once a minute per token.
    sa.Column("last_used_at", sa.Float),
    # Revoked tokens stay listed (who had access, until when) and never authorize again.
    sa.Column("revoked_at", sa.Float),
)

# What a trial printed (stdout, stderr, logging from inside its trainer) and, when it
# failed, its traceback: the last MAX_LOG_BYTES of it (search_spaces.trial_logs).
trial_logs_table = sa.Table(
    "noisetune_trial_logs",
    metadata,
    sa.Column("trial_id", sa.Integer, primary_key=True),
    sa.Column("study_name", sa.String(64), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    # Bytes dropped from the start to keep the text within the cap.
    sa.Column("dropped_bytes", sa.Integer, nullable=False, default=0),
    sa.Column("updated_at", sa.Float, nullable=False),
)


# A claimed trial holds one of its study's n_trials slots unless it was given up without a
# result of its own (lost, interrupted, failed with retries left): those, and only those,
# have a fail_reason and are not counted.
HOLDS_SLOT = sa.or_(trial_runs_table.c.counted, trial_runs_table.c.fail_reason.is_(None))


# A worker is lost once it missed this many of its own heartbeat intervals (kill -9, a lost
# machine): the reaper then fails its trials, and the dashboard stops showing it.
MISSED_BEATS = 2


def worker_lost(at: float | None = None) -> sa.ColumnElement[bool]:
    """Workers that exited, were given up, or missed MISSED_BEATS of their own intervals."""
    w = workers_table.c
    at = time.time() if at is None else at
    return sa.or_(w.state != "alive", w.heartbeat_at < at - MISSED_BEATS * w.heartbeat_interval)
