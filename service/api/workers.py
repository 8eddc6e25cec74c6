"""``/workers``: the workers that are alive now, read from the heartbeat table."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import APIRouter
from sqlalchemy.engine import Engine

from search_spaces.storage import now
from search_spaces.tables import worker_lost, workers_table
from service.deps import EngineDep, ReadAccess
from service.schemas import WorkerPublic, WorkersPublic

router = APIRouter(prefix="/workers", tags=["workers"], dependencies=[ReadAccess])


def live_workers(engine: Engine, at: float | None = None) -> list[WorkerPublic]:
    """Workers not lost (see search_spaces.storage.worker_lost) at `at` (default: now)."""
    t = workers_table.c
    at = now() if at is None else at
    query = sa.select(workers_table).where(sa.not_(worker_lost(at))).order_by(t.started_at, t.id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        WorkerPublic(
            id=r.id,
            host=r.host,
            pid=r.pid,
            device=r.device,
            study=r.study_name,
            trial_number=r.trial_number,
            last_heartbeat=datetime.fromtimestamp(r.heartbeat_at, tz=UTC),
            started_at=datetime.fromtimestamp(r.started_at, tz=UTC),
        )
        for r in rows
    ]


@router.get("")
def list_workers(engine: EngineDep) -> WorkersPublic:
    data = live_workers(engine)
    return WorkersPublic(data=data, count=len(data))
