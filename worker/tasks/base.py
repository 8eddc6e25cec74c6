"""What every trainer shares: the signature, argument checks and the result's shape.

Kept free of torch so that the worker's CLI and the quadratic task import without it.

The trainer contract (each task module's ``train``)::

    train(config, *, eta, gamma, device="cpu", report=None, progress=False) -> dict

- ``config`` is the task's config mapping; ``train`` validates it with the task's
  definition and raises ``TaskConfigError`` naming the bad keys.
- ``config["seed"]`` seeds everything the run draws at random.
- ``report(epoch, metrics)`` is called after every epoch (epochs count from 1) with all
  of the task's metrics and ``steps``, the optimizer steps taken so far (plots draw noise
  schedules from it); whatever it raises propagates unchanged (pruning, shutdown). Torch
  tasks add diagnostics: ``noise_grad_ratio`` (the norm of the noise added over the norm
  of the gradient it joined, for the whole model, averaged over the epoch's sampled
  steps) and ``noise_grad_ratio_layers`` (the same per layer, a list from input to
  output); they land in the trial's curve, not in its final metrics.
- A trainer may also take ``noise`` (a ``search_spaces.NoiseSetup``: schedule family,
  its parameters, window, placement and scale; ``noise.make_schedule()`` gives sigma_t^2).
  Only trainers that take it may serve studies whose noise is not the paper's (polynomial,
  every step, after clipping, absolute); ``eta`` and ``gamma`` are passed all the same.
  ``placement`` says on which side of gradient clipping the noise goes, so a trainer that
  takes ``noise`` and clips must apply its clipping where the noise is added: passing its
  threshold to ``GradientNoise(max_grad_norm=..., placement=noise.placement)`` does it.
- A trainer may also take ``checkpoint`` (a ``Checkpoint``): it then resumes from
  ``checkpoint.load()`` when that gives a state, and calls ``checkpoint.save(state)`` at
  every epoch end, after the epoch's report. Only trainers that take it are given one.
- The result holds every metric of the definition plus ``steps`` (optimizer steps),
  ``epochs`` (epochs completed) and ``diverged``. A non-finite loss ends the run early
  with ``diverged: True``; the losses of that epoch are then ``float("nan")``, which
  JSON writers must turn into ``null`` (``json.dumps(..., allow_nan=False)`` would refuse).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any, Protocol

from search_spaces import NoiseSetup, TaskConfig, TaskDefinition

Report = Callable[[int, dict[str, Any]], None]


class Checkpoint(Protocol):
    """What a trainer that takes ``checkpoint`` saves through and resumes from."""

    def load(self) -> dict[str, Any] | None:
        """The state last saved (None: start from scratch)."""

    def save(self, state: dict[str, Any] | Callable[[], dict[str, Any]]) -> None:
        """Called at every epoch end, after its report, with tensors and plain values (or a
        function returning them, called only when a save is due); the worker decides when
        to write (and may raise to stop the trainer after writing)."""


class Trainer(Protocol):
    def __call__(
        self,
        config: dict[str, Any],
        *,
        eta: float,
        gamma: float,
        device: str = "cpu",
        report: Report | None = None,
        progress: bool = False,
    ) -> dict[str, Any]: ...


def takes_keyword(trainer: Any, name: str) -> bool:
    """Whether a trainer accepts an optional keyword of the contract (``noise``, ...)."""
    try:
        return name in inspect.signature(trainer).parameters
    except (TypeError, ValueError):
        return False


def noise_keyword(trainer: Any, task: str, noise: NoiseSetup) -> dict[str, Any]:
    """The ``noise`` keyword for a trainer that takes it; a trainer that does not trains only
    the paper's noise, and any other is refused (``ValueError``)."""
    if takes_keyword(trainer, "noise"):
        return {"noise": noise}
    if not noise.is_paper:
        raise ValueError(
            f"task {task!r} trains only the paper's noise (its trainer takes no noise keyword); "
            f"this asks for {noise.as_params()}"
        )
    return {}


def check_noise(eta: float, gamma: float) -> tuple[float, float]:
    """Validate the two noise hyperparameters; ``ValueError`` names the bad one."""
    checked: list[float] = []
    for name, value in (("eta", eta), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        checked.append(value)
    return checked[0], checked[1]


def validate(definition: TaskDefinition, config: dict[str, Any]) -> TaskConfig:
    """The task's validated config (``TaskConfigError`` names any bad key)."""
    return definition.validate_config(dict(config))


def final_result(
    metrics: dict[str, float], *, steps: int, epochs: int, diverged: bool
) -> dict[str, Any]:
    return {**metrics, "steps": steps, "epochs": epochs, "diverged": diverged}


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; anything else as given."""
    import torch  # only the torch tasks call this

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise ValueError(f"device {device!r} is not available ({count} CUDA devices visible)")
    return device


def json_safe(value: Any) -> Any:
    """NaN and infinities become null, so metrics are strict JSON wherever they go."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
