"""Task definitions: what a trial trains, described as plain data.

A definition names the task, validates its config, and says which metrics it reports and in
which direction each is better. It never imports training code: `trainer` is the
"module:function" a worker loads to train it. Third-party tasks register a definition
through the entry-point group ``noisetune.tasks``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from search_spaces._resources import ResourceEstimate, binary_arith_resources, deep_mlp_resources

ENTRY_POINT_GROUP = "noisetune.tasks"
MAX_EPOCHS = 10_000
# A new quadratic study may sleep at most this long per trial (epochs x sleep_s).
MAX_QUADRATIC_SECONDS = 3600.0

Direction = Literal["minimize", "maximize"]


class TaskConfigError(ValueError):
    """A task config that does not validate; the message names the keys at fault."""


class TaskConfig(BaseModel):
    """Base of every task's config: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeepMLPConfig(TaskConfig):
    """The paper's deep fully-connected network (defaults: 20 x 50 ReLU, simple init, SGD)."""

    dataset: Literal["digits", "mnist"] = "digits"
    data_dir: str | None = None
    depth: int = Field(20, ge=1, le=200)
    width: int = Field(50, ge=1, le=4096)
    activation: Literal["relu", "tanh", "sigmoid", "gelu"] = "relu"
    init: Literal["simple", "good", "zero"] = "simple"
    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    lr: float = Field(0.03, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(128, ge=1, le=65536)
    epochs: int = Field(150, ge=1, le=MAX_EPOCHS)
    clip: float | None = Field(None, gt=0)
    val_fraction: float = Field(0.22, gt=0, lt=1)
    seed: int = 0


class QuadraticConfig(TaskConfig):
    """A cheap stand-in for training: a smooth objective of eta and gamma, no model."""

    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    sleep_s: float = Field(0.0, ge=0, le=60)
    # Runs with eta at or above this report a NaN loss, like a diverged training run.
    diverge_eta: float | None = Field(None, gt=0)
    # Runs with one of these seeds diverge too (a study's per-seed records, tried cheaply).
    diverge_seeds: tuple[int, ...] = Field((), max_length=64)
    seed: int = 0

    @property
    def sleep_seconds(self) -> float:
        """How long one trial sleeps in all."""
        return self.epochs * self.sleep_s


class BinaryArithConfig(TaskConfig):
    """Binary addition (or multiplication) by a small Neural-GPU-style convolutional GRU,
    trained on ``train_bits``-bit numbers and tested on ``test_bits``-bit ones.

    An epoch is ``steps_per_epoch`` optimizer steps on fresh random examples; the test set
    (``test_size`` examples) is drawn once from the seed. ``test_error`` is the fraction of
    wrong answer bits on it, the paper's criterion for a successful restart.
    """

    operation: Literal["addition", "multiplication"] = "addition"
    train_bits: int = Field(8, ge=1, le=64)
    test_bits: int = Field(16, ge=1, le=256)
    # The grid: rows, and numbers per position.
    width: int = Field(1, ge=1, le=16)
    channels: int = Field(8, ge=1, le=512)
    optimizer: Literal["sgd", "momentum", "adam"] = "adam"
    lr: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    batch_size: int = Field(16, ge=1, le=4096)
    steps_per_epoch: int = Field(75, ge=1, le=100_000)
    epochs: int = Field(8, ge=1, le=MAX_EPOCHS)
    clip: float | None = Field(10.0, gt=0)
    # What the gradient is of: the mean loss per answer bit, or the sum over the batch's
    # answer bits (batch_size x length times larger). Adam's steps do not depend on it, but
    # clipping and the noise do: it sets how large the gradient is next to a given eta.
    loss: Literal["mean", "sum"] = "sum"
    test_size: int = Field(128, ge=1, le=65536)
    seed: int = 0

    def length(self, bits: int) -> int:
        """Cells of an example with operands of ``bits`` bits: one per bit the answer can
        need (a sum one more than the operands, a product twice as many)."""
        return bits + 1 if self.operation == "addition" else 2 * bits

    @property
    def loss_scale(self) -> float:
        """What the mean loss per answer bit is multiplied by before backward."""
        return 1.0 if self.loss == "mean" else float(self.batch_size * self.length(self.train_bits))

    @model_validator(mode="after")
    def _test_not_shorter(self) -> BinaryArithConfig:
        if self.test_bits < self.train_bits:
            raise ValueError(
                f"test_bits ({self.test_bits}) must be at least train_bits ({self.train_bits}): "
                "the task tests on numbers as long as or longer than it trained on"
            )
        return self


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    config_model: type[TaskConfig]
    metrics: dict[str, Direction]
    primary_metric: str
    trainer: str
    description: str = ""
    # Whether many trials of this task can be trained as one stacked model.
    stackable: bool = False
    # "module:function" of the stacked trainer (worker.stacked's contract); its module also
    # defines stack_key(config). Needed for stackable to take effect.
    stacked_trainer: str | None = None
    # "module:function" a worker calls once, before claiming the task's first trial: its
    # one-time costs (imports that take seconds) then stay out of trial times.
    warm_up: str | None = None
    # Memory and time one trial of a config needs; None when the task does not say.
    resources: Callable[[TaskConfig], ResourceEstimate] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary metric {self.primary_metric!r} is not in {self.metrics}")

    @property
    def direction(self) -> Direction:
        return self.metrics[self.primary_metric]

    @property
    def config_keys(self) -> list[str]:
        return list(self.config_model.model_fields)

    def validate_config(self, config: dict[str, Any]) -> TaskConfig:
        """Validate a config mapping; `TaskConfigError` names every bad or unknown key."""
        if not isinstance(config, dict):
            raise TaskConfigError(f"task_config must be a mapping, got {type(config).__name__}")
        try:
            return self.config_model.model_validate(config)
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                key = ".".join(str(x) for x in e["loc"])
                if e["type"] == "extra_forbidden":
                    problems.append(
                        f"unknown key {key!r} (task {self.name!r} accepts: "
                        f"{', '.join(self.config_keys)})"
                    )
                else:
                    problems.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
            raise TaskConfigError(f"task {self.name!r}: " + "; ".join(problems)) from None

    def default_config(self) -> dict[str, Any]:
        return self.config_model().model_dump()


DEEP_MLP = TaskDefinition(
    name="deep_mlp",
    config_model=DeepMLPConfig,
    metrics={
        "val_accuracy": "maximize",
        "val_loss": "minimize",
        "train_loss": "minimize",
        "train_accuracy": "maximize",
    },
    primary_metric="val_accuracy",
    trainer="worker.tasks.deep_mlp:train",
    description="The paper's deep fully-connected network on digits or MNIST.",
    stackable=True,
    stacked_trainer="worker.tasks.deep_mlp_stacked:train_stacked",
    warm_up="worker.tasks.deep_mlp:warm_up",
    resources=deep_mlp_resources,
)

QUADRATIC = TaskDefinition(
    name="quadratic",
    config_model=QuadraticConfig,
    metrics={"loss": "minimize"},
    primary_metric="loss",
    trainer="worker.tasks.quadratic:train",
    description="A cheap objective of eta and gamma for tests and demos; trains nothing.",
)

BINARY_ARITH = TaskDefinition(
    name="binary_arith",
    config_model=BinaryArithConfig,
    metrics={
        "test_error": "minimize",
        "test_sequence_error": "minimize",
        "train_error": "minimize",
        "train_loss": "minimize",
    },
    primary_metric="test_error",
    trainer="worker.tasks.binary_arith:train",
    description="The paper's restart experiment: binary arithmetic learned by a small Neural "
    "GPU on short numbers, tested on longer ones.",
    stackable=True,
    stacked_trainer="worker.tasks.binary_arith_stacked:train_stacked",
    resources=binary_arith_resources,
)

_BUILTIN = {t.name: t for t in (DEEP_MLP, QUADRATIC, BINARY_ARITH)}


def task_definitions() -> dict[str, TaskDefinition]:
    """Built-in definitions plus those registered under the ``noisetune.tasks`` group."""
    return dict(_registered())


@functools.cache
def _registered() -> dict[str, TaskDefinition]:
    # Scanning installed packages' entry points costs milliseconds, and a claim validates a
    # spec several times: read them once per process (installing a task means a restart).
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue
        definition = ep.load()
        if not isinstance(definition, TaskDefinition):
            raise TypeError(f"entry point {ep.value!r} must be a TaskDefinition")
        found[ep.name] = definition
    return found


def get_task_definition(name: str) -> TaskDefinition:
    definitions = task_definitions()
    if name not in definitions:
        raise TaskConfigError(
            f"unknown task {name!r}; registered tasks are {', '.join(sorted(definitions))}"
        )
    return definitions[name]
