"""The study spec: everything a worker needs to rebuild a study's sampler, pruner and task.

The whole spec is stored with the study, because Optuna does not persist samplers or
pruners; any worker that joins rebuilds them from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from search_spaces._builtin import resolve_search_space
from search_spaces._grid import grid_points
from search_spaces._noise_checks import check_families, check_noise_values
from search_spaces._optimizer_options import validate_options
from search_spaces._optuna_builders import build_pruner, build_sampler
from search_spaces._params import CategoricalParam, SearchSpace, SearchSpaceError
from search_spaces._spec_guards import check_raw_spec
from search_spaces._tasks import (
    MAX_EPOCHS,
    MAX_QUADRATIC_SECONDS,
    QUADRATIC,
    Direction,
    QuadraticConfig,
    TaskConfig,
    TaskConfigError,
    TaskDefinition,
    get_task_definition,
)
from search_spaces._worst_case import extreme_values, worst_config
from search_spaces.noise_setup import NOISE_DEFAULTS, NoiseSetup
from search_spaces.schedules import DEFAULT_GAMMA

# The paper's two noise parameters and their defaults: eta 0 is no noise, gamma the
# paper's (every noise parameter: noise_setup.NOISE_DEFAULTS).
NOISE_PARAMS = {"eta": 0.0, "gamma": DEFAULT_GAMMA}
NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
MAX_TRIALS = 100_000
MAX_REPEATS = 100
# New studies may retry a trial at most MAX_RETRIES times; specs stored before that bound
# was set may hold up to MAX_STORED_RETRIES.
MAX_RETRIES = 10
MAX_STORED_RETRIES = 100
MAX_CONSECUTIVE_FAILURES = 1000
MAX_TRIAL_TIMEOUT_S = 7 * 24 * 3600
MAX_THRESHOLDS = 16
# The validation context under which a spec read back from the database is checked: the
# bounds set after it was stored do not apply to it (see `StudySpec.from_stored`).
STORED = "stored"


def is_stored(info: ValidationInfo) -> bool:
    """Whether a validator runs on a spec read back from storage rather than a submission."""
    return bool(isinstance(info.context, dict) and info.context.get(STORED))


SamplerType = Literal["tpe", "random", "grid", "cmaes", "gp", "qmc"]
PrunerType = Literal["none", "median", "hyperband", "successive_halving"]


class SamplerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: SamplerType = "tpe"
    seed: int | None = None
    # Keyword arguments for the Optuna sampler (e.g. n_startup_trials): those of the type's
    # model in _optimizer_options, checked and typed; a stored spec's are kept as stored.
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _typed_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if is_stored(info) or "type" not in info.data:
            return options
        return validate_options("sampler", info.data["type"], options)


class PrunerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: PrunerType = "median"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _typed_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if is_stored(info) or "type" not in info.data:
            return options
        return validate_options("pruner", info.data["type"], options)


class SuccessSpec(BaseModel):
    """What counts as a successful run: its `metric` past each of `thresholds`.

    The direction is the metric's own (the task's definition): a run of a "minimize" metric
    succeeds below a threshold, one of a "maximize" metric at or above it. `metric` defaults
    to the study's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str | None = None
    thresholds: list[Annotated[float, Field(strict=True, allow_inf_nan=False)]] = Field(
        min_length=1,
        max_length=MAX_THRESHOLDS,
        description=f"1 to {MAX_THRESHOLDS} distinct finite numbers",
    )

    @field_validator("thresholds")
    @classmethod
    def _distinct(cls, thresholds: list[float]) -> list[float]:
        if len(set(thresholds)) < len(thresholds):
            raise ValueError(f"must be distinct, got {thresholds}")
        return thresholds


class WarmStartSpec(BaseModel):
    """Where a study's first trials come from: another study's finished trials that lie in
    this study's space, copied in before sampling begins (see service.warm_start)."""

    # `from` is a Python keyword: the field is `from_`, read and written as "from".
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )

    from_: str = Field(
        alias="from", pattern=NAME_PATTERN, description="the study whose trials are copied in"
    )


class StudySpec(BaseModel):
    """A study submission. `metric` and `direction` default to the task's primary metric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, _ . -; at most 64")
    task: str
    task_config: dict[str, Any] = Field(default_factory=dict)
    search_space: str | dict[str, Any] = "paper"
    n_trials: int = Field(20, ge=1, le=MAX_TRIALS)
    direction: Direction | None = None
    metric: str | None = None
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    repeats: int = Field(1, ge=1, le=MAX_REPEATS)
    max_retries: int = Field(
        2, ge=0, le=MAX_STORED_RETRIES, json_schema_extra={"maximum": MAX_RETRIES}
    )
    max_consecutive_failures: int = Field(
        3,
        ge=1,
        le=MAX_CONSECUTIVE_FAILURES,
        description="the workers stop the study as failed after this many trials in a row "
        "fail with an exception (worker.study_failures)",
    )
    trial_timeout_s: float | None = Field(
        None,
        gt=0,
        le=MAX_TRIAL_TIMEOUT_S,
        description="a trial running longer is stopped and recorded FAIL 'timeout after N s' "
        "(counted, not retried); at most 7 days",
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="trainers that checkpoint save every N epochs (unset: every epoch, at "
        "most once a minute)",
    )
    keep_checkpoints: Literal["none", "best"] = Field(
        "none", description="what is kept of finished trials' checkpoints: none, or the best's"
    )
    priority: int = 0
    success: SuccessSpec | None = Field(
        None,
        description="thresholds a run's metric must pass to count as a success; the analysis "
        "gives each group's success rate at each",
    )
    warm_start: WarmStartSpec | None = Field(
        None,
        description="copy another study's finished trials that lie in this space in before "
        "sampling (marked warm_start, not counted in n_trials); its task, metric and "
        "direction must be this study's",
    )

    @classmethod
    def from_stored(cls, raw: dict[str, Any]) -> StudySpec:
        """A spec read back from storage, checked as it was when it was stored.

        Bounds added since (the sampler and pruner option models, max_retries <= 10, the
        quadratic task's hour, the text and nesting guards) apply to new submissions only:
        a study stored before them still loads and runs, its options passed to Optuna as
        stored.
        """
        return cls.model_validate(raw, context={STORED: True})

    @model_validator(mode="before")
    @classmethod
    def _plain_input(cls, data: Any, info: ValidationInfo) -> Any:
        # A stored spec passed before these guards existed (SQLite stores an escaped lone
        # surrogate without complaint): it keeps loading, like the other new bounds.
        if not is_stored(info):
            check_raw_spec(data)
        return data

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        get_task_definition(task)  # raises TaskConfigError naming the registered tasks
        return task

    @field_validator("max_retries")
    @classmethod
    def _few_retries(cls, max_retries: int, info: ValidationInfo) -> int:
        if max_retries > MAX_RETRIES and not is_stored(info):
            raise ValueError(f"must be at most {MAX_RETRIES}, got {max_retries}")
        return max_retries

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> StudySpec:
        definition = get_task_definition(self.task)
        if self.metric is None:
            object.__setattr__(self, "metric", definition.primary_metric)
        if self.metric not in definition.metrics:
            raise ValueError(
                f"metric {self.metric!r} is not reported by task {self.task!r}; "
                f"it reports {', '.join(definition.metrics)}"
            )
        if self.direction is None:
            object.__setattr__(self, "direction", definition.metrics[str(self.metric)])
        if self.success is not None:
            _check_success(self.success, self.metric, definition)
        space = resolve_search_space(self.search_space)
        _check_space_against_task(space, definition, self.task_config)
        if self.sampler.type == "grid":
            grid_points(space)  # raises when a parameter cannot be put on a grid
        if not is_stored(info):
            _check_new_study_bounds(self, space, definition)
        # The sampler and pruner options are checked by building them once.
        build_sampler(self, trial_number=0)
        build_pruner(self)
        return self

    @property
    def definition(self) -> TaskDefinition:
        return get_task_definition(self.task)

    @property
    def space(self) -> SearchSpace:
        return resolve_search_space(self.search_space)


def _check_success(success: SuccessSpec, metric: str | None, definition: TaskDefinition) -> None:
    if success.metric is None:
        object.__setattr__(success, "metric", metric)
    if success.metric not in definition.metrics:
        raise ValueError(
            f"success.metric: {success.metric!r} is not reported by task {definition.name!r}; "
            f"it reports {', '.join(definition.metrics)}"
        )


def _check_space_against_task(
    space: SearchSpace, definition: TaskDefinition, task_config: dict[str, Any]
) -> None:
    allowed = [*NOISE_DEFAULTS, *definition.config_keys]
    for name in space.names:
        if name not in allowed:
            raise SearchSpaceError(
                f"search space parameter {name!r} is neither a noise parameter nor a config key "
                f"of task {definition.name!r}; allowed: {', '.join(allowed)}"
            )
    # Every value the space can produce must make a valid config: check the extremes.
    probes: list[dict[str, Any]] = [dict(space.fixed)]
    for name, values in extreme_values(space).items():
        probes.extend({name: v} for v in values)
    for probe in probes:
        for noise, default in NOISE_PARAMS.items():
            value = probe.get(noise, default)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise SearchSpaceError(f"{noise} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise SearchSpaceError(f"{noise} must be finite and >= 0, got {value!r}")
        check_noise_values(probe)
        config = {**task_config, **{k: v for k, v in probe.items() if k not in NOISE_DEFAULTS}}
        definition.validate_config(config)
    check_families(space)


def _check_new_study_bounds(
    spec: StudySpec, space: SearchSpace, definition: TaskDefinition
) -> None:
    """Bounds a new submission is held to, which specs stored before them may exceed."""
    if definition.name == QUADRATIC.name:

        def seconds(config: TaskConfig) -> float:
            assert isinstance(config, QuadraticConfig)
            return config.sleep_seconds

        worst = worst_config(space, definition, spec.task_config, seconds)
        assert isinstance(worst, QuadraticConfig)
        if worst.sleep_seconds > MAX_QUADRATIC_SECONDS:
            raise TaskConfigError(
                f"task_config: a quadratic trial may sleep at most {MAX_QUADRATIC_SECONDS:g} s "
                f"(1 h) in all, epochs x sleep_s; epochs={worst.epochs} and "
                f"sleep_s={worst.sleep_s:g} make {worst.sleep_seconds:g} s"
            )
    x0 = spec.sampler.options.get("x0") if spec.sampler.type == "cmaes" else None
    if x0 is not None:
        _check_x0(x0, space)


def _check_x0(x0: dict[str, float], space: SearchSpace) -> None:
    # CMA-ES starts from x0 in the space of its float and int parameters (those of more than
    # one value), all of which it needs save conditional ones; a name it does not search or
    # a value outside the range would fail in a worker, not here.
    ranged = {n: p for n, p in space.sampled.items() if not isinstance(p, CategoricalParam)}
    where = "sampler.options.x0"
    unknown = sorted(set(x0) - set(ranged))
    if unknown:
        raise ValueError(
            f"{where}: the search space has no float or int parameter named "
            f"{', '.join(map(repr, unknown))} (it has: {', '.join(ranged) or 'none'})"
        )
    # Its search space is what every trial shares: conditional parameters are drawn apart.
    shared = [n for n in ranged if n not in space.conditional]
    missing = [n for n in shared if n not in x0 and ranged[n].low < ranged[n].high]
    if missing:
        raise ValueError(f"{where}: needs a start value for {', '.join(map(repr, missing))}")
    for name, value in x0.items():
        p = ranged[name]
        if not p.low <= value <= p.high:
            raise ValueError(
                f"{where}.{name}: {value:g} is outside the parameter's range "
                f"[{p.low:g}, {p.high:g}]"
            )


@dataclass(frozen=True)
class TrialSetup:
    """What one trial trains: the noise (eta and gamma, and the whole ``noise`` setup)
    and the task config, all resolved."""

    eta: float
    gamma: float
    config: dict[str, Any]
    noise: NoiseSetup = field(default_factory=lambda: NoiseSetup(0.0))


def layered(
    task_config: dict[str, Any],
    fixed: dict[str, Any],
    params: dict[str, Any],
    task_defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one order in which a trial's values override each other: task defaults <- noise
    defaults (NOISE_DEFAULTS) <- task_config <- the space's fixed values <- sampled params."""
    return {**(task_defaults or {}), **NOISE_DEFAULTS, **task_config, **fixed, **params}


def resolve_trial(spec: StudySpec, params: dict[str, Any]) -> TrialSetup:
    """What a trial trains with, its values layered as `layered` says."""
    merged = layered(spec.task_config, spec.space.fixed, params)
    noise = NoiseSetup.from_values(merged)
    config = {k: v for k, v in merged.items() if k not in NOISE_DEFAULTS}
    config = spec.definition.validate_config(config).model_dump()
    return TrialSetup(eta=noise.eta, gamma=noise.gamma, config=config, noise=noise)
