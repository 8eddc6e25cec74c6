"""The sampler and pruner options a new study may set: typed, bounded, plain JSON values.

Each sampler and pruner type has a model of the keyword arguments it passes to Optuna.
Options that take functions or objects (``gamma``, ``weights``, ``constraints_func``,
``independent_sampler`` ...) are left out: a spec is data and never names code. Bounds keep
a submission from asking a worker for unbounded memory or time (``n_ei_candidates`` of 10^9,
a ``popsize`` of 10^9). Types are strict: ``"5"`` is not an integer and ``true`` is not 1.

Specs stored before these models existed are not held to them (see `StudySpec.from_stored`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_STARTUP_TRIALS = 10_000
MAX_STEPS = 100_000
MAX_X0_ENTRIES = 64


def _int_in(low: int, high: int) -> Any:
    return Field(ge=low, le=high, description=f"an integer in {low}..{high}")


StartupTrials = Annotated[int, _int_in(0, MAX_STARTUP_TRIALS)]
Steps = Annotated[int, _int_in(0, MAX_STEPS)]
Resource = Annotated[int, _int_in(1, MAX_STEPS)]
ReductionFactor = Annotated[int, _int_in(2, 100)]
BootstrapCount = Annotated[int, _int_in(0, 1000)]
Flag = Annotated[bool, Field(description="true or false")]


class _Options(BaseModel):
    """Defaults document Optuna's; an option left out is not passed, so Optuna's own apply."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class NoOptions(_Options):
    """Random and grid samplers, and the ``none`` pruner: nothing to set (the seed is apart)."""


class TPEOptions(_Options):
    n_startup_trials: StartupTrials = 10
    n_ei_candidates: Annotated[int, _int_in(1, 10_000)] = 24
    multivariate: Flag | None = None
    group: Flag = False
    constant_liar: Flag = True
    consider_endpoints: Flag | None = None
    consider_magic_clip: Flag | None = None
    prior_weight: Annotated[float, Field(gt=0, le=1e6, description="a number in (0, 1e6]")] = 1.0
    warn_independent_sampling: Flag | None = None

    @model_validator(mode="after")
    def _group_needs_multivariate(self) -> TPEOptions:
        if self.group and self.multivariate is False:
            raise ValueError("group: true needs multivariate to be true (or left out)")
        return self


X0 = Annotated[
    dict[str, float],
    Field(
        max_length=MAX_X0_ENTRIES,
        description=f"a mapping of parameter name to a finite number ({MAX_X0_ENTRIES} at most)",
    ),
]


class CmaEsOptions(_Options):
    x0: X0 | None = None
    sigma0: Annotated[float, Field(gt=0, le=1e12, description="a number in (0, 1e12]")] | None = (
        None
    )
    n_startup_trials: StartupTrials = 1
    consider_pruned_trials: Flag = False
    # Optuna 5 accepts these two with a deprecation warning and no longer acts on them.
    restart_strategy: Annotated[
        Literal["ipop", "bipop"] | None, Field(description="'ipop', 'bipop' or null")
    ] = None
    inc_popsize: Annotated[int, _int_in(1, 100)] | None = None
    # The cmaes package fails on a population of one; 10,000 keeps its arrays small.
    popsize: Annotated[int, _int_in(2, 10_000)] | None = None
    use_separable_cma: Flag = False
    with_margin: Flag = False
    lr_adapt: Flag = False
    warn_independent_sampling: Flag = True

    @model_validator(mode="after")
    def _compatible(self) -> CmaEsOptions:
        if self.lr_adapt and (self.use_separable_cma or self.with_margin):
            raise ValueError("lr_adapt cannot be combined with use_separable_cma or with_margin")
        if self.use_separable_cma and self.with_margin:
            raise ValueError("use_separable_cma cannot be combined with with_margin")
        return self


class GPOptions(_Options):
    n_startup_trials: StartupTrials = 10
    deterministic_objective: Flag = False
    warn_independent_sampling: Flag = True


class QMCOptions(_Options):
    qmc_type: Annotated[Literal["sobol", "halton"], Field(description="'sobol' or 'halton'")] = (
        "sobol"
    )
    scramble: Flag = False
    warn_independent_sampling: Flag = True
    warn_asynchronous_seeding: Flag = True


class MedianOptions(_Options):
    n_startup_trials: StartupTrials = 5
    n_warmup_steps: Steps = 2
    interval_steps: Resource = 1
    n_min_trials: Annotated[int, _int_in(1, MAX_STARTUP_TRIALS)] = 1


class HyperbandOptions(_Options):
    # Optuna's Hyperband divides by min_resource: it takes an integer only, never "auto".
    min_resource: Resource = 1
    max_resource: Annotated[
        Literal["auto"] | Resource, Field(description=f"'auto' or an integer in 1..{MAX_STEPS}")
    ] = "auto"
    reduction_factor: ReductionFactor = 3
    bootstrap_count: BootstrapCount = 0

    @model_validator(mode="after")
    def _compatible(self) -> HyperbandOptions:
        if isinstance(self.max_resource, int) and self.min_resource > self.max_resource:
            raise ValueError(
                f"min_resource ({self.min_resource}) must be <= max_resource ({self.max_resource})"
            )
        if self.bootstrap_count > 0 and self.max_resource == "auto":
            raise ValueError("bootstrap_count > 0 needs an integer max_resource, not 'auto'")
        return self


class SuccessiveHalvingOptions(_Options):
    min_resource: Annotated[
        Literal["auto"] | Resource, Field(description=f"'auto' or an integer in 1..{MAX_STEPS}")
    ] = "auto"
    reduction_factor: ReductionFactor = 4
    min_early_stopping_rate: Annotated[int, _int_in(0, 100)] = 0
    bootstrap_count: BootstrapCount = 0

    @model_validator(mode="after")
    def _compatible(self) -> SuccessiveHalvingOptions:
        if self.bootstrap_count > 0 and self.min_resource == "auto":
            raise ValueError("bootstrap_count > 0 needs an integer min_resource, not 'auto'")
        return self


SAMPLER_OPTIONS: dict[str, type[_Options]] = {
    "tpe": TPEOptions,
    "random": NoOptions,
    "grid": NoOptions,
    "cmaes": CmaEsOptions,
    "gp": GPOptions,
    "qmc": QMCOptions,
}
PRUNER_OPTIONS: dict[str, type[_Options]] = {
    "none": NoOptions,
    "median": MedianOptions,
    "hyperband": HyperbandOptions,
    "successive_halving": SuccessiveHalvingOptions,
}


def allowed_options(kind: Literal["sampler", "pruner"], type_: str) -> list[str]:
    """The option names a `kind` ("sampler" or "pruner") of type `type_` accepts."""
    table = SAMPLER_OPTIONS if kind == "sampler" else PRUNER_OPTIONS
    return list(table[type_].model_fields)


def validate_options(
    kind: Literal["sampler", "pruner"], type_: str, options: dict[str, Any]
) -> dict[str, Any]:
    """`options` checked against the model of `type_`: the options as given, typed.

    Raises a `ValidationError` located at each bad option (``options.<name>``) whose message
    names the option and what it allows. Only options that were given come back, so Optuna
    keeps its own defaults for the rest.
    """
    table = SAMPLER_OPTIONS if kind == "sampler" else PRUNER_OPTIONS
    model = table[type_]
    try:
        return model.model_validate(options).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise _readable(exc, kind, type_, model) from None


def _readable(
    exc: ValidationError, kind: str, type_: str, model: type[_Options]
) -> ValidationError:
    allowed = ", ".join(model.model_fields) or "none"
    by_option: dict[str, list[Any]] = {}
    for e in exc.errors():
        by_option.setdefault(str(e["loc"][0]) if e["loc"] else "", []).append(e)
    details: list[InitErrorDetails] = []
    for name, errors in by_option.items():
        where = f"{kind}.options.{name}" if name else f"{kind}.options"
        field = model.model_fields.get(name)
        hint = _describe(field) if field else None
        if errors[0]["type"] == "extra_forbidden":
            msg = f"{where}: unknown option for {kind} {type_!r} (allowed: {allowed})"
        else:
            # A value that fits no member of a union (e.g. 'auto' or an integer) fails each
            # member; what is allowed then says more than every member's complaint.
            text = errors[0]["msg"] if len(errors) == 1 else "not an allowed value"
            text = text.removeprefix("Value error, ")
            msg = f"{where}: {text}" + (f" (allowed: {hint})" if hint else "")
        details.append(
            {
                "type": PydanticCustomError("invalid_option", msg),
                "loc": (name,) if name else (),
                "input": errors[0].get("input"),
            }
        )
    return ValidationError.from_exception_data(model.__name__, details)


def _describe(field: FieldInfo) -> str | None:
    """What a field allows, from the description of its type (in a union: "... or null")."""
    if field.description:
        return field.description
    args = getattr(field.annotation, "__args__", ())
    for arg in args:
        for item in getattr(arg, "__metadata__", ()):
            if getattr(item, "description", None):
                return str(item.description) + (" or null" if type(None) in args else "")
    return None
