"""Examples of the binary_arith task, drawn in-process from a seeded generator.

An example is two random operands of ``bits`` bits each (every bit a fair coin, so leading
zeros are as likely as ones) and their sum or product. Bits are stored least significant
first, and both operands sit in one row of ``length`` cells, one symbol per cell:
``a_i + 2 * b_i`` (0..3), zeros past the operands. The answer fills the same cells, one bit
each: ``length`` (``BinaryArithConfig.length``) is ``bits + 1`` for a sum and ``2 * bits``
for a product, exactly the bits the result can need. Answers are computed on the bit
tensors (a ripple-carry add, a schoolbook multiply), so numbers of any length work, not
only those that fit in 64 bits.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["SYMBOLS", "answers", "draw_examples", "encode"]

Operation = Literal["addition", "multiplication"]
# The symbols a cell can hold: one per pair of operand bits.
SYMBOLS = 4


def _propagate(column_sums: Tensor) -> Tensor:
    """The lowest bits of sum_i column_sums[:, i] * 2^i, as many as there are columns."""
    out = torch.empty_like(column_sums)
    carry = torch.zeros_like(column_sums[:, 0])
    for i in range(column_sums.shape[1]):
        total = column_sums[:, i] + carry
        out[:, i] = total % 2
        carry = total // 2
    return out


def answers(a: Tensor, b: Tensor, operation: Operation, length: int) -> Tensor:
    """The lowest ``length`` bits of a + b (or a * b) for operands of shape (n, bits), int64,
    LSB first: shape (n, length)."""
    n, bits = a.shape
    if operation == "addition":
        return _propagate(F.pad(a + b, (0, length - bits)))
    # Column k of the schoolbook product holds sum over i + j = k of a_i * b_j.
    partial = a.unsqueeze(2) * b.unsqueeze(1)  # (n, i, j)
    columns = torch.zeros(n, max(length, 2 * bits), dtype=a.dtype)
    for i in range(bits):
        columns[:, i : i + bits] += partial[:, i]
    columns = columns[:, :length]
    return _propagate(columns)


def encode(a: Tensor, b: Tensor, length: int) -> Tensor:
    """Each cell's symbol ``a_i + 2 * b_i``, zero-padded to ``length`` cells."""
    return F.pad(a + 2 * b, (0, length - a.shape[1]))


def draw_examples(
    generator: torch.Generator, n: int, bits: int, operation: Operation, length: int
) -> tuple[Tensor, Tensor]:
    """``n`` random examples of ``length`` cells: symbols and answer bits, (n, length) int64.

    Two draws from ``generator`` per call (a's bits, then b's), so a run's examples depend
    on its seed and on nothing else.
    """
    a = torch.randint(0, 2, (n, bits), generator=generator)
    b = torch.randint(0, 2, (n, bits), generator=generator)
    return encode(a, b, length), answers(a, b, operation, length)
