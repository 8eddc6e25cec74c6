"""What the API accepts and answers: ``XCreate`` bodies, ``XPublic`` items, ``XsPublic`` pages.

Plain pydantic models with no FastAPI import, so the CLI and the domain share them.
Non-finite floats (a diverged run's NaN loss) serialize as JSON ``null``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from search_spaces import StudySpec
from search_spaces._study_spec import MAX_RETRIES, MAX_TRIALS
from search_spaces.tables import MAX_NOTES_BYTES

# The body of ``POST /studies`` is the study spec itself; its validators check the task,
# the task config, the search space and the sampler/pruner options.
StudyCreate = StudySpec

TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
StudyStatus = Literal["running", "stopped", "completed", "failed"]
# Importance evaluators; the default ranks a strong categorical (eta) where PED-ANOVA does
# not: see service.plots._importance.
Evaluator = Literal["anova", "ped_anova", "fanova"]
DEFAULT_EVALUATOR: Evaluator = "anova"


class ProgressPublic(BaseModel):
    finished: int = Field(description="trials with a result of their own (counts in n_trials)")
    running: int
    waiting: int
    warm_start: int = Field(
        0, description="trials copied in from another study by a warm start (not counted)"
    )


class BestTrialPublic(BaseModel):
    number: int
    value: float | None
    params: dict[str, Any]


class StudyPublic(BaseModel):
    name: str
    spec: dict[str, Any]
    status: StudyStatus
    n_trials: int
    progress: ProgressPublic
    counts: dict[str, int] = Field(description="trials by Optuna state, all five states")
    best_trial: BestTrialPublic | None
    created_at: datetime
    priority: int
    fail_reason: str | None = Field(
        None, description="why the workers stopped the study (status failed); resume clears it"
    )
    notes: str | None = Field(None, description="its owner's notes, Markdown")


class StudyUpdate(BaseModel):
    """The body of ``PATCH /studies/NAME``: the fields to change, the others left as they are."""

    model_config = ConfigDict(extra="forbid")

    n_trials: int | None = Field(
        None,
        ge=1,
        le=MAX_TRIALS,
        description="grow or shrink the budget, never below the trials already counted (409)",
    )
    priority: int | None = Field(None, ge=-(2**31), le=2**31 - 1)
    max_retries: int | None = Field(None, ge=0, le=MAX_RETRIES)
    notes: str | None = Field(
        None, description=f"Markdown, at most {MAX_NOTES_BYTES} bytes of UTF-8; '' clears them"
    )

    @field_validator("notes")
    @classmethod
    def _storable_notes(cls, notes: str | None) -> str | None:
        if notes is None:
            return None
        try:
            size = len(notes.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("must be text UTF-8 can encode (no lone surrogates)") from None
        if size > MAX_NOTES_BYTES:
            raise ValueError(f"at most {MAX_NOTES_BYTES} bytes (64 KiB) of UTF-8, got {size}")
        if "\x00" in notes:
            raise ValueError("must not contain NUL characters")
        return notes


class QueuedTrialCreate(BaseModel):
    """One parameter set to queue: values for some or all of the study's sampled parameters
    (the sampler draws the others)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any]


class QueuedTrialPublic(BaseModel):
    number: int = Field(description="the queued trial's number")
    params: dict[str, Any] = Field(description="the values queued (the rest will be sampled)")


class QueuedTrialsPublic(BaseModel):
    data: list[QueuedTrialPublic]
    count: int


class StudiesPublic(BaseModel):
    data: list[StudyPublic]
    count: int


class RunPublic(BaseModel):
    """One seed's run of a trial (seed i is the same in every trial of a study)."""

    seed: int
    diverged: bool
    metrics: dict[str, Any] | None = Field(description="the run's final metrics")


class RunRecordPublic(RunPublic):
    curve: list[dict[str, Any]] = Field(description="the run's points, one per epoch")


class WarmStartOrigin(BaseModel):
    study: str
    number: int


class TrialPublic(BaseModel):
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    metrics: dict[str, Any] | None
    intermediate_values: dict[int, float | None] = Field(description="epoch -> study metric")
    worker: str | None
    host: str | None
    device: str | None
    attempt: int | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    duration_s: float | None
    fail_reason: str | None
    runs: list[RunPublic] | None = Field(
        None,
        description="each seed's run, in seed order (null until the trial has a result); "
        "value is the mean over the runs that did not diverge",
    )
    queued: bool = Field(False, description="its parameters were queued by hand")
    warm_start: WarmStartOrigin | None = Field(
        None, description="copied in by a warm start from this study's trial (not counted)"
    )


class TrialRecordPublic(TrialPublic):
    """One trial in full: what the list gives, plus its curve and where it came from."""

    curve: list[dict[str, Any]] = Field(
        description="one point per epoch: epoch, steps, epoch_s (wall time), each metric"
    )
    retry_of: int | None = Field(description="the number of the trial this one runs again")
    resumed_from_epoch: int | None = Field(
        None, description="the epoch a retry resumed from (null: it started from scratch)"
    )
    wall_time_s: float | None
    runs: list[RunRecordPublic] | None = Field(  # type: ignore[assignment]
        None, description="each seed's run with its curve"
    )


class TrialsPublic(BaseModel):
    data: list[TrialPublic]
    count: int = Field(description="all trials that match the filter, not just this page")


class ImportancePublic(BaseModel):
    evaluator: Evaluator
    importances: dict[str, float] = Field(description="parameter -> share; shares sum to 1")
    message: str | None = None
    not_ranked: list[str] = Field(
        default_factory=list,
        description="conditional parameters (a `when` in the space) that vary but are not "
        "ranked: importance is measured over parameters every complete trial has",
    )
    intervals: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="parameter -> [low, high]: the percentile interval of its share at "
        "`confidence` over `bootstrap` resamples of the complete trials (with replacement, "
        "a fixed seed), each ranked by the same evaluator",
    )
    confidence: float | None = Field(default=None, description="the intervals' level (0.95)")
    bootstrap: int = Field(default=0, description="resamples the intervals rest on")
    n_trials: int = Field(default=0, description="complete trials the shares rest on")
    notes: list[str] = Field(
        default_factory=list,
        description="what the ranking cannot claim: too few trials to rank the parameters, "
        "or top two whose intervals overlap",
    )


class WorkerPublic(BaseModel):
    id: str
    host: str
    pid: int
    device: str
    study: str | None
    trial_number: int | None
    last_heartbeat: datetime
    started_at: datetime


class WorkersPublic(BaseModel):
    data: list[WorkerPublic]
    count: int


class TaskPublic(BaseModel):
    name: str
    description: str
    primary_metric: str
    direction: str
    metrics: dict[str, str]
    config_schema: dict[str, Any]


class TasksPublic(BaseModel):
    data: list[TaskPublic]
    count: int


class SearchSpacePublic(BaseModel):
    name: str
    space: dict[str, Any]


class SearchSpacesPublic(BaseModel):
    data: list[SearchSpacePublic]
    count: int


class HealthPublic(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class SuccessRatePublic(BaseModel):
    threshold: float
    successes: int
    runs: int = Field(description="every run of the group; diverged ones count as failures")
    rate: float | None
    interval: tuple[float, float] | None = Field(description="Wilson interval of the rate")


class ComparisonPublic(BaseModel):
    """A group against the baseline on the seeds both ran: ``group - baseline`` per seed."""

    pairs: int = Field(description="seeds both groups have a value of (diverged runs aside)")
    mean_difference: float | None
    interval: tuple[float, float] | None = Field(description="t interval of the mean difference")
    p_value: float | None = Field(description="two-sided paired t-test (scipy's ttest_rel)")


class GroupEffectPublic(BaseModel):
    label: str = Field(description="the group's values, e.g. `eta=0.01`")
    params: dict[str, Any] = Field(description="the value of each `by` parameter")
    trials: int
    runs: int = Field(description="runs (one per seed a trial trained), diverged ones included")
    seeds: int = Field(description="distinct seeds among the runs")
    diverged: int
    values: int = Field(description="runs with a finite value of the metric, not diverged")
    mean: float | None
    interval: tuple[float, float] | None = Field(description="t interval of the mean")
    median: float | None
    best: float | None
    success: list[SuccessRatePublic] = Field(description="one per success threshold")
    baseline: bool = Field(description="whether this is the group the others are compared with")
    comparison: ComparisonPublic | None = Field(
        description="against the baseline; null for the baseline itself or without one"
    )


class AnalysisPublic(BaseModel):
    """A study's runs grouped by parameter values, each group's results with intervals."""

    metric: str
    direction: str
    by: list[str]
    confidence: float = Field(description="of every interval")
    baseline: str | None = Field(description="the label of the baseline group, if any")
    success_metric: str | None
    success_direction: str | None = Field(
        description="maximize: a run succeeds at or above a threshold; minimize: below it"
    )
    thresholds: list[float]
    runs: int = Field(description="runs of the trials that count: complete or diverged")
    groups: list[GroupEffectPublic]
    left_out: dict[str, int] = Field(description="trials whose runs do not count, by state")
    notes: list[str] = Field(description="what the answer rests on, e.g. groups with few runs")
