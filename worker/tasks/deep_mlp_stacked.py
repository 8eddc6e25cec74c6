"""The deep_mlp task trained as a stack: K trials in one batched forward and backward pass.

The paper's networks are small (20 layers of width 50), so one trial leaves a GPU idle and a
CPU core busy with Python overhead. Here member k's layer i is ``W[i][k]`` in a tensor of
shape (K, out, in) (``nn.Linear``'s layout), and every layer is one ``torch.baddbmm``.

What members share, and what each has of its own:

- Shared (``stack_key``): dataset, data_dir, depth, width, activation, init, optimizer,
  batch_size, epochs, val_fraction. Also shared: the data split and the minibatch order,
  both drawn from the *first* member's seed (``derived_seed(seed, "split" | "order")``). A
  member whose seed differs from the first's therefore sees the first member's split and
  order, not its own; with one member (or equal seeds) nothing changes.
- Per member: eta, gamma, lr, momentum, clip and seed. The initial weights come from the
  member's own seed with ``deep_mlp.build_model``'s very draws, and its noise from its own
  stream (``derived_seed(seed, "noise")``, see ``worker.batched_noise``).

Each step runs deep_mlp's order per member: backward -> clip by the member's own gradient
norm -> add the member's noise -> update with the member's lr. Divergence is checked per
member once per epoch, as in deep_mlp. A member that diverges, or whose report raises
(pruning, shutdown), leaves the stack at the end of that epoch: its rows are dropped from
the weights and optimizer state (a copy of a few MB, cheaper than one step), so the others
never compute with it again. With one member the results equal ``deep_mlp.train``'s bit for
bit; in a larger stack they match each member's lone run to rounding (see worker.stacked).
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

from search_spaces import DEEP_MLP, DeepMLPConfig, derived_seed
from worker.batched_noise import BatchedGradientNoise
from worker.stacked import StackedOptimizer, StackMember, clip_limits, clip_per_member_
from worker.tasks.base import check_noise, final_result, resolve_device, validate
from worker.tasks.deep_mlp import EVAL_CHUNK, build_model, load_split

__all__ = ["STACK_KEYS", "StackRun", "StackedMLP", "run_stack", "stack_key", "train_stacked"]

STACK_KEYS = (
    "dataset", "data_dir", "depth", "width", "activation", "init", "optimizer", "batch_size",
    "epochs", "val_fraction",
)  # fmt: skip
# relu runs in place on the fresh layer output: one big tensor less to allocate per layer.
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": partial(F.relu, inplace=True),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
}


class StackedLinear(torch.autograd.Function):
    """``x[k] @ W[k].T + b[k]`` for every member, with ``F.linear``'s backward products.

    Autograd's bmm backward would compute the weight gradient as ``(x.T @ g).T`` (other
    summation order, transposed memory, so torch.optim's update rounds differently); this
    computes ``g.T @ x`` as ``nn.Linear``'s backward does, so gradients match a lone run.
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor], output: Tensor) -> None:
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        return _linear_grads(ctx, grad, x, weight)


def _linear_grads(
    ctx: Any, grad: Tensor, x: Tensor, weight: Tensor
) -> tuple[Tensor | None, Tensor, Tensor]:
    """Gradients of a stacked linear layer for input, weight (``g.T @ x``) and bias."""
    grad_x = grad.bmm(weight) if ctx.needs_input_grad[0] else None
    return grad_x, grad.transpose(1, 2).bmm(x), grad.sum(1)


class StackedLinearReLU(torch.autograd.Function):
    """``relu(StackedLinear(x, W, b))`` as one autograd node: the same ops and rounding.

    The ReLU's backward is the one autograd would run (``threshold_backward`` on the
    output), so results are bit for bit those of the two separate nodes; one node per layer
    instead of two is a few percent of a stacked step on a CPU (benchmarks/batched.py).
    """

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2)).relu_()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor, Tensor], output: Tensor) -> None:
        x, weight, _ = inputs
        ctx.save_for_backward(x, weight, output)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:  # type: ignore[override]
        x, weight, output = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, output, 0)
        return _linear_grads(ctx, grad, x, weight)


def _config(config: dict[str, Any]) -> DeepMLPConfig:
    cfg = validate(DEEP_MLP, config)
    assert isinstance(cfg, DeepMLPConfig)
    return cfg


def stack_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """Trials whose configs have equal keys can be trained in one stack."""
    cfg = _config(config)
    return tuple(getattr(cfg, name) for name in STACK_KEYS)


class StackedMLP:
    """K deep MLPs of one shape: weights (K, out, in) and biases (K, out) per layer."""

    def __init__(self, cfgs: list[DeepMLPConfig], n_inputs: int, device: torch.device) -> None:
        per_member = []
        for cfg in cfgs:
            generator = torch.Generator().manual_seed(derived_seed(cfg.seed, "init"))
            model = build_model(cfg, n_inputs, generator)
            per_member.append([p.detach() for p in model.parameters()])
        # Parameter order is nn.Sequential's (W0, b0, W1, b1, ...), as the noise expects.
        self.params = [
            torch.stack(group).to(device).requires_grad_()
            for group in zip(*per_member, strict=True)
        ]
        self.activation = _ACTIVATIONS[cfgs[0].activation]
        self.fused_relu = cfgs[0].activation == "relu"

    @property
    def k(self) -> int:
        return self.params[0].shape[0]

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every member for the shared inputs ``x``: shape (K, len(x), classes)."""
        h = x.expand(self.k, *x.shape)
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            weight, bias = self.params[2 * i], self.params[2 * i + 1]
            if i == n_layers - 1:
                h = StackedLinear.apply(h, weight, bias)
            elif self.fused_relu:
                h = StackedLinearReLU.apply(h, weight, bias)
            else:
                h = self.activation(StackedLinear.apply(h, weight, bias))
        return h

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
        self.params = [
            p.detach().index_select(0, index.to(p.device)).requires_grad_() for p in self.params
        ]

    def member_state(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters under the names ``deep_mlp.build_model``'s state_dict uses."""
        state = {}
        for i in range(len(self.params) // 2):
            state[f"{2 * i}.weight"] = self.params[2 * i][k].detach().cpu().clone()
            state[f"{2 * i}.bias"] = self.params[2 * i + 1][k].detach().cpu().clone()
        return state


def member_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Each member's mean cross-entropy over the minibatch, shape (K,).

    The gradients are the lone run's either way; one member alone goes through
    ``F.cross_entropy`` itself so that its loss values are too (a stack sums in another
    order, which moves the reported loss in the last bits).
    """
    k, n, classes = logits.shape
    if k == 1:
        return F.cross_entropy(logits[0], y).unsqueeze(0)
    per_sample = F.cross_entropy(logits.reshape(k * n, classes), y.repeat(k), reduction="none")
    return per_sample.view(k, n).mean(1)


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
    noise = [check_noise(m.eta, m.gamma) for m in members]
    dev = torch.device(resolve_device(device))
    lead = cfgs[0]

    split = load_split(lead)
    x_train, y_train, x_val, y_val = (
        torch.as_tensor(a).to(dev) for a in (split.x_train, split.y_train, split.x_val, split.y_val)
    )
    stack = StackedMLP(cfgs, x_train.shape[1], dev)
    optimizer = StackedOptimizer(
        stack.params, lead.optimizer, [c.lr for c in cfgs], [c.momentum for c in cfgs]
    )
    noisy = BatchedGradientNoise(
        stack.params,
        [eta for eta, _ in noise],
        [gamma for _, gamma in noise],
        [derived_seed(c.seed, "noise") for c in cfgs],
    )
    order_gen = torch.Generator().manual_seed(derived_seed(lead.seed, "order"))
    n_train, batch = len(x_train), lead.batch_size
    n_batches = math.ceil(n_train / batch)

    run = StackRun(results=[None] * len(members), params=[None] * len(members))  # type: ignore[list-item]
    live = list(range(len(members)))  # the member held in each row of the stack
    steps = 0
    for epoch in range(1, lead.epochs + 1):
        perm = torch.randperm(n_train, generator=order_gen).to(dev)
        xs, ys = x_train[perm].split(batch), y_train[perm].split(batch)
        loss_sum = torch.zeros(len(live), device=dev)
        correct = torch.zeros(len(live), dtype=torch.int64, device=dev)
        clips = [cfgs[i].clip for i in live]
        limits = clip_limits(clips, dev) if any(c is not None for c in clips) else None
        for xb, yb in zip(xs, ys, strict=True):
            logits = stack.forward(xb)
            losses = member_losses(logits, yb)
            # Summing the members' losses gives each member exactly its own gradient.
            grads = torch.autograd.grad(losses.sum(), stack.params)
            if limits is not None:
                clip_per_member_(grads, limits)  # clip first, noise after
            noisy.add_to(grads)
            optimizer.step(grads)
            loss_sum += losses.detach()
            correct += (logits.argmax(-1) == yb).sum(-1)
        steps += n_batches

        val_losses, val_accuracies = stack.evaluate(x_val, y_val)
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
                    report(epoch, dict(metrics))
            except Exception as exc:  # stops this member only
                result = exc
            if result is None and (diverged or epoch == lead.epochs):
                result = final_result(metrics, steps=steps, epochs=epoch, diverged=diverged)
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
