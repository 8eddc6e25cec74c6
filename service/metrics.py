"""``GET /metrics``: the fleet in Prometheus' text format, read from the shared database.

Everything is derived from rows the workers already write: trials by state and study, each
study's status and budget, live workers by device, and claim latency (``claim_seconds``,
timed by the worker that claimed the trial). A handful of aggregate queries, whatever the
number of studies or trials, and the answer is cached for `CACHE_SECONDS` so that many
scrapers (or a dashboard refreshing fast) cost the database one round of queries at most.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, get_args

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from sqlalchemy.engine import Engine

from search_spaces.optuna_adapter import trials_table
from search_spaces.study_rows import (
    Progress,
    counted_fails,
    list_study_rows,
    study_status,
    warm_started,
)
from search_spaces.tables import trial_runs_table, worker_lost, workers_table
from service.deps import EngineDep, ReadAccess
from service.schemas import TRIAL_STATES, StudyStatus

CACHE_SECONDS = 2.0
# Claims take milliseconds when the fleet is healthy; the upper buckets catch lock queues.
CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STUDY_STATUSES = get_args(StudyStatus)

router = APIRouter(tags=["metrics"], dependencies=[ReadAccess])

_t = trials_table.c
_TRIALS_BY_STATE = sa.select(_t.study_id, _t.state, sa.func.count()).group_by(_t.study_id, _t.state)


def _trial_families(engine: Engine) -> list[Metric]:
    rows = list_study_rows(engine)
    with engine.connect() as conn:
        counts = conn.execute(_TRIALS_BY_STATE).all()
        fails = {str(name): int(n) for name, n in conn.execute(counted_fails())}
        warm = {int(study_id): int(n) for study_id, n in conn.execute(warm_started())}
    by_study: dict[int, dict[str, int]] = {}
    for study_id, state, n in counts:
        by_study.setdefault(int(study_id), {})[str(state)] = int(n)

    trials = GaugeMetricFamily(
        "noisetune_trials", "Trials by study and Optuna state.", labels=["study", "state"]
    )
    status = GaugeMetricFamily(
        "noisetune_study_status",
        "1 for the study's current status (running, stopped, completed, failed), 0 for the others.",
        labels=["study", "status"],
    )
    budget = GaugeMetricFamily(
        "noisetune_study_budget_trials", "The study's n_trials.", labels=["study"]
    )
    finished = GaugeMetricFamily(
        "noisetune_study_finished_trials",
        "Trials with a result of their own, the ones that count against n_trials.",
        labels=["study"],
    )
    for row in rows:
        by_state = by_study.get(row.study_id, {})
        for state in TRIAL_STATES:
            trials.add_metric([row.name, state], by_state.get(state, 0))
        progress = Progress.of(by_state, fails.get(row.name, 0), warm.get(row.study_id, 0))
        current = study_status(row, progress)
        for name in STUDY_STATUSES:
            status.add_metric([row.name, name], 1.0 if name == current else 0.0)
        budget.add_metric([row.name], row.n_trials)
        finished.add_metric([row.name], progress.counted)
    return [trials, status, budget, finished]


def _worker_families(engine: Engine) -> list[Metric]:
    t = workers_table.c
    # The same rule as GET /api/v1/workers: not lost (search_spaces.storage.worker_lost).
    query = (
        sa.select(t.device, sa.func.count(), sa.func.count(t.trial_id))
        .where(sa.not_(worker_lost()))
        .group_by(t.device)
        .order_by(t.device)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    total = GaugeMetricFamily("noisetune_workers_live", "Live workers (heartbeat within 2 beats).")
    total.add_metric([], sum(int(n) for _, n, _ in rows))
    live = GaugeMetricFamily(
        "noisetune_workers_live_by_device", "Live workers by device.", labels=["device"]
    )
    busy = GaugeMetricFamily(
        "noisetune_workers_busy_by_device",
        "Live workers that are training a trial, by device.",
        labels=["device"],
    )
    for device, n, training in rows:
        live.add_metric([device], int(n))
        busy.add_metric([device], int(training))
    return [total, live, busy]


def _claim_family(engine: Engine) -> Metric:
    """Claim latency per study, bucketed by the database: one row per study, not per trial."""
    c = trial_runs_table.c
    le = [sa.func.sum(sa.case((c.claim_seconds <= b, 1), else_=0)) for b in CLAIM_BUCKETS]
    query = (
        sa.select(c.study_name, sa.func.count(), sa.func.sum(c.claim_seconds), *le)
        .where(c.claim_seconds.is_not(None))
        .group_by(c.study_name)
        .order_by(c.study_name)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    family = HistogramMetricFamily(
        "noisetune_claim_seconds",
        "Seconds a worker took to claim a trial (lock wait, budget check, ask), by study.",
        labels=["study"],
    )
    for study, count, total, *cumulative in rows:
        bounds = [floatToGoString(b) for b in CLAIM_BUCKETS]
        buckets = [(b, float(n or 0)) for b, n in zip(bounds, cumulative, strict=True)]
        family.add_metric([study], [*buckets, ("+Inf", float(count))], float(total or 0.0))
    return family


def collect(engine: Engine) -> list[Metric]:
    """Every metric family, freshly read from the database."""
    return [*_trial_families(engine), *_worker_families(engine), _claim_family(engine)]


class MetricsCache:
    """The last collection, reused for `max_age_s`; concurrent scrapes share one collection."""

    def __init__(
        self, max_age_s: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age_s, self.clock = max_age_s, clock
        self._lock = threading.Lock()
        self._taken_at = -math.inf
        self._families: list[Metric] = []

    def get(self, load: Callable[[], list[Metric]]) -> list[Metric]:
        with self._lock:
            if self.clock() - self._taken_at >= self.max_age_s:
                self._families = load()
                self._taken_at = self.clock()
            return self._families


class _Snapshot:
    """A collector over families already read, as prometheus_client's encoders expect."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


_CACHE_LOCK = threading.Lock()


def metrics_cache(app: FastAPI) -> MetricsCache:
    """The app's cache, made on first use (tests may set ``app.state.metrics_cache``)."""
    with _CACHE_LOCK:
        cache: Any = getattr(app.state, "metrics_cache", None)
        if cache is None:
            cache = app.state.metrics_cache = MetricsCache()
    assert isinstance(cache, MetricsCache)
    return cache


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text format (OpenMetrics on request)"}},
)
def read_metrics(request: Request, engine: EngineDep) -> Response:
    """Trials by state and study, study status, live workers, and claim latency."""
    families = metrics_cache(request.app).get(lambda: collect(engine))
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(content=encode(_Snapshot(families)), media_type=content_type)
