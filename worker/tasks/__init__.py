"""Training code for the registered tasks, loaded by name only.

A worker turns a task name (or its registered ``TaskDefinition``) into the ``train``
function named by the definition's ``trainer`` string. The string comes from the
registry (built-in definitions or the ``noisetune.tasks`` entry points), never from a
request, so a study can only ever run code that was installed as a task.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time

from search_spaces import TaskConfigError, TaskDefinition, get_task_definition
from worker.tasks.base import Report, Trainer

__all__ = ["Report", "Trainer", "TrainerImportError", "load_trainer", "warm_up"]

log = logging.getLogger(__name__)


class TrainerImportError(ImportError):
    """The trainer a registered task names cannot be imported."""


def load_trainer(task: str | TaskDefinition) -> Trainer:
    """The ``train`` function of a registered task, given its name or definition.

    Raises ``TaskConfigError`` for a name (or definition) that is not registered and
    ``TrainerImportError`` when the trainer's module or function cannot be loaded.
    """
    if isinstance(task, TaskDefinition):
        definition = get_task_definition(task.name)
        if definition != task:
            raise TaskConfigError(
                f"task definition {task.name!r} is not the registered one; "
                "only registered tasks can be trained"
            )
    elif isinstance(task, str):
        definition = get_task_definition(task)
    else:
        raise TypeError(f"task must be a name or a TaskDefinition, got {type(task).__name__}")

    module_name, sep, attr = definition.trainer.partition(":")
    if not sep or not module_name or not attr:
        raise TrainerImportError(
            f"task {definition.name!r}: trainer {definition.trainer!r} is not 'module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TrainerImportError(
            f"task {definition.name!r}: cannot import trainer module {module_name!r}: {exc}"
        ) from exc
    trainer = getattr(module, attr, None)
    if not callable(trainer):
        raise TrainerImportError(
            f"task {definition.name!r}: module {module_name!r} has no callable {attr!r}"
        )
    return trainer  # type: ignore[no-any-return]


@functools.cache
def _warm(name: str, target: str) -> None:
    module_name, _, attr = target.partition(":")
    try:
        getattr(importlib.import_module(module_name), attr)()
    except Exception as exc:  # the trainer's own loading reports real problems
        log.warning("task %s: warm-up %r failed: %s", name, target, exc)


def warm_up(definition: TaskDefinition) -> float:
    """Run the task's ``warm_up`` once per process; the seconds it took (0 once warm)."""
    if definition.warm_up is None:
        return 0.0
    started = time.perf_counter()
    _warm(definition.name, definition.warm_up)
    return time.perf_counter() - started
