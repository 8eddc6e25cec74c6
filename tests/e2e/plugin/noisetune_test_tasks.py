"""Task definitions registered only in end-to-end tests, as a third-party package would."""

from __future__ import annotations

from search_spaces import QuadraticConfig, TaskDefinition

# Its trainer's module needs a package that is not installed: importing it raises.
BROKEN_IMPORT = TaskDefinition(
    name="broken_import",
    config_model=QuadraticConfig,
    metrics={"loss": "minimize"},
    primary_metric="loss",
    trainer="noisetune_test_broken_trainer:train",
    description="A test task whose trainer cannot be imported.",
)

# Prints, logs and reports an epoch, then raises: what a user's crashing trainer does.
PRINTS_THEN_RAISES = TaskDefinition(
    name="prints_then_raises",
    config_model=QuadraticConfig,
    metrics={"loss": "minimize"},
    primary_metric="loss",
    trainer="noisetune_test_trainers:prints_then_raises",
    description="A test task whose trainer prints and logs, then raises.",
)

# Never reports: the worker's watchdog has to stop it.
SPINS = TaskDefinition(
    name="spins",
    config_model=QuadraticConfig,
    metrics={"loss": "minimize"},
    primary_metric="loss",
    trainer="noisetune_test_trainers:spins",
    description="A test task whose trainer loops without reporting.",
)
