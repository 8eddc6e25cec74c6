"""The deep MLP as a stack: K networks of one shape, each layer one batched product.

Member k's layer i is ``W[i][k]`` in a tensor of shape (K, out, in) (``nn.Linear``'s
layout), and every layer is one ``torch.baddbmm``; gradients are written out by hand (see
StackedMLP). Each member reads its own inputs: ``x`` has a leading member dimension, so
members may train on their own splits and in their own data order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from search_spaces import DeepMLPConfig, derived_seed
from worker.tasks.deep_mlp import EVAL_CHUNK, build_model

__all__ = ["StackedMLP", "member_losses_and_grad"]

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
        """Logits of every member for its inputs ``x[k]`` (K, n, features): (K, n, classes)."""
        return self._rows(self._forward(x, None))

    def _rows(self, h: Tensor) -> Tensor:
        """Outputs in the stack's layout as rows, (K, n, features): a small copy for logits
        that argmax and log_softmax then read in their fast, contiguous order."""
        return h if self.k == 1 else h.transpose(1, 2).contiguous()

    def _forward(self, x: Tensor, kept: list[tuple[Tensor, Tensor, Tensor]] | None) -> Tensor:
        """The logits; each layer's (input, pre-activation, output) go to ``kept``, in the
        stack's layout."""
        if len(x) != self.k:
            raise ValueError(f"inputs for {len(x)} members given to a stack of {self.k}")
        h = x if self.k == 1 else x.transpose(1, 2)
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
        """Logits, each member's mean loss (K,) and its gradients, in ``params`` order, for
        member k's inputs ``x[k]`` (K, n, features) and labels ``y[k]`` (K, n).

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
        """Each member's mean loss and accuracy on its own ``x[k]``, ``y[k]``, computed as
        ``deep_mlp.evaluate`` does."""
        n = x.shape[1]
        loss_sum = torch.zeros(self.k, dtype=torch.float64, device=x.device)
        correct = torch.zeros(self.k, dtype=torch.int64, device=x.device)
        for start in range(0, n, EVAL_CHUNK):
            logits = self.forward(x[:, start : start + EVAL_CHUNK])
            labels = y[:, start : start + EVAL_CHUNK]
            for k in range(self.k):  # one reduction per member keeps deep_mlp's summation order
                loss_sum[k] += F.cross_entropy(logits[k], labels[k], reduction="sum").double()
            hit = (logits.argmax(-1) == labels) & torch.isfinite(logits).all(-1)
            correct += hit.sum(-1)
        return [v / n for v in loss_sum.tolist()], [c / n for c in correct.tolist()]

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
    """Each member's mean cross-entropy over its minibatch (K,), and the gradient of their
    sum with respect to ``logits``, both in the stack's layout (see StackedMLP); ``y[k]``
    holds member k's labels.

    One member alone runs ``F.cross_entropy`` and its backward op for op (logits (1, n,
    classes)), so its losses and gradients are the lone run's. A larger stack's logits are
    columns, (K, classes, n): the softmax then runs along the minibatch, much faster than
    over rows of 10 classes (benchmarks/stacked.py), and its gradient is written as
    ``(softmax - one_hot) / n``.
    """
    if len(logits) == 1:
        logp = F.log_softmax(logits[0], 1)
        loss, total_weight = aten.nll_loss_forward(logp, y[0], None, _MEAN, -100)
        grad = aten.nll_loss_backward(
            torch.ones_like(loss), logp, y[0], None, _MEAN, -100, total_weight
        )
        grad = aten._log_softmax_backward_data(grad, logp, 1, logp.dtype)
        return loss.unsqueeze(0), grad.unsqueeze(0)
    k, _, n = logits.shape
    logp = torch.log_softmax(logits, 1)
    targets = y.view(k, 1, n)
    losses = logp.gather(1, targets).view(k, n).mean(1).neg_()
    minus_one = torch.full((1, 1, 1), -1.0, dtype=logp.dtype, device=logp.device)
    grad = logp.exp_().scatter_add_(1, targets, minus_one.expand(k, 1, n))  # softmax - one_hot
    return losses, grad.div_(n)
