"""The binary_arith task trained as a stack: K restarts in one batched forward and backward.

The paper counts successes over thousands of random restarts of a small model; one restart
alone leaves most of a CPU (or GPU) idle. Here every parameter carries a leading member
dimension and ``binary_arith_model.stacked_logits`` runs all members at once.

What members share, and what each has of its own:

- Shared (``stack_key``): operation, train_bits, test_bits, width, channels, optimizer,
  batch_size, steps_per_epoch, epochs, test_size and loss: the shapes of the computation.
- Per member: seed, lr, momentum, clip and noise. Unlike deep_mlp's stack, each member
  also keeps its *own* data: its initial weights, training examples and test set come from
  its own seed with the lone run's very draws (``binary_arith``'s generators), so a restart
  gets the same result in a stack as alone (to rounding: a batched product may round
  differently in the last bit; see worker.stacked).

Each step runs the lone run's order per member: backward -> clip by the member's own
gradient norm -> add the member's noise (the other way round with placement
``before_clip``, which the members share) -> update with the member's lr. The gradients of
the sum of the members' losses give each member exactly the gradient of its own loss. A
member that diverges, or whose report raises (pruning, shutdown), leaves the stack at the
end of that epoch and the others go on without its rows. Members are not checkpointed (the
lone trainer takes no ``checkpoint`` either): a ``member.checkpoint`` is ignored.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from search_spaces import derived_seed
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
from worker.tasks.base import resolve_device
from worker.tasks.binary_arith import (
    config_of,
    held_out_examples,
    init_generator,
    member_losses,
    stacked_test_errors,
    train_batch,
    train_generator,
)
from worker.tasks.binary_arith_model import LAYERS, init_parameters, stacked_logits

__all__ = ["STACK_KEYS", "stack_key", "train_stacked"]

STACK_KEYS = (
    "operation", "train_bits", "test_bits", "width", "channels", "optimizer", "batch_size",
    "steps_per_epoch", "epochs", "test_size", "loss",
)  # fmt: skip


def stack_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """Trials whose configs have equal keys can be trained in one stack."""
    cfg = config_of(config)
    return tuple(getattr(cfg, name) for name in STACK_KEYS)


def _stacked(tensors: list[list[Tensor]], device: torch.device) -> list[Tensor]:
    return [torch.stack(group).to(device) for group in zip(*tensors, strict=True)]


def train_stacked(members: list[StackMember], *, device: str = "cpu") -> list[Any]:
    """Train the members as one stack; see worker.stacked for the contract."""
    if not members:
        return []
    cfgs = [config_of(m.config) for m in members]
    if len({stack_key(c.model_dump()) for c in cfgs}) > 1:
        raise ValueError(f"members cannot share a stack: they differ in {STACK_KEYS}")
    setups = member_noise(members)
    placement = setups[0].placement
    dev = torch.device(resolve_device(device))
    lead = cfgs[0]

    params = _stacked([init_parameters(c.channels, c.width, init_generator(c)) for c in cfgs], dev)
    for p in params:
        p.requires_grad_(True)
    optimizer = StackedOptimizer(params, lead.optimizer, [c.lr for c in cfgs],
                                 [c.momentum for c in cfgs])  # fmt: skip
    noisy = StackedGradientNoise(
        params,
        [s.eta for s in setups],
        [s.gamma for s in setups],
        [derived_seed(c.seed, "noise") for c in cfgs],
        schedules=[s.make_schedule() for s in setups],
        relative=[s.scale == "relative" for s in setups],
        ratio_every=RATIO_EVERY,
    )
    test_symbols, test_answers = _stacked([list(held_out_examples(c)) for c in cfgs], dev)
    generators = [train_generator(c) for c in cfgs]
    seen = lead.steps_per_epoch * lead.batch_size * lead.length(lead.train_bits)

    results: list[dict[str, Any] | BaseException | None] = [None] * len(members)
    live = list(range(len(members)))  # the member held in each row of the stack
    steps = 0
    for epoch in range(1, lead.epochs + 1):
        loss_sum = torch.zeros(len(live), device=dev)
        wrong = torch.zeros(len(live), dtype=torch.int64, device=dev)
        clips = [cfgs[i].clip for i in live]
        limits = clip_limits(clips, dev) if any(c is not None for c in clips) else None
        for _ in range(lead.steps_per_epoch):
            batches = [train_batch(cfgs[i], generators[i]) for i in live]
            symbols, answers = (torch.stack(t).to(dev) for t in zip(*batches, strict=True))
            logits = stacked_logits(params, symbols, lead.width)
            losses = member_losses(logits, answers)
            grads = list(torch.autograd.grad((losses * lead.loss_scale).sum(), params))
            if placement == "before_clip":
                noisy.add_to(grads)
            if limits is not None:
                clip_per_member_(grads, limits)
            if placement == "after_clip":  # the paper's: clip first, noise after
                noisy.add_to(grads)
            optimizer.step(grads)
            loss_sum += losses.detach()
            wrong += (logits.detach().argmax(-1) != answers).sum((1, 2))
        steps += lead.steps_per_epoch

        detached = [p.detach() for p in params]
        test_errors, sequence_errors = stacked_test_errors(
            detached, test_symbols, test_answers, lead.width
        )
        ratios = noisy.ratios.take(LAYERS) if noisy.ratios is not None else None
        leaving = []
        for row, member_id in enumerate(live):
            train_loss = loss_sum[row].item() / lead.steps_per_epoch
            diverged = not math.isfinite(train_loss)
            metrics = {
                "train_loss": float("nan") if diverged else train_loss,
                "train_error": wrong[row].item() / seen,
                "test_error": test_errors[row].item(),
                "test_sequence_error": sequence_errors[row].item(),
            }
            result = end_member_epoch(
                members[member_id], epoch, metrics, member_ratios(ratios, row),
                steps=steps, diverged=diverged, last=epoch == lead.epochs,
            )  # fmt: skip
            if result is not None:
                leaving.append(row)
                results[member_id] = result
                done = members[member_id].done
                if done is not None:
                    done(result)
        if leaving:
            rows = [r for r in range(len(live)) if r not in leaving]
            if not rows:
                break
            index = torch.tensor(rows, dtype=torch.int64, device=dev)
            with torch.no_grad():
                params = [p.index_select(0, index).requires_grad_(True) for p in params]
            optimizer.keep(index, params)
            noisy.keep(rows)
            test_symbols, test_answers = test_symbols[index], test_answers[index]
            live = [live[r] for r in rows]
    return results
