"""Task definitions registered only in end-to-end tests, as a third-party package would."""

from __future__ import annotations

from search_spaces import QuadraticConfig, TaskDefinition


def _task(name: str, trainer: str, description: str) -> TaskDefinition:
    """A test task with the quadratic task's config and metric, trained by `trainer`."""
    return TaskDefinition(
        name=name,
        config_model=QuadraticConfig,
        metrics={"loss": "minimize"},
        primary_metric="loss",
        trainer=trainer,
        description=description,
    )


# Its trainer's module needs a package that is not installed: importing it raises.
BROKEN_IMPORT = _task(
    "broken_import",
    "noisetune_test_broken_trainer:train",
    "A test task whose trainer cannot be imported.",
)
# Prints, logs and reports an epoch, then raises: what a user's crashing trainer does.
PRINTS_THEN_RAISES = _task(
    "prints_then_raises",
    "noisetune_test_trainers:prints_then_raises",
    "A test task whose trainer prints and logs, then raises.",
)
# Never reports: the worker's watchdog has to stop it.
SPINS = _task(
    "spins", "noisetune_test_trainers:spins", "A test task whose trainer loops without reporting."
)
