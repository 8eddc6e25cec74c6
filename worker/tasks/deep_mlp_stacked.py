"""The deep_mlp task trained as a stack: K trials in one batched forward and backward pass.

The paper's networks are small (20 layers of width 50), so one trial leaves a GPU idle and a
CPU core busy with Python overhead. Here member k's layer i is ``W[i][k]`` in a tensor of
shape (K, out, in) (``nn.Linear``'s layout), and every layer is one ``torch.baddbmm``
(see StackedMLP for the layout of the activations).

What members share, and what each has of its own:

- Shared (``stack_key``): dataset, data_dir, depth, width, activation, init, optimizer,
  batch_size, epochs, val_fraction. Also shared: the data split and the minibatch order,
  both drawn from the *first* member's seed (``derived_seed(seed, "split" | "order")``). A
  member whose seed differs from the first's therefore sees the first member's split and
  order, not its own; with one member (or equal seeds) nothing changes.
- Per member: eta, gamma, lr, momentum, clip and seed. The initial weights come from the
  member's own seed with ``deep_mlp.build_model``'s very draws, and its noise from its own
  stream (``derived_seed(seed, "noise")``, see ``worker.stacked_noise``).

Each step runs deep_mlp's order per member: backward -> clip by the member's own gradient
norm -> add the member's noise (the other way round with placement ``before_clip``, which
the members share) -> update with the member's lr. Divergence is checked per
member once per epoch, as in deep_mlp. A member that diverges, or whose report raises
(pruning, shutdown), leaves the stack at the end of that epoch: its rows are dropped from
the weights and optimizer state (a copy of a few MB, cheaper than one step), so the others
never compute with it again. With one member the results equal ``deep_mlp.train``'s bit for
bit; in a larger stack they match each member's lone run to rounding (see worker.stacked).

Members with a ``checkpoint`` save their own state at epoch ends and resume from it (see
``deep_mlp_stack_checkpoint``): a resumed stack keeps the data split and order of the stack
that saved them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from search_spaces import DEEP_MLP, DeepMLPConfig, NoiseSetup, derived_seed
from worker.noise_ratio import RATIO_EVERY, member_ratios
from worker.stacked import StackedOptimizer, StackMember, clip_limits, clip_per_member_
from worker.stacked_noise import StackedGradientNoise
from worker.tasks.base import check_noise, final_result, resolve_device, validate
from worker.tasks.deep_mlp import EVAL_CHUNK, build_model, load_split
from worker.tasks.deep_mlp_stack_checkpoint import member_checkpoint, restore_members, resume_point

__all__ = ["STACK_KEYS", "StackRun", "StackedMLP", "run_stack", "stack_key", "train_stacked"]

STACK_KEYS = (
    "dataset", "data_dir", "depth", "width", "activation", "init", "optimizer", "batch_size",
    "epochs", "val_fraction",
)  # fmt: skip
aten = torch.ops.aten


@dataclass(frozen=True)
class _Activation:
    """An activation and the backward autograd would run for it.

    ``forward`` may work in place on the fresh layer output (one big tensor less per layer)
    unless ``backward`` needs the pre-activation; ``backward(grad, pre, out)`` is the op of
    torch's derivative formula, so gradients equal autograd's bit for bit.
    """

    forward: Callable[[Tensor], Tensor]
    backward: Callable[[Tensor, Tensor, Tensor], Tensor]


_ACTIVATIONS = {
    "relu": _Activation(torch.relu_, lambda g, pre, out: aten.threshold_backward(g, out, 0)),
    "tanh": _Activation(torch.tanh_, lambda g, pre, out: aten.tanh_backward(g, out)),
    "sigmoid": _Activation(torch.sigmoid_, lambda g, pre, out: aten.sigmoid_backward(g, out)),
    "gelu": _Activation(F.gelu, lambda g, pre, out: aten.gelu_backward(g, pre)),
}


def _linear(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Member k's layer on its activations ``h[k]``, in the stack's layout (see StackedMLP)."""
    if len(weight) == 1:  # F.linear itself, as the lone run computes it
        return F.linear(h[0], weight[0], bias[0]).unsqueeze(0)
    return torch.baddbmm(bias.unsqueeze(2), weight, h)  # W[k] @ h[k] + b[k], (K, out, n)


def _linear_grads(
    grad: Tensor, h: Tensor, weight: Tensor, need_input: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of ``_linear`` for weight, bias and input (``need_input``)."""
    if len(weight) == 1:  # nn.Linear's backward: g.T @ x, g summed over rows, g @ W
        g, x0 = grad[0], h[0]
        grad_x = g.mm(weight[0])[None] if need_input else None
        return g.t().mm(x0)[None], g.sum(0)[None], grad_x
    grad_h = weight.transpose(1, 2).bmm(grad) if need_input else None
    return grad.bmm(h.transpose(1, 2)), grad.sum(2), grad_h


def _config(config: dict[str, Any]) -> DeepMLPConfig:
    cfg = validate(DEEP_MLP, config)
    assert isinstance(cfg, DeepMLPConfig)
    return cfg


def stack_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """Trials whose configs have equal keys can be trained in one stack."""
    cfg = _config(config)
    return tuple(getattr(cfg, name) for name in STACK_KEYS)


class StackedMLP:
    """K deep MLPs of one shape: weights (K, out, in) and biases (K, out) per layer.

    Gradients are written out by hand (``loss_and_grads``) rather than left to autograd: the
    network is a plain chain, and autograd's bookkeeping (a graph node per layer, a Python
    call per node) is a large share of a stacked step on a CPU (benchmarks/stacked.py).

    Layout: with K > 1 each member's activations are columns, (K, features, n), and a layer
    is ``W[k] @ h[k]``: the matrix products then run the CPU's vector lanes along the n
    rows of the minibatch rather than along a width of 50 (faster products: see
    benchmarks/stacked.py). One member alone keeps ``nn.Linear``'s rows and its very ops
    (``F.linear``, the ``g.T @ x`` weight gradient), so its results equal
    ``deep_mlp.train``'s bit for bit.
    """

    def __init__(self, cfgs: list[DeepMLPConfig], n_inputs: int, device: torch.device) -> None:
        per_member = []
        for cfg in cfgs:
            generator = torch.Generator().manual_seed(derived_seed(cfg.seed, "init"))
            model = build_model(cfg, n_inputs, generator)
            per_member.append([p.detach() for p in model.parameters()])
        # Parameter order is nn.Sequential's (W0, b0, W1, b1, ...), as the noise expects.
        self.params = [torch.stack(group).to(device) for group in zip(*per_member, strict=True)]
        self.activation = _ACTIVATIONS[cfgs[0].activation]

    @property
    def k(self) -> int:
        return self.params[0].shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every member for the shared inputs ``x``: shape (K, len(x), classes)."""
        return self._rows(self._forward(x, None))

    def _rows(self, h: Tensor) -> Tensor:
        """Outputs in the stack's layout as rows, (K, n, features): a small copy for logits
        that argmax and log_softmax then read in their fast, contiguous order."""
        return h if self.k == 1 else h.transpose(1, 2).contiguous()

    def _forward(self, x: Tensor, kept: list[tuple[Tensor, Tensor, Tensor]] | None) -> Tensor:
        """The logits; each layer's (input, pre-activation, output) go to ``kept``, in the
        stack's layout."""
        h = x if self.k == 1 else x.t()
        h = h.expand(self.k, *h.shape)
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            x_in, h = h, _linear(h, self.params[2 * i], self.params[2 * i + 1])
            if i < n_layers - 1:
                pre, h = h, self.activation.forward(h)
                if kept is not None:
                    kept.append((x_in, pre, h))
            elif kept is not None:
                kept.append((x_in, h, h))
        return h

    @torch.no_grad()
    def loss_and_grads(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Logits, each member's mean loss (K,) and its gradients, in ``params`` order.

        The gradients are those of the sum of the members' losses, which gives each member
        exactly the gradient of its own loss.
        """
        kept: list[tuple[Tensor, Tensor, Tensor]] = []
        logits = self._forward(x, kept)
        losses, grad = member_losses_and_grad(logits, y)
        grads: list[Tensor] = [grad] * len(self.params)
        for i in reversed(range(len(kept))):
            x_in, pre, out = kept[i]
            if i < len(kept) - 1:
                grad = self.activation.backward(grad, pre, out)
            # The first layer's input is the data: it needs no gradient.
            grads[2 * i], grads[2 * i + 1], grad_x = _linear_grads(
                grad, x_in, self.params[2 * i], i > 0
            )
            if grad_x is not None:
                grad = grad_x
        return self._rows(logits), losses, grads

    @torch.inference_mode()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
        """Each member's mean loss and accuracy, computed as ``deep_mlp.evaluate`` does."""
        loss_sum = torch.zeros(self.k, dtype=torch.float64, device=x.device)
        correct = torch.zeros(self.k, dtype=torch.int64, device=x.device)
        for start in range(0, len(x), EVAL_CHUNK):
            logits = self.forward(x[start : start + EVAL_CHUNK])
            labels = y[start : start + EVAL_CHUNK]
            for k in range(self.k):  # one reduction per member keeps deep_mlp's summation order
                loss_sum[k] += F.cross_entropy(logits[k], labels, reduction="sum").double()
            hit = (logits.argmax(-1) == labels) & torch.isfinite(logits).all(-1)
            correct += hit.sum(-1)
        return [v / len(x) for v in loss_sum.tolist()], [c / len(x) for c in correct.tolist()]

    def keep(self, index: Tensor) -> None:
        self.params = [p.index_select(0, index.to(p.device)) for p in self.params]

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters under the names ``deep_mlp.build_model``'s state_dict uses."""
        state = {}
        for i in range(len(self.params) // 2):
            state[f"{2 * i}.weight"] = self.params[2 * i][k].cpu().clone()
            state[f"{2 * i}.bias"] = self.params[2 * i + 1][k].cpu().clone()
        return state


# nll_loss's mean reduction, as aten numbers it.
_MEAN = 1


def member_losses_and_grad(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Each member's mean cross-entropy over the minibatch (K,), and the gradient of their
    sum with respect to ``logits``, both in the stack's layout (see StackedMLP).

    One member alone runs ``F.cross_entropy`` and its backward op for op (logits (1, n,
    classes)), so its losses and gradients are the lone run's. A larger stack's logits are
    columns, (K, classes, n): the softmax then runs along the minibatch, much faster than
    over rows of 10 classes (benchmarks/stacked.py), and its gradient is written as
    ``(softmax - one_hot) / n``.
    """
    if len(logits) == 1:
        logp = F.log_softmax(logits[0], 1)
        loss, total_weight = aten.nll_loss_forward(logp, y, None, _MEAN, -100)
        grad = aten.nll_loss_backward(
            torch.ones_like(loss), logp, y, None, _MEAN, -100, total_weight
        )
        grad = aten._log_softmax_backward_data(grad, logp, 1, logp.dtype)
        return loss.unsqueeze(0), grad.unsqueeze(0)
    k, _, n = logits.shape
    logp = torch.log_softmax(logits, 1)
    targets = y.view(1, 1, n).expand(k, 1, n)
    losses = logp.gather(1, targets).view(k, n).mean(1).neg_()
    minus_one = torch.full((1, 1, 1), -1.0, dtype=logp.dtype, device=logp.device)
    grad = logp.exp_().scatter_add_(1, targets, minus_one.expand(k, 1, n))  # softmax - one_hot
    return losses, grad.div_(n)


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
    setups = [m.noise if m.noise is not None else NoiseSetup(*check_noise(m.eta, m.gamma))
              for m in members]  # fmt: skip
    placement = setups[0].placement
    if any(s.placement != placement for s in setups):
        raise ValueError("members of a stack must share the noise placement")
    dev = torch.device(resolve_device(device))
    lead = cfgs[0]

    start = resume_point(
        [m.checkpoint.load() if m.checkpoint is not None else None for m in members], lead.seed
    )
    split = load_split(lead.model_copy(update={"seed": start.data_seed}))
    x_train, y_train, x_val, y_val = (
        torch.as_tensor(a).to(dev) for a in (split.x_train, split.y_train, split.x_val, split.y_val)
    )
    stack = StackedMLP(cfgs, x_train.shape[1], dev)
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
    order_gen = torch.Generator().manual_seed(derived_seed(start.data_seed, "order"))
    if start.states:
        restore_members(start, stack.params, optimizer, noisy, order_gen)
    n_train, batch = len(x_train), lead.batch_size
    n_batches = math.ceil(n_train / batch)

    run = StackRun(results=[None] * len(members), params=[None] * len(members))  # type: ignore[list-item]
    live = list(range(len(members)))  # the member held in each row of the stack
    steps = start.steps
    for epoch in range(start.epoch + 1, lead.epochs + 1):
        perm = torch.randperm(n_train, generator=order_gen).to(dev)
        xs, ys = x_train[perm].split(batch), y_train[perm].split(batch)
        loss_sum = torch.zeros(len(live), device=dev)
        correct = torch.zeros(len(live), dtype=torch.int64, device=dev)
        clips = [cfgs[i].clip for i in live]
        limits = clip_limits(clips, dev) if any(c is not None for c in clips) else None
        for xb, yb in zip(xs, ys, strict=True):
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

        val_losses, val_accuracies = stack.evaluate(x_val, y_val)
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
            result: dict[str, Any] | BaseException | None = None
            report = members[member_id].report
            try:
                if report is not None:
                    report(epoch, {**metrics, "steps": steps, **member_ratios(ratios, row)})
            except Exception as exc:  # stops this member only
                result = exc
            if result is None and (diverged or epoch == lead.epochs):
                result = final_result(metrics, steps=steps, epochs=epoch, diverged=diverged)
            checkpoint = members[member_id].checkpoint
            if result is None and checkpoint is not None:
                saving = partial(member_checkpoint, stack.params, optimizer, noisy, order_gen, row,
                                epoch=epoch, steps=steps, metrics=metrics,
                                data_seed=start.data_seed)  # fmt: skip
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
