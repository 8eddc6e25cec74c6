"""Training code for the registered tasks, loaded by name only.

A worker turns a task name (or its registered ``TaskDefinition``) into the ``train``
function named by the definition's ``trainer`` string. The string comes from the
registry (built-in definitions or the ``noisetune.tasks`` entry points), never from a
request, so a study can only ever run code that was installed as a task.
"""

from __future__ import annotations

import importlib

from search_spaces import TaskConfigError, TaskDefinition, get_task_definition
from worker.tasks.base import Report, Trainer

__all__ = ["Report", "Trainer", "TrainerImportError", "load_trainer"]


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
