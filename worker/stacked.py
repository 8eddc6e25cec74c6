"""What stacked trainers share: the member contract, per-member clipping and updates.

A stacked trainer trains K trials of one task as one model whose parameters carry a leading
member dimension (``W[k]`` is member k's weight), so one forward and backward pass serves
all of them. The contract (a task's ``stacked_trainer``)::

    train_stacked(members: list[StackMember], *, device="cpu") -> list[dict | BaseException]

- Every member's config has the same ``stack_key(config)`` (a function of the trainer's
  module); members may differ in what the key leaves out (noise, learning rate, seed, ...).
- ``member.report(epoch, metrics)`` is called for each member after each of its epochs;
  whatever it raises stops that member only, and becomes its result.
- A member whose loss turns non-finite ends with ``diverged: True`` as a lone run would; the
  others do not notice. A member that ends leaves the stack.
- ``member.noise``, when given, is the member's whole noise setup (schedule family,
  window, scale; see ``search_spaces.NoiseSetup``), which wins over ``eta``/``gamma``.
  Members of a stack share its ``placement`` (the worker groups them so).
- ``member.checkpoint``, when given, is the member's ``Checkpoint`` (see worker.tasks.base):
  a trainer that supports it saves each member at epoch ends, after its report, and
  resumes members whose ``load()`` gives a state. Whatever ``save`` raises stops that
  member only. Members resume together only from one point (the worker groups them).
- ``member.done(result)``, when given, is called once as the member leaves, with what the
  returned list will hold for it; an exception that escapes ``done`` ends the whole stack.
- Any other exception ends the whole stack and propagates.

The updates below are torch.optim's single-tensor SGD, momentum SGD and Adam with a
learning rate (and momentum) per member. Where all members share the learning rate the ops
are torch.optim's own; with differing learning rates the per-member scale is a tensor op
that may round differently in the last bit, as may a stacked task's batched products.
Either way a member tracks its lone run to rounding (tests: rtol 1e-4 after 20 steps of
the paper's network), and one member alone reproduces it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from search_spaces import NoiseSetup
from worker.tasks.base import check_noise, final_result

__all__ = [
    "StackMember",
    "StackedOptimizer",
    "clip_limits",
    "clip_per_member_",
    "end_member_epoch",
    "member_noise",
]

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass
class StackMember:
    """One trial in a stack: its task config, noise schedule and callbacks."""

    config: dict[str, Any]
    eta: float
    gamma: float
    report: Callable[[int, dict[str, Any]], None] | None = None
    done: Callable[[dict[str, Any] | BaseException], None] | None = None
    checkpoint: Any = None  # a worker.tasks.base.Checkpoint, for trainers that resume
    noise: NoiseSetup | None = None  # the whole noise setup; None: the paper's of eta, gamma


def member_noise(members: Sequence[StackMember]) -> list[NoiseSetup]:
    """Each member's whole noise setup (its ``noise``, else the paper's of eta and gamma);
    ``ValueError`` when members differ in placement, which a stack shares."""
    setups = [
        m.noise if m.noise is not None else NoiseSetup(*check_noise(m.eta, m.gamma))
        for m in members
    ]
    if any(s.placement != setups[0].placement for s in setups):
        raise ValueError("members of a stack must share the noise placement")
    return setups


def end_member_epoch(
    member: StackMember,
    epoch: int,
    metrics: dict[str, float],
    extra: dict[str, Any],
    *,
    steps: int,
    diverged: bool,
    last: bool,
) -> dict[str, Any] | BaseException | None:
    """Report a member's epoch (its `metrics` plus `extra` diagnostics); what it leaves the
    stack with: what its report raised, its result when it diverged or this was the last
    epoch, else None (it trains on)."""
    try:
        if member.report is not None:
            member.report(epoch, {**metrics, "steps": steps, **extra})
    except Exception as exc:  # stops this member only
        return exc
    if diverged or last:
        return final_result(metrics, steps=steps, epochs=epoch, diverged=diverged)
    return None


def member_column(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    """Per-member scalars shaped (K, 1, ..., 1) to broadcast against a stacked tensor."""
    column = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return column.view(-1, *[1] * (like.dim() - 1))


def clip_limits(max_norms: Sequence[float | None], device: torch.device) -> Tensor:
    """Per-member clipping thresholds for ``clip_per_member_``; inf where a member has none."""
    return torch.tensor([math.inf if m is None else m for m in max_norms], device=device)


@torch.no_grad()
def clip_per_member_(grads: Sequence[Tensor], limits: Tensor) -> None:
    """``clip_grad_norm_`` for each member on its own gradients (``limits`` from clip_limits).

    Same reductions as torch's: a 2-norm per parameter, then the 2-norm of those, then
    ``grad *= min(max_norm / (total + 1e-6), 1)``. A member without a threshold is left as
    it is (multiplied by exactly 1).
    """
    norms = [torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms, dim=1), dim=1)
    # torch writes max_norm / (total + 1e-6), which Tensor.__rtruediv__ computes as this.
    coef = torch.clamp((total + 1e-6).reciprocal() * limits, max=1.0)
    coef = torch.where(torch.isinf(limits), torch.ones_like(coef), coef)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))


class StackedOptimizer:
    """SGD / momentum SGD / Adam over stacked parameters with per-member lr and momentum."""

    def __init__(
        self,
        params: Sequence[Tensor],
        kind: str,
        lr: Sequence[float],
        momentum: Sequence[float] | None = None,
    ) -> None:
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}; stacked: {', '.join(OPTIMIZERS)}")
        self.kind = kind
        self.steps = 0
        self.state: list[dict[str, Tensor]] = [{} for _ in params]
        self._set_members(
            params,
            [float(v) for v in lr],
            [float(v) for v in (momentum if momentum is not None else [0.0] * len(lr))],
        )

    def _set_members(
        self, params: Sequence[Tensor], lr: list[float], momentum: list[float]
    ) -> None:
        self.params, self.lr, self.momentum = list(params), lr, momentum
        self.shared_lr = lr[0] if len(set(lr)) == 1 else None
        # Per-member columns live on the device, made once per stack rather than per step.
        like = self.params[0]
        self._lr = torch.tensor(lr, dtype=like.dtype, device=like.device)
        self._momentum = torch.tensor(momentum, dtype=like.dtype, device=like.device)

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor]) -> None:
        self.steps += 1
        if self.kind == "adam":
            self._adam(grads)
            return
        for p, g, state in zip(self.params, grads, self.state, strict=True):
            if self.kind == "momentum":
                buf = state.get("momentum")
                if buf is None:
                    buf = state["momentum"] = g.detach().clone()
                else:
                    buf.mul_(member_column(self._momentum, buf)).add_(g)
                g = buf
            if self.shared_lr is not None:
                p.add_(g, alpha=-self.shared_lr)
            else:
                p.addcmul_(g, member_column(self._lr, p), value=-1)

    def _adam(self, grads: Sequence[Tensor]) -> None:
        beta1, beta2 = ADAM_BETAS
        # torch.optim keeps the step as a float32 tensor and reads it back as a float.
        step = float(torch.tensor(float(self.steps), dtype=torch.float32))
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_sizes = self._lr / bias_correction1
        for p, g, state in zip(self.params, grads, self.state, strict=True):
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(g, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
            if self.shared_lr is not None:
                p.addcdiv_(exp_avg, denom, value=-(self.shared_lr / bias_correction1))
            else:
                p.addcmul_(exp_avg / denom, member_column(step_sizes, p), value=-1)

    def member_state(self, k: int) -> dict[str, Any]:
        """Member k's rows of the optimizer's state, for its checkpoint (views)."""
        rows = [{name: t[k] for name, t in state.items()} for state in self.state]
        return {"steps": self.steps, "state": rows}

    def load_member_state(self, k: int, saved: dict[str, Any]) -> None:
        """Put a checkpoint's rows (``member_state``) in member k's place.

        Members resumed into one stack share the step count (they resume from one epoch)."""
        self.steps = int(saved["steps"])
        for param, state, rows in zip(self.params, self.state, saved["state"], strict=True):
            for name, row in rows.items():
                if name not in state:
                    state[name] = torch.zeros_like(param)
                state[name][k].copy_(row)

    def keep(self, index: Tensor, params: Sequence[Tensor]) -> None:
        """Keep the listed members only: ``params`` are the compacted parameters."""
        rows = index.tolist()
        self.state = [
            {name: t.index_select(0, index.to(t.device)) for name, t in state.items()}
            for state in self.state
        ]
        self._set_members(params, [self.lr[i] for i in rows], [self.momentum[i] for i in rows])
