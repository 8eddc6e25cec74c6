"""The deep_mlp task trained as a stack: K trials in one batched forward and backward pass.

The paper's networks are small (20 layers of width 50), so one trial leaves a GPU idle and a
CPU core busy with Python overhead. Here member k's layer i is ``W[i][k]`` in a tensor of
shape (K, out, in) (``nn.Linear``'s layout), and every layer is one ``torch.baddbmm``
(see StackedMLP for the layout of the activations).

What members share, and what each has of its own:

- Shared (``stack_key``): dataset, data_dir, depth, width, activation, init, optimizer,
  batch_size, epochs, val_fraction.
- Per member: eta, gamma, lr, momentum, clip and seed. Everything a seed draws is the
  member's own, as in its lone run: the initial weights (``deep_mlp.build_model``'s very
  draws), the data split and minibatch order (``worker.tasks.stack_data``) and the noise
  (``derived_seed(seed, "noise")``, see ``worker.stacked_noise``). A run's outcome thus
  depends on its configuration and seed only, not on the stack it trained in.

Each step runs deep_mlp's order per member: backward -> clip by the member's own gradient
norm -> add the member's noise (the other way round with placement ``before_clip``, which
the members share) -> update with the member's lr. Divergence is checked per
member once per epoch, as in deep_mlp. A member that diverges, or whose report raises
(pruning, shutdown), leaves the stack at the end of that epoch: its rows are dropped from
the weights and optimizer state (a copy of a few MB, cheaper than one step), so the others
never compute with it again. With one member the results equal ``deep_mlp.train``'s bit for
bit; in a larger stack they match each member's lone run to rounding (see worker.stacked).

Members with a ``checkpoint`` save their own state at epoch ends, their data order's
generator included, and resume from it (see ``deep_mlp_stack_checkpoint``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor

from search_spaces import DEEP_MLP, DeepMLPConfig, derived_seed
from worker.noise_ratio import RATIO_EVERY, member_ratios
from worker.stacked import (
    StackedOptimizer,
    StackMember,
    clip_limits,
    clip_per_member_,
    end_member_epoch,
    member_noise,
)
from worker.stacked_noise import StackedGradientNoise
from worker.tasks.base import resolve_device, validate
from worker.tasks.deep_mlp_stack_checkpoint import member_checkpoint, restore_members, resume_point
from worker.tasks.stack_data import MemberData
from worker.tasks.stacked_mlp import StackedMLP

__all__ = ["STACK_KEYS", "StackRun", "StackedMLP", "run_stack", "stack_key", "train_stacked"]

STACK_KEYS = (
    "dataset", "data_dir", "depth", "width", "activation", "init", "optimizer", "batch_size",
    "epochs", "val_fraction",
)  # fmt: skip


def _config(config: dict[str, Any]) -> DeepMLPConfig:
    cfg = validate(DEEP_MLP, config)
    assert isinstance(cfg, DeepMLPConfig)
    return cfg


def stack_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """Trials whose configs have equal keys can be trained in one stack."""
    cfg = _config(config)
    return tuple(getattr(cfg, name) for name in STACK_KEYS)


@dataclass
class StackRun:
    """What ``run_stack`` returns: each member's result and, if asked, final parameters."""

    results: list[dict[str, Any] | BaseException]
    params: list[dict[str, Tensor] | None] = field(default_factory=list)


def train_stacked(members: list[StackMember], *, device: str = "cpu") -> list[Any]:
    """Train the members as one stack; see worker.stacked for the contract."""
    return run_stack(members, device=device).results


def run_stack(
    members: list[StackMember], *, device: str = "cpu", keep_params: bool = False
) -> StackRun:
    """``train_stacked``, optionally keeping each member's parameters as it leaves."""
    if not members:
        return StackRun(results=[])
    cfgs = [_config(m.config) for m in members]
    keys = {stack_key(c.model_dump()) for c in cfgs}
    if len(keys) > 1:
        raise ValueError(f"members cannot share a stack: they differ in {STACK_KEYS}")
    setups = member_noise(members)
    placement = setups[0].placement
    dev = torch.device(resolve_device(device))
    lead = cfgs[0]

    start = resume_point(
        [m.checkpoint.load() if m.checkpoint is not None else None for m in members]
    )
    data = MemberData(cfgs, dev)
    stack = StackedMLP(cfgs, data.n_features, dev)
    optimizer = StackedOptimizer(
        stack.params, lead.optimizer, [c.lr for c in cfgs], [c.momentum for c in cfgs]
    )
    noisy = StackedGradientNoise(
        stack.params,
        [s.eta for s in setups],
        [s.gamma for s in setups],
        [derived_seed(c.seed, "noise") for c in cfgs],
        schedules=[s.make_schedule() for s in setups],
        relative=[s.scale == "relative" for s in setups],
        ratio_every=RATIO_EVERY,
    )
    layers = [[2 * i, 2 * i + 1] for i in range(len(stack.params) // 2)]  # each layer's W, b
    if start.states:
        restore_members(start, stack.params, optimizer, noisy, data.order_gens)
    n_train, batch = data.n_train, lead.batch_size
    n_batches = math.ceil(n_train / batch)

    run = StackRun(results=[None] * len(members), params=[None] * len(members))  # type: ignore[list-item]
    live = list(range(len(members)))  # the member held in each row of the stack
    steps = start.steps
    for epoch in range(start.epoch + 1, lead.epochs + 1):
        loss_sum = torch.zeros(len(live), device=dev)
        correct = torch.zeros(len(live), dtype=torch.int64, device=dev)
        clips = [cfgs[i].clip for i in live]
        limits = clip_limits(clips, dev) if any(c is not None for c in clips) else None
        for xb, yb in data.minibatches(batch):
            logits, losses, grads = stack.loss_and_grads(xb, yb)
            if placement == "before_clip":
                noisy.add_to(grads)
            if limits is not None:
                clip_per_member_(grads, limits)
            if placement == "after_clip":  # the paper's: clip first, noise after
                noisy.add_to(grads)
            optimizer.step(grads)
            loss_sum += losses
            correct += (logits.argmax(-1) == yb).sum(-1)
        steps += n_batches

        val_losses, val_accuracies = stack.evaluate(*data.validation())
        ratios = noisy.ratios.take(layers) if noisy.ratios is not None else None
        leaving = []
        for row, (member_id, train_sum, hits) in enumerate(
            zip(live, loss_sum.tolist(), correct.tolist(), strict=True)
        ):
            train_loss, val_loss = train_sum / n_batches, val_losses[row]
            diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
            nan = float("nan")
            metrics = {
                "train_loss": nan if diverged else train_loss,
                "train_accuracy": hits / n_train,
                "val_loss": nan if diverged else val_loss,
                "val_accuracy": val_accuracies[row],
            }
            result = end_member_epoch(
                members[member_id], epoch, metrics, member_ratios(ratios, row),
                steps=steps, diverged=diverged, last=epoch == lead.epochs,
            )  # fmt: skip
            checkpoint = members[member_id].checkpoint
            if result is None and checkpoint is not None:
                saving = partial(member_checkpoint, stack.params, optimizer, noisy,
                                 data.order_gens[row], row, epoch=epoch, steps=steps,
                                 metrics=metrics)  # fmt: skip
                try:
                    checkpoint.save(saving)
                except Exception as exc:  # the worker stopping, or a failed write: this member
                    result = exc
            if result is not None:
                leaving.append(row)
                _leave(run, stack, members, member_id, row, result, keep_params)
        if leaving:
            rows = [r for r in range(len(live)) if r not in leaving]
            if not rows:
                break
            index = torch.tensor(rows, dtype=torch.int64)
            stack.keep(index)
            optimizer.keep(index, stack.params)
            noisy.keep(rows)
            data.keep(rows)
            live = [live[r] for r in rows]
    return run


def _leave(
    run: StackRun,
    stack: StackedMLP,
    members: list[StackMember],
    member_id: int,
    row: int,
    result: dict[str, Any] | BaseException,
    keep_params: bool,
) -> None:
    run.results[member_id] = result
    if keep_params:
        run.params[member_id] = stack.member_state(row)
    done = members[member_id].done
    if done is not None:
        done(result)
