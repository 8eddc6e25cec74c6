"""The noise-to-gradient ratio: how large the added noise is next to the gradient it joins.

On a few sampled steps (every ``every``-th optimizer step, t = 0 first) the optimizer hands
over the squared 2-norms of each parameter's gradient and of the noise added to it, as
device tensors (no host sync: they stay on the device until the epoch ends). ``take``
turns them, once per epoch, into the ratio ||noise|| / ||gradient|| for the whole model and
for each layer (a group of parameters), averaged over the sampled steps, and starts over.
The same meter serves a stack, with one column per member.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "RATIO_EVERY",
    "RATIO_KEY",
    "RATIO_LAYERS_KEY",
    "RatioMeter",
    "member_ratios",
    "ratio_point",
]

# Sampling every 8th step keeps the cost (two norms per parameter) out of the step time.
RATIO_EVERY = 8
# The keys of an epoch's point of the curve that carry it.
RATIO_KEY, RATIO_LAYERS_KEY = "noise_grad_ratio", "noise_grad_ratio_layers"


class RatioMeter:
    """Squared norms of noise and gradient per parameter (rows), sampled every `every` steps.

    A sample is a pair of tensors of shape (P,) for one model or (P, K) for a stack of K.
    A step without noise (sigma_t = 0) is sampled with zero noise: its ratio is 0.
    """

    def __init__(self, every: int = RATIO_EVERY) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 step, got {every}")
        self.every = every
        self._noise: list[Tensor] = []
        self._grad: list[Tensor] = []

    def due(self, t: int) -> bool:
        return t % self.every == 0

    def add(self, noise_sq: Tensor, grad_sq: Tensor) -> None:
        self._noise.append(noise_sq.detach().double())
        self._grad.append(grad_sq.detach().double())

    def keep(self, index: Sequence[int]) -> None:
        """A stack kept only these members (columns), in this order."""
        cols = torch.tensor(list(index), dtype=torch.int64)
        self._noise = [n.index_select(-1, cols.to(n.device)) for n in self._noise]
        self._grad = [g.index_select(-1, cols.to(g.device)) for g in self._grad]

    def take(self, groups: Sequence[Sequence[int]]) -> tuple[list[float], list[list[float]]] | None:
        """The mean ratio since the last call, for the whole model and for each group of
        parameter rows (a layer): ``(whole, layers)``, each a list over the stack's members
        (one entry for one model); None when no step was sampled. Starts over."""
        if not self._noise:
            return None
        noise, grad = torch.stack(self._noise), torch.stack(self._grad)  # (S, P[, K])
        self._noise, self._grad = [], []

        def ratio(rows: Sequence[int] | None) -> list[float]:
            n, g = (noise, grad) if rows is None else (noise[:, list(rows)], grad[:, list(rows)])
            per_step = n.sum(1).sqrt() / g.sum(1).sqrt()  # (S[, K]): inf where no gradient
            mean = per_step.mean(0)
            return [float(v) for v in mean.reshape(-1).tolist()]

        return ratio(None), [ratio(rows) for rows in groups]


class ParamNorms:
    """Squared norms of each parameter's gradient and noise as a ``RatioMeter`` sample, in
    the order of the optimizer's parameters (zeros for those without a gradient or noise);
    where each norm goes is cached while the parameters stay."""

    def __init__(self) -> None:
        self._rows: tuple[tuple[int, ...], Tensor] | None = None

    def sample(
        self,
        meter: RatioMeter,
        params: Sequence[Tensor],
        owners: Sequence[Tensor],
        grads: Sequence[Tensor],
        noise: Sequence[Tensor],
    ) -> None:
        """`grads` and `noise` (empty: none this step) belong to `owners`, some of `params`."""
        if not owners:
            return
        device = params[0].device
        grad_sq = torch.zeros(len(params), dtype=torch.float64, device=device)
        noise_sq = torch.zeros(len(params), dtype=torch.float64, device=device)
        rows = self._where(params, owners, device)
        grad_sq.index_copy_(0, rows, _squared_norms(grads, device))
        if noise:
            noise_sq.index_copy_(0, rows, _squared_norms(noise, device))
        meter.add(noise_sq, grad_sq)

    def _where(
        self, params: Sequence[Tensor], owners: Sequence[Tensor], device: torch.device
    ) -> Tensor:
        key = (*map(id, params), -1, *map(id, owners))
        if self._rows is None or self._rows[0] != key:
            index = {id(p): i for i, p in enumerate(params)}
            self._rows = (key, torch.tensor([index[id(p)] for p in owners], device=device))
        return self._rows[1]


def _squared_norms(tensors: Sequence[Tensor], device: torch.device) -> Tensor:
    # Complex entries count both parts, as the noise does.
    norms = torch._foreach_norm(list(tensors))
    return torch.stack(norms).to(device, torch.float64).square()


def ratio_point(
    meter: RatioMeter | None, layers: Sequence[Sequence[int]], member: int = 0
) -> dict[str, float | list[float]]:
    """The epoch's ratios as a curve point's entries (none when nothing was sampled)."""
    return member_ratios(meter.take(layers) if meter is not None else None, member)


def member_ratios(
    taken: tuple[list[float], list[list[float]]] | None, member: int
) -> dict[str, float | list[float]]:
    """One member's entries of what ``RatioMeter.take`` gave (none for None)."""
    if taken is None:
        return {}
    whole, per_layer = taken
    return {RATIO_KEY: whole[member], RATIO_LAYERS_KEY: [layer[member] for layer in per_layer]}
