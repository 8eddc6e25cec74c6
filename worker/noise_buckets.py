"""Where GradientNoise draws its noise: one buffer per (device, dtype) of the gradients."""

from __future__ import annotations

import math
import zlib
from typing import cast

import torch
from torch import Tensor

# Golden-ratio increment: spreads the per-device seeds apart so that two devices of one kind
# (cuda:0, cuda:1), whose generators share an algorithm, do not draw the same noise.
_SEED_STRIDE = 0x9E3779B97F4A7C15


def device_seed(seed: int, device: torch.device) -> int:
    return (seed + _SEED_STRIDE * zlib.crc32(str(device).encode())) % 2**64


class Bucket:
    """The parameters whose gradients share one (device, dtype): one draw per step."""

    __slots__ = ("buffer", "foreach", "generator", "is_complex", "params", "views")

    def __init__(
        self,
        params: list[Tensor],
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator,
        foreach: bool,
    ) -> None:
        self.params = params
        self.generator = generator
        self.foreach = foreach
        # Complex entries get independent real and imaginary noise of variance sigma_t^2
        # each, the way torch.optim treats a complex parameter as a pair of real ones.
        self.is_complex = dtype.is_complex
        shapes = [grad.shape for grad in self.grads()]
        numels = [math.prod(shape) for shape in shapes]
        real_dtype = dtype.to_real() if self.is_complex else dtype
        self.buffer = torch.empty(sum(numels), dtype=real_dtype, device=device)
        self.views = [
            view.view(shape) for view, shape in zip(self.buffer.split(numels), shapes, strict=True)
        ]

    def grads(self) -> list[Tensor]:
        grads = cast(list[Tensor], [p.grad for p in self.params])
        if self.is_complex:
            return [torch.view_as_real(grad) for grad in grads]
        return grads

    def draw(self, std: float) -> None:
        self.buffer.normal_(0.0, std, generator=self.generator)

    def scale_by_rms(self) -> None:
        """Multiply each tensor's noise by its gradient's RMS (the ``relative`` scale)."""
        grads = self.grads()
        rms = torch._foreach_norm(grads)
        torch._foreach_mul_(rms, [1.0 / math.sqrt(max(g.numel(), 1)) for g in grads])
        torch._foreach_mul_(self.views, rms)  # a 0-dim tensor per tensor: broadcast

    def add_to_grads(self) -> None:
        grads = self.grads()
        # Both paths add the same drawn buffer with a plain add (no alpha), so they agree
        # bit for bit on every device.
        if self.foreach:
            torch._foreach_add_(grads, self.views)
        else:
            for grad, noise in zip(grads, self.views, strict=True):
                grad.add_(noise)
