"""A deep_mlp stack member's checkpoint: what it saves, and how a stack resumes from them.

A member's checkpoint holds its own rows of the stack (weights, optimizer state, noise step
and generator), its data order's generator, its metrics, and what it shares with its
stack: the epoch and the optimizer's step count. Its ``stack`` entry, ``{"epoch", "data":
"own"}``, is what members must share to resume in one stack (the worker groups retries by
it). Each member's split comes from its seed again, so members resume in any stack.

Checkpoints of earlier versions name a ``data_seed`` instead (the whole stack then trained on
the first member's split and order); they resume among themselves, each member with the
order it saved and its own split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from worker.stacked import StackedOptimizer
from worker.stacked_noise import StackedGradientNoise

__all__ = ["ResumePoint", "member_checkpoint", "restore_members", "resume_point"]


@dataclass(frozen=True)
class ResumePoint:
    """Where a stack starts: from scratch (epoch 0) or from its members' checkpoints."""

    epoch: int = 0
    steps: int = 0
    states: list[dict[str, Any]] = field(default_factory=list)


def resume_point(saved: list[dict[str, Any] | None]) -> ResumePoint:
    """The stack's start from what each member's checkpoint gave (None: none saved).

    Members start fresh together, or all resume from one epoch.
    """
    if all(s is None for s in saved):
        return ResumePoint()
    marks = {_mark(s) for s in saved}
    if len(marks) > 1:
        raise ValueError(
            "members of a stack must all start fresh or all resume from one epoch, "
            f"got {sorted(marks, key=str)}"
        )
    states = [s for s in saved if s is not None]
    first = states[0]
    return ResumePoint(
        epoch=int(first["epoch"]),
        steps=int(first["steps"]),
        states=states,
    )


def _mark(state: dict[str, Any] | None) -> tuple[Any, ...]:
    if state is None:
        return ("fresh",)
    if "stack" not in state:
        raise ValueError("checkpoint is not a stack member's (a lone run resumes alone)")
    return (int(state["stack"]["epoch"]), str(state["stack"].get("data_seed", "own")))


def restore_members(
    start: ResumePoint,
    params: list[torch.Tensor],
    optimizer: StackedOptimizer,
    noise: StackedGradientNoise,
    order_gens: list[torch.Generator],
) -> None:
    """Put each member's saved rows in its row (member i in row i), and its data order."""
    with torch.no_grad():
        for row, state in enumerate(start.states):
            for param, saved in zip(params, state["params"], strict=True):
                param[row].copy_(saved)
            optimizer.load_member_state(row, state["optimizer"])
            noise.load_member_state(row, state["noise"])
            order_gens[row].set_state(state["order_generator"])


def member_checkpoint(
    params: list[torch.Tensor],
    optimizer: StackedOptimizer,
    noise: StackedGradientNoise,
    order_gen: torch.Generator,
    row: int,
    *,
    epoch: int,
    steps: int,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """What the member in `row` saves after `epoch` (views: written before the next step);
    `order_gen` is the member's own data order."""
    return {
        "stack": {"epoch": epoch, "data": "own"},
        "params": [p[row] for p in params],
        "optimizer": optimizer.member_state(row),
        "noise": noise.member_state(row),
        "order_generator": order_gen.get_state(),
        "epoch": epoch,
        "steps": steps,
        "metrics": metrics,
    }
