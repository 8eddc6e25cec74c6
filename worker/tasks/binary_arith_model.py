"""A small Neural GPU (Kaiser and Sutskever, 2015): one convolutional GRU applied again and
again to a grid, written for a stack of K models at once.

The grid has ``width`` rows, one column per cell of the example (see binary_arith_data) and
``channels`` numbers per position. The example's symbols are embedded into the first row,
the other rows start at zero; then the same CGRU runs as many times as there are columns,
so a longer example gets more steps, which is what lets a model trained on short numbers
work on longer ones. The answer bit of each column is read from the first row by a linear
layer. One CGRU step, with ``*`` a convolution of kernel 3 along the columns (3 x 3 when
``width`` > 1) and zero padding::

    u = sigmoid_cutoff(U * s + B_u),  r = sigmoid_cutoff(R * s + B_r)
    s <- u . s + (1 - u) . tanh_cutoff(W * (r . s) + B)

with the Neural GPU's saturating cut-offs ``clamp(1.2 sigmoid(x) - 0.1, 0, 1)`` and
``clamp(1.1 tanh(x), -1, 1)``.

Every parameter carries a leading member dimension: a convolution is one ``torch.baddbmm``
over the K members on the gathered neighbourhoods of each position. ``BinaryArithNet`` is one
model as an ``nn.Module`` over the same code (a stack of one), for the lone trainer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from worker.tasks.binary_arith_data import SYMBOLS

__all__ = ["LAYERS", "PARAM_NAMES", "BinaryArithNet", "init_parameters", "stacked_logits"]

# Parameter order, which the noise draws follow: embedding, gates (U and R together),
# candidate (W), read-out; weights as (fan_in, fan_out) for baddbmm.
PARAM_NAMES = (
    "embedding", "gate_weight", "gate_bias", "candidate_weight", "candidate_bias",
    "out_weight", "out_bias",
)  # fmt: skip
# Indices of each layer's parameters, for the per-layer noise-to-gradient ratio.
LAYERS = [[0], [1, 2], [3, 4], [5, 6]]
CLASSES = 2


def kernel_rows(width: int) -> int:
    """Rows of the convolution kernel: 3, or 1 for a grid of one row."""
    return 3 if width > 1 else 1


def init_parameters(channels: int, width: int, generator: torch.Generator) -> list[Tensor]:
    """One model's parameters in ``PARAM_NAMES`` order: the embedding N(0, 1), weights and
    biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as torch's Linear and Conv layers draw them."""
    fan_in = 3 * kernel_rows(width) * channels
    params = [torch.randn(SYMBOLS, channels, generator=generator)]
    for n_in, n_out in ((fan_in, 2 * channels), (fan_in, channels), (channels, CLASSES)):
        bound = 1 / math.sqrt(n_in)
        params.append(torch.empty(n_in, n_out).uniform_(-bound, bound, generator=generator))
        params.append(torch.empty(n_out).uniform_(-bound, bound, generator=generator))
    return params


def _neighbourhoods(s: Tensor, width: int) -> Tensor:
    """Each position's 3 (or 3 x 3) neighbours' channels side by side, zero past the edges:
    (K, n, width, length, channels) -> (K, n * width * length, 3 * rows * channels)."""
    k, n, rows, length, _ = s.shape
    if width > 1:
        padded = F.pad(s, (0, 0, 1, 1, 1, 1))
        parts = [padded[:, :, i : i + rows, j : j + length] for i in range(3) for j in range(3)]
    else:
        padded = F.pad(s, (0, 0, 1, 1))
        parts = [padded[:, :, :, j : j + length] for j in range(3)]
    return torch.cat(parts, -1).view(k, n * rows * length, -1)


def _sigmoid_cutoff(x: Tensor) -> Tensor:
    return torch.clamp(1.2 * torch.sigmoid(x) - 0.1, 0.0, 1.0)


def _tanh_cutoff(x: Tensor) -> Tensor:
    return torch.clamp(1.1 * torch.tanh(x), -1.0, 1.0)


def stacked_logits(params: Sequence[Tensor], symbols: Tensor, width: int) -> Tensor:
    """Logits of K models on their own examples: symbols (K, n, length) -> (K, n, length, 2)."""
    embedding, gate_w, gate_b, cand_w, cand_b, out_w, out_b = params
    k, n, length = symbols.shape
    channels = embedding.shape[-1]
    index = symbols.reshape(k, n * length, 1).expand(k, n * length, channels)
    s = torch.gather(embedding, 1, index).view(k, n, 1, length, channels)
    if width > 1:
        s = F.pad(s, (0, 0, 0, 0, 0, width - 1))
    grid = (k, n, width, length)
    for _ in range(length):
        gates = torch.baddbmm(gate_b.unsqueeze(1), _neighbourhoods(s, width), gate_w)
        u, r = _sigmoid_cutoff(gates.view(*grid, 2 * channels)).chunk(2, -1)
        cand = torch.baddbmm(cand_b.unsqueeze(1), _neighbourhoods(r * s, width), cand_w)
        s = u * s + (1 - u) * _tanh_cutoff(cand.view(*grid, channels))
    first_row = s[:, :, 0].reshape(k, n * length, channels)
    return torch.baddbmm(out_b.unsqueeze(1), first_row, out_w).view(k, n, length, CLASSES)


class BinaryArithNet(nn.Module):
    """One model (a stack of one) as a module, so torch.optim and GradientNoise train it."""

    def __init__(self, channels: int, width: int, generator: torch.Generator) -> None:
        super().__init__()
        self.width = width
        params = init_parameters(channels, width, generator)
        for name, value in zip(PARAM_NAMES, params, strict=True):
            self.register_parameter(name, nn.Parameter(value))

    def forward(self, symbols: Tensor) -> Tensor:
        """symbols (n, length) -> logits (n, length, 2)."""
        params = [p.unsqueeze(0) for p in self.parameters()]
        return stacked_logits(params, symbols.unsqueeze(0), self.width)[0]
