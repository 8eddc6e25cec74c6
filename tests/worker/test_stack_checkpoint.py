"""Stack members' checkpoints: a resumed stack continues exactly, in any order, and retries
are grouped by where they resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from worker.checkpoints import Checkpoint, CheckpointStore, SaveCadence, saved_curve
from worker.stack_run import resume_mark
from worker.stacked import StackMember
from worker.tasks.deep_mlp_stacked import run_stack

BASE = {"dataset": "digits", "depth": 4, "width": 16, "epochs": 6, "batch_size": 64}
CONFIGS = [
    {**BASE, "optimizer": "momentum", "lr": 0.05, "momentum": 0.9, "seed": 3},
    {**BASE, "optimizer": "momentum", "lr": 0.02, "momentum": 0.5, "seed": 8},
    {**BASE, "optimizer": "momentum", "lr": 0.05, "momentum": 0.9, "seed": 5},
]
NOISE = [(0.3, 0.55), (1.0, 0.55), (0.0, 0.55)]


class Stopped(Exception):
    pass


def _members(
    order: list[int], curves: list[list[dict[str, Any]]], checkpoints: list[Any]
) -> list[StackMember]:
    return [
        StackMember(
            CONFIGS[i],
            *NOISE[i],
            checkpoint=checkpoints[i],
            report=lambda e, m, c=curves[i]: c.append({"epoch": e, **m}),
        )  # fmt: skip
        for i in order
    ]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1], [1]], ids=["same", "reordered", "alone"])
def test_a_resumed_stack_continues_where_the_lost_one_would_have(
    tmp_path: Path, order: list[int]
) -> None:
    whole: list[list[dict[str, Any]]] = [[], [], []]
    reference = run_stack(_members([0, 1, 2], whole, [None] * 3)).results

    store = CheckpointStore(str(tmp_path))
    curves: list[list[dict[str, Any]]] = [[], [], []]
    cadence = SaveCadence(every=1)
    first = [
        Checkpoint(
            store,
            f"s/{i}",
            every=1,
            resumed=None,
            curve=curves[i],
            cadence=cadence,
            stopping=lambda: len(curves[0]) >= 2,
            stop_exc=Stopped,
        )  # fmt: skip
        for i in range(3)
    ]
    stopped = run_stack(_members([0, 1, 2], curves, first)).results
    assert all(isinstance(r, Stopped) for r in stopped)  # all three saved epoch 2, then stopped

    again: list[list[dict[str, Any]]] = [[], [], []]
    resumed = []
    for i in range(3):
        saved = store.load(f"s/{i}")
        assert saved is not None and saved["epoch"] == 2
        assert resume_mark(saved["trainer"]) == (("data", "own"), ("epoch", 2))
        again[i].extend(saved_curve(saved))
        resumed.append(Checkpoint(store, f"s/{i}", every=1, resumed=saved, curve=again[i],
                                  stopping=lambda: False, stop_exc=Stopped))  # fmt: skip
    results = run_stack(_members(order, again, resumed)).results
    for row, i in enumerate(order):
        # Each member resumes its own split and order, whoever leads the new stack.
        # A stack of another size reduces each member's training loss in another order (a
        # stack of one runs F.cross_entropy): that last digit apart, the run is the same.
        same: Any = (lambda x: x) if len(order) == 3 else (lambda x: pytest.approx(x, rel=1e-6))
        assert results[row] == same(reference[i])
        assert [p["epoch"] for p in again[i]] == list(range(1, 7))
        # The curve too; its noise-to-gradient ratios are norms batched by the stack's size.
        drop = ("noise_grad_ratio", "noise_grad_ratio_layers")
        assert [{k: v for k, v in p.items() if k not in drop} for p in again[i]] == [
            same({k: v for k, v in p.items() if k not in drop}) for p in whole[i]
        ]
        ratios = [p["noise_grad_ratio"] for p in again[i]]
        assert ratios == pytest.approx([p["noise_grad_ratio"] for p in whole[i]], rel=1e-5)


def test_members_from_different_points_cannot_share_a_stack(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    curve: list[dict[str, Any]] = []
    saving = Checkpoint(store, "s/0", every=1, resumed=None, curve=curve,
                        stopping=lambda: len(curve) >= 2, stop_exc=Stopped)  # fmt: skip
    stopped = run_stack(_members([0], [curve, [], []], [saving, None, None])).results
    assert isinstance(stopped[0], Stopped)
    saved = store.load("s/0")
    resumed = Checkpoint(store, "s/0", every=1, resumed=saved, curve=[],
                         stopping=lambda: False, stop_exc=Stopped)  # fmt: skip
    fresh_beside = _members([0, 1], [[], [], []], [resumed, None, None])
    with pytest.raises(ValueError, match="all start fresh or all resume"):
        run_stack(fresh_beside)


def test_a_lone_runs_checkpoint_is_not_a_stacks() -> None:
    assert resume_mark({"model": {}, "epoch": 3}) is None
