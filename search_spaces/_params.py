"""The search-space schema: parameter name -> fixed value or a distribution spec.

A space is plain data (JSON or YAML). Each entry is either a bare value, which fixes the
parameter, or one of::

    {"type": "float", "low": .., "high": .., "log": false, "step": null}
    {"type": "int", "low": .., "high": .., "log": false, "step": 1}
    {"type": "categorical", "choices": [..]}

Any of them may add ``"when": {parent: [values]}``: the parameter is then drawn only while
each named parent (a categorical parameter or a fixed value) takes one of the listed values,
and a trial lacks it otherwise; the rules are in `search_spaces._conditions`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import optuna.distributions as od
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from search_spaces._conditions import ConditionError, holds, suggestion_order

# Bounds that keep one study's space small enough to store, sample and draw.
MAX_PARAMETERS = 64
MAX_CHOICES = 256

Scalar = bool | int | float | str | None


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Active only while every named parent takes one of its listed values (None: always).
    when: dict[str, list[Scalar]] | None = None

    @field_validator("when")
    @classmethod
    def _some_conditions(
        cls, when: dict[str, list[Scalar]] | None
    ) -> dict[str, list[Scalar]] | None:
        if when is None:
            return None
        if not when:
            raise ValueError("must name at least one parent parameter, or be left out")
        for parent, values in when.items():
            if not values:
                raise ValueError(f"{parent}: must list at least one value of {parent!r}")
            if len(values) > MAX_CHOICES:
                raise ValueError(f"{parent}: at most {MAX_CHOICES} values, got {len(values)}")
        return when

    def active(self, values: dict[str, Any]) -> bool:
        """Whether this parameter is drawn, given the values of the parameters drawn before."""
        return holds(self.when, values)


class FloatParam(_Param):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low and high must be finite, got low={self.low}, high={self.high}")
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got low={self.low}")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError(f"step must be > 0 and cannot be combined with log, got {self.step}")
        return self

    def to_optuna(self) -> od.BaseDistribution:
        return od.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(_Param):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low must be <= high, got low={self.low}, high={self.high}")
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log-scale int range needs low >= 1 and step 1")
        return self

    def to_optuna(self) -> od.BaseDistribution:
        return od.IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Param):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1, max_length=MAX_CHOICES)

    def to_optuna(self) -> od.BaseDistribution:
        return od.CategoricalDistribution(self.choices)


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
_PARAM = TypeAdapter(ParamSpec)


class SearchSpaceError(ValueError):
    """A search space that is not valid; the message names the parameter and the problem."""


class SearchSpace(BaseModel):
    """A parsed space: sampled parameters and fixed ones, both keyed by parameter name.

    `sampled` is in suggestion order: each parameter after the parents its `when` names.
    """

    model_config = ConfigDict(frozen=True)

    sampled: dict[str, FloatParam | IntParam | CategoricalParam] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)

    @property
    def conditional(self) -> list[str]:
        """Sampled parameters that some trials lack: those conditional on a sampled parent.

        A condition on fixed values only always holds (the schema rejects one that never does).
        """
        return [
            name
            for name, p in self.sampled.items()
            if p.when and any(parent in self.sampled for parent in p.when)
        ]

    @property
    def names(self) -> list[str]:
        return [*self.sampled, *self.fixed]

    def distributions(self) -> dict[str, od.BaseDistribution]:
        """The Optuna distributions of the sampled parameters."""
        return {name: p.to_optuna() for name, p in self.sampled.items()}

    def to_json(self) -> dict[str, Any]:
        """The space back in the schema's own form (what a user would write)."""
        out: dict[str, Any] = {n: p.model_dump(exclude_none=True) for n, p in self.sampled.items()}
        out.update(self.fixed)
        return out


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        # Drop the discriminator tag ("float", "int", ...) that pydantic puts in the location.
        loc = ".".join(str(x) for x in e["loc"][1:] if e["loc"]) if len(e["loc"]) > 1 else ""
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_search_space(raw: Any) -> SearchSpace:
    """Parse a mapping in the schema above; raise `SearchSpaceError` naming what is wrong."""
    if isinstance(raw, SearchSpace):
        return raw
    if not isinstance(raw, dict):
        raise SearchSpaceError(
            f"a search space must be a mapping of parameter name to value or spec, "
            f"got {type(raw).__name__}"
        )
    if len(raw) > MAX_PARAMETERS:
        raise SearchSpaceError(f"at most {MAX_PARAMETERS} parameters, got {len(raw)}")
    sampled: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SearchSpaceError(f"parameter name {name!r} must be an identifier")
        if isinstance(value, dict):
            kind = value.get("type")
            if kind not in ("float", "int", "categorical"):
                raise SearchSpaceError(
                    f"parameter {name!r}: type must be one of 'float', 'int', 'categorical', "
                    f"got {kind!r}"
                )
            try:
                sampled[name] = _PARAM.validate_python(value)
            except ValidationError as exc:
                raise SearchSpaceError(f"parameter {name!r}: {_describe(exc)}") from None
        elif isinstance(value, list):
            raise SearchSpaceError(
                f"parameter {name!r}: a list is ambiguous; write "
                f'{{"type": "categorical", "choices": {value!r}}} to search over it'
            )
        elif value is None or isinstance(value, bool | int | float | str):
            fixed[name] = value
        else:
            raise SearchSpaceError(f"parameter {name!r}: unsupported value {value!r}")
    choices: dict[str, list[Any] | None] = {name: [value] for name, value in fixed.items()}
    for name, p in sampled.items():
        choices[name] = list(p.choices) if isinstance(p, CategoricalParam) else None
    try:
        order = suggestion_order({n: p.when for n, p in sampled.items()}, choices, fixed)
    except ConditionError as exc:
        raise SearchSpaceError(str(exc)) from None
    return SearchSpace(sampled={name: sampled[name] for name in order}, fixed=fixed)


def grid_of(space: SearchSpace) -> dict[str, list[Any]]:
    """The product grid Optuna's grid sampler walks: each parameter's values. A space with
    conditional parameters is walked point by point instead (``_grid.grid_points``)."""
    from search_spaces._grid import grid_values

    return {name: grid_values(name, p) for name, p in space.sampled.items()}
