"""``/studies``: submit, list, inspect, stop, resume and delete studies; trials; importance."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import PlainTextResponse

from service import importance, plots, studies, trials
from service.api import exports
from service.deps import ReadAccess, SettingsDep, StorageDep, WriteAccess
from service.schemas import (
    DEFAULT_EVALUATOR,
    TRIAL_STATES,
    AnalysisPublic,
    Evaluator,
    ImportancePublic,
    StudiesPublic,
    StudyCreate,
    StudyPublic,
    TrialRecordPublic,
    TrialsPublic,
)

router = APIRouter(prefix="/studies", tags=["studies"], dependencies=[ReadAccess])

MAX_PAGE = 1000
# OFFSET beyond a 32-bit int makes PostgreSQL fail; no study has that many trials.
MAX_OFFSET = 2**31 - 1


@router.post("", status_code=201, dependencies=[WriteAccess])
def create_study(spec: StudyCreate, storage: StorageDep, settings: SettingsDep) -> StudyPublic:
    """Submit a study; workers pick its trials up from the database.

    422 when its trials may need more memory than the server allows (the task's estimate
    against `NOISETUNE_MAX_TRIAL_MEMORY`).
    """
    return studies.create_study(storage, spec, max_trial_memory=settings.max_trial_memory)


@router.get("")
def list_studies(storage: StorageDep) -> StudiesPublic:
    return studies.list_studies(storage)


@router.get("/{name}")
def read_study(name: str, storage: StorageDep) -> StudyPublic:
    return studies.get_study(storage, name)


@router.get(
    "/{name}/trials",
    response_model=TrialsPublic,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def read_trials(
    name: str,
    storage: StorageDep,
    state: Annotated[
        str | None, Query(description=f"one of {', '.join(TRIAL_STATES)} (any case)")
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    format: Annotated[
        Literal["json", "csv", "jsonl"],
        Query(description="json: a page; csv or jsonl: every trial, streamed (see export)"),
    ] = "json",
) -> Any:
    """A page of trials by number; `count` is the number of all trials matching `state`.

    `format=csv` (a row per trial) or `format=jsonl` (each trial's full record, curves
    included) streams every trial matching `state` instead, `offset` and `limit` aside.
    """
    if format != "json":
        return exports.streamed(storage, name, format, state)
    return trials.list_trials(storage, name, state=state, offset=offset, limit=limit)


@router.get("/{name}/trials/{number}")
def read_trial(
    name: str, number: Annotated[int, Path(ge=0, le=MAX_OFFSET)], storage: StorageDep
) -> TrialRecordPublic:
    """One trial in full: its list entry, its curve (with each epoch's wall time), the trial
    it retries, and the epoch it resumed from."""
    return trials.get_trial(storage, name, number)


@router.get(
    "/{name}/trials/{number}/log",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
def read_trial_log(
    name: str, number: Annotated[int, Path(ge=0, le=MAX_OFFSET)], storage: StorageDep
) -> PlainTextResponse:
    """What the trial printed (its trainer's stdout, stderr and logging; the last 1 MiB) and,
    if it failed, its traceback at the end. Empty before it printed anything."""
    return PlainTextResponse(trials.trial_log(storage, name, number))


@router.get("/{name}/importance")
def read_importance(
    name: str, storage: StorageDep, evaluator: Evaluator = DEFAULT_EVALUATOR
) -> ImportancePublic:
    """Each sampled parameter's share of the study metric's variation (shares sum to 1),
    with a bootstrap interval per share and notes when the ranking is not settled or rests
    on too few trials. Evaluators: `anova` (one-way ANOVA effect sizes, the default),
    `ped_anova`, `fanova` (Optuna's)."""
    return importance.param_importance(storage, name, evaluator)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",")]


@router.get("/{name}/analysis")
def read_analysis(
    name: str,
    storage: StorageDep,
    by: Annotated[
        str, Query(description="parameters to group runs by, comma-separated: `by=eta,gamma`")
    ] = "eta",
    baseline: Annotated[
        str | None,
        Query(
            description="the group to compare with, its values in `by` order: `baseline=0,0.55` "
            "(default: eta 0 when grouping by eta)"
        ),
    ] = None,
    metric: Annotated[
        str | None,
        Query(description="default: the spec's success metric, else the study's metric"),
    ] = None,
) -> AnalysisPublic:
    """The study's runs (one per seed of each complete or diverged trial) grouped by `by`:
    per group the metric's mean with a 95% t interval, median, best, each success
    threshold's rate with a Wilson interval, and a paired comparison with the baseline on
    shared seeds. `notes` says what the answer rests on."""
    by_names = [n for n in _names(by) or [] if n]
    return plots.study_analysis(
        storage, name, by_names, baseline=_names(baseline), metric=metric or None
    )


@router.post("/{name}/stop", dependencies=[WriteAccess])
def stop_study(name: str, storage: StorageDep) -> StudyPublic:
    """Workers take no new trials of this study; trials already running finish."""
    return studies.set_status(storage, name, "stopped")


@router.post("/{name}/resume", dependencies=[WriteAccess])
def resume_study(name: str, storage: StorageDep) -> StudyPublic:
    return studies.set_status(storage, name, "running")


@router.delete("/{name}", status_code=204, dependencies=[WriteAccess])
def delete_study(name: str, storage: StorageDep) -> Response:
    """Delete the study, its trials and its noisetune rows."""
    studies.delete_study(storage, name)
    return Response(status_code=204)
