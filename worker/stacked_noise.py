"""Annealed gradient noise for K stacked models, each with its own eta, gamma, step and seed.

A stack holds K models of one architecture as tensors whose first dimension indexes the
member: ``W[k]`` is member k's weight. ``StackedGradientNoise`` adds to member k's gradients
exactly what ``GradientNoise(optimizer, eta_k, gamma_k, seed=seed_k)`` would add to the same
model trained alone: one flat draw per step over the member's entries of every parameter, in
parameter order, from a generator seeded the way ``GradientNoise`` seeds its own. That is what
lets a stacked member reproduce its lone run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from search_spaces.schedules import NoiseSchedule, PolynomialSchedule
from worker.noise_buckets import device_seed
from worker.noise_ratio import RatioMeter

__all__ = ["StackedGradientNoise"]


def _per_member(name: str, values: Sequence[float] | Tensor, k: int) -> list[float]:
    items = values.tolist() if isinstance(values, Tensor) else list(values)
    if len(items) != k:
        raise ValueError(f"{name} needs one value per member ({k}), got {len(items)}")
    return [float(v) for v in items]


class StackedGradientNoise:
    """Per-member ``N(0, eta_k / (1 + t_k)^gamma_k)`` noise for stacked gradients.

    Contract:

    - ``params`` are the stacked tensors (``params[i].shape == (K, *member_shape_i)``), all
      real floating point on one device. ``eta``, ``gamma`` and ``seeds`` give one value per
      member (sequences or 1-d tensors of length K).
    - ``add_to(grads)`` adds member k's noise for its step ``t_k`` to ``grads[i][k]`` for
      every i, then advances every member's step. Call it once per optimizer step, after
      clipping and before the update, as ``GradientNoise.step`` does.
    - Member k's draws equal ``GradientNoise(seed=seeds[k])``'s on the same parameter
      shapes: one ``normal_`` per step and dtype, over the member's entries in parameter
      order. A member whose sigma_t is 0 draws nothing and gets nothing added.
    - ``keep(index)`` drops the members not listed (and reorders the rest) when a stack is
      compacted; each member keeps its own generator and step.
    - ``schedules`` (one ``NoiseSchedule`` per member, any family or window) replaces the
      paper's schedule of ``eta``/``gamma``; ``relative[k]`` scales member k's noise of
      each tensor by that member's gradient RMS of it (GradientNoise's ``relative``, to
      rounding: the norms are batched).
    - ``member_state(k)`` / ``load_member_state(k, state)``: member k's step and generator,
      so that a member resumed from a checkpoint, in any stack, draws what it would have.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        eta: Sequence[float] | Tensor,
        gamma: Sequence[float] | Tensor,
        seeds: Sequence[int],
        *,
        schedules: Sequence[NoiseSchedule] | None = None,
        relative: Sequence[bool] | None = None,
        ratio_every: int | None = None,
    ) -> None:
        params = list(params)
        if not params:
            raise ValueError("StackedGradientNoise needs at least one stacked parameter")
        k = params[0].shape[0] if params[0].dim() else 0
        if k < 1 or any(p.dim() < 1 or p.shape[0] != k for p in params):
            raise ValueError("every stacked parameter needs the same leading member dimension K")
        device = params[0].device
        for p in params:
            if p.device != device or not p.dtype.is_floating_point:
                raise ValueError(
                    f"stacked parameters must be real floating point on one device, got "
                    f"{p.dtype} on {p.device} beside {device}"
                )
        etas, gammas = _per_member("eta", eta, k), _per_member("gamma", gamma, k)
        if len(seeds) != k:
            raise ValueError(f"seeds needs one value per member ({k}), got {len(seeds)}")
        if schedules is None:
            # PolynomialSchedule validates eta and gamma and is GradientNoise's own formula.
            schedules = [PolynomialSchedule(e, g) for e, g in zip(etas, gammas, strict=True)]
        if len(schedules) != k or not all(isinstance(s, NoiseSchedule) for s in schedules):
            raise ValueError(f"schedules needs one NoiseSchedule per member ({k})")
        self.schedules = list(schedules)
        self.relative = [bool(r) for r in relative] if relative is not None else [False] * k
        # Noise-to-gradient ratios, sampled as GradientNoise's (one column per member).
        self.ratios = RatioMeter(ratio_every) if ratio_every is not None else None
        if len(self.relative) != k:
            raise ValueError(f"relative needs one value per member ({k}), got {len(self.relative)}")
        self.seeds = [int(s) for s in seeds]
        self.t = [0] * k
        self.device = device
        self.generators = []
        for seed in self.seeds:
            generator = torch.Generator(device=device)
            generator.manual_seed(device_seed(seed, device))
            self.generators.append(generator)
        # One bucket per dtype, in order of first appearance, as GradientNoise groups them.
        self._groups: dict[torch.dtype, list[int]] = {}
        for i, p in enumerate(params):
            self._groups.setdefault(p.dtype, []).append(i)
        self._shapes = [p.shape[1:] for p in params]
        self._buffers: dict[torch.dtype, Tensor] = {}
        self._views: list[Tensor] = [torch.empty(0)] * len(params)
        self._allocate(k)

    @property
    def k(self) -> int:
        return len(self.seeds)

    def _allocate(self, k: int) -> None:
        for dtype, indices in self._groups.items():
            numels = [math.prod(self._shapes[i]) for i in indices]
            buffer = torch.empty(k, sum(numels), dtype=dtype, device=self.device)
            self._buffers[dtype] = buffer
            for i, part in zip(indices, buffer.split(numels, dim=1), strict=True):
                self._views[i] = part.view(k, *self._shapes[i])

    def std(self) -> list[float]:
        """Each member's noise std at its current step."""
        return [math.sqrt(s.variance_at(t)) for s, t in zip(self.schedules, self.t, strict=True)]

    @torch.no_grad()
    def add_to(self, grads: Sequence[Tensor]) -> None:
        if len(grads) != len(self._views):
            raise ValueError(f"expected {len(self._views)} gradients, got {len(grads)}")
        stds = self.std()
        if any(stds):
            for buffer in self._buffers.values():
                for k, std in enumerate(stds):
                    if std == 0.0:
                        buffer[k].zero_()
                    else:
                        buffer[k].normal_(0.0, std, generator=self.generators[k])
            if any(self.relative):
                self._scale_by_rms(grads)
        if self.ratios is not None and self.k and self.ratios.due(self.t[0]):
            self._sample_ratio(grads, noisy=any(stds))
        if any(stds):
            # A plain add, as GradientNoise's: noise enters each entry with one rounding.
            torch._foreach_add_(list(grads), self._views)
        self.t = [t + 1 for t in self.t]

    def _sample_ratio(self, grads: Sequence[Tensor], noisy: bool) -> None:
        """Squared norms of each member's noise and gradient per parameter: (P, K) each."""
        assert self.ratios is not None

        def squares(tensors: Sequence[Tensor]) -> Tensor:
            norms = [torch.linalg.vector_norm(t.flatten(1), dim=1) for t in tensors]
            return torch.stack(norms).double().square()

        grad_sq = squares(grads)
        noise_sq = squares(self._views) if noisy else torch.zeros_like(grad_sq)
        self.ratios.add(noise_sq, grad_sq)

    def _scale_by_rms(self, grads: Sequence[Tensor]) -> None:
        """The ``relative`` members' noise times their own gradient's RMS, per tensor."""
        relative = torch.tensor(self.relative, device=self.device)
        for grad, noise, shape in zip(grads, self._views, self._shapes, strict=True):
            rms = torch.linalg.vector_norm(grad.flatten(1), dim=1) / math.sqrt(math.prod(shape))
            factor = torch.where(relative, rms, torch.ones_like(rms))
            noise.mul_(factor.view(-1, *[1] * (noise.dim() - 1)))

    def keep(self, index: Sequence[int]) -> None:
        index = list(index)
        self.relative = [self.relative[i] for i in index]
        if self.ratios is not None:
            self.ratios.keep(index)
        self.schedules = [self.schedules[i] for i in index]
        self.seeds = [self.seeds[i] for i in index]
        self.t = [self.t[i] for i in index]
        self.generators = [self.generators[i] for i in index]
        self._allocate(len(index))

    def member_state(self, k: int) -> dict[str, Any]:
        """Member k's step and generator, for its checkpoint."""
        return {"t": self.t[k], "generator": self.generators[k].get_state()}

    def load_member_state(self, k: int, state: dict[str, Any]) -> None:
        """Continue member k from ``member_state``'s output (its schedule stays its own)."""
        self.t[k] = int(state["t"])
        self.generators[k].set_state(state["generator"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(k={self.k}, schedules={self.schedules}, t={self.t})"
