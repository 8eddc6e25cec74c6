"""Annealed Gaussian gradient noise as an optimizer wrapper (Neelakantan et al., 2015).

``GradientNoise`` adds ``N(0, sigma_t^2)`` with ``sigma_t^2 = eta / (1 + t)^gamma`` to every
gradient entry right before the wrapped optimizer's update. Only torch is imported here, so
a worker can use it without the service's dependencies.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast, overload

import torch
from torch import Tensor
from torch.optim import Optimizer

from search_spaces.schedules import (
    DEFAULT_GAMMA,
    SCHEDULE_KINDS,
    ConstantSchedule,
    NoiseSchedule,
    PolynomialSchedule,
    make_schedule,
)
from worker.noise_buckets import Bucket, device_seed
from worker.noise_ratio import ParamNorms, RatioMeter

__all__ = [
    "SCHEDULE_KINDS",
    "ConstantSchedule",
    "GradientNoise",
    "NoiseSchedule",
    "PolynomialSchedule",
    "make_schedule",
]

SCALES = ("absolute", "relative")
PLACEMENTS = ("after_clip", "before_clip")

# Key under which the noise state rides along in the wrapped optimizer's state_dict, so the
# checkpoint keeps the "state"/"param_groups" layout that checkpoint tools expect.
STATE_KEY = "gradient_noise"


class GradientNoise(Optimizer):
    """Wrap an optimizer so each step adds annealed Gaussian noise to the gradients.

    Contract:

    - ``step()`` adds independent ``N(0, sigma_t^2)`` noise to every entry of every ``.grad``
      (parameters whose ``.grad`` is None are skipped), then calls the wrapped optimizer's
      ``step()`` and returns its result. ``sigma_t^2 = schedule.variance(t)``; by default
      ``PolynomialSchedule(eta, gamma)``: ``sigma_t^2 = eta / (1 + t)^gamma``, where ``eta``
      is a *variance* (std = sqrt(eta / (1 + t)^gamma)). ``t`` is the number of optimizer
      steps taken so far: the first step uses ``t = 0``, i.e. ``sigma_0^2 = eta``.
    - Where sigma_t is 0 (e.g. ``eta=0``) nothing is drawn: results are bit-identical to
      the bare optimizer.
    - Noise goes in after anything done to the gradients before ``step()``: AMP unscaling
      (``scaler.step(noisy)`` unscales first and skips steps with inf/NaN gradients, which
      then neither advance ``t`` nor consume random numbers) and clipping. With a closure,
      noise is added after each evaluation of the closure, with the step's sigma_t.
    - ``param_groups``, ``state`` and ``defaults`` are the wrapped optimizer's own objects,
      so LR schedulers, GradScaler and ``zero_grad`` act on the wrapped optimizer. Pass the
      wrapper (not ``.optimizer``) to ``scaler.unscale_``/``scaler.step``/schedulers. The
      wrapper never claims ``_step_supports_amp_scaling``, so GradScaler unscales before
      ``step()`` even when the wrapped optimizer is a fused one.
    - Reproducible: a private ``torch.Generator`` per device, seeded from ``seed`` (drawn
      from torch's default generator when None, so ``torch.manual_seed`` fixes it).
      ``state_dict()`` is the wrapped optimizer's plus a ``"gradient_noise"`` entry (step
      count, seed, generator states); a run resumed from it continues bit-identically.
    - One draw per (device, dtype) of the gradients per step. ``foreach=True`` adds it with
      ``torch._foreach_add_``, ``foreach=False`` tensor by tensor; both use the same random
      numbers and give identical results. ``None`` picks foreach for dense plain tensors.
      Sparse gradients raise RuntimeError. The draw goes into a buffer kept between steps:
      one extra gradient-sized tensor per (device, dtype).

    Args:
        optimizer: the optimizer to wrap; it keeps doing the update.
        eta: noise variance at t = 0 (>= 0, finite); required unless ``schedule`` is given.
        gamma: decay exponent (>= 0, finite), the paper's 0.55 by default.
        seed: seeds the private generators; None draws one from torch's default generator
            (one draw, which advances it). ``load_state_dict`` restores the saved seed and
            generator states, overriding this.
        foreach: True/False force the multi-tensor/per-tensor path; None picks.
        schedule: any :class:`NoiseSchedule`, instead of ``eta``/``gamma``
            (``make_schedule`` builds the families and windows).
        scale: ``"absolute"`` (the paper: std sigma_t) or ``"relative"`` (each tensor's
            noise std is sigma_t times that tensor's gradient RMS at that step).
        max_grad_norm: clip the gradients' total 2-norm to this (``clip_grad_norm_``)
            inside ``step()``, on the side of the noise that ``placement`` says:
            ``"after_clip"`` (the paper: clip, then add noise) or ``"before_clip"`` (add
            noise to the raw gradients, then clip them together). A task that clips
            passes its threshold here rather than clipping before ``step()`` itself.
        ratio_every: every this many steps, note the norms of each parameter's noise and
            gradient in ``ratios`` (a ``worker.noise_ratio.RatioMeter``; None: never).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        eta: float | None = None,
        gamma: float = DEFAULT_GAMMA,
        *,
        seed: int | None = None,
        foreach: bool | None = None,
        schedule: NoiseSchedule | None = None,
        scale: str = "absolute",
        max_grad_norm: float | None = None,
        placement: str = "after_clip",
        ratio_every: int | None = None,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        if isinstance(optimizer, GradientNoise):
            raise TypeError("optimizer is already a GradientNoise; wrapping twice adds noise twice")
        if schedule is None:
            if eta is None:
                raise TypeError("GradientNoise needs eta (the noise variance) or a schedule")
            schedule = PolynomialSchedule(eta, gamma)
        elif eta is not None:
            raise ValueError(f"pass either eta={eta!r} or schedule={schedule!r}, not both")
        elif not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {schedule!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        if max_grad_norm is not None and not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
            raise ValueError(f"max_grad_norm must be > 0 and finite, got {max_grad_norm!r}")
        if foreach not in (None, True, False):
            raise ValueError(f"foreach must be None, True or False, got foreach={foreach!r}")
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64).item())
        elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int or None, got seed={seed!r}")

        # Optimizer.__init__ is deliberately not called: it would copy the param groups,
        # and LR schedulers must change the wrapped optimizer's groups, not a copy.
        self.optimizer = optimizer
        self._schedule = schedule
        self._seed = int(seed)
        self._foreach = foreach
        self._scale, self._placement, self._max_grad_norm = scale, placement, max_grad_norm
        self.ratios = RatioMeter(ratio_every) if ratio_every is not None else None
        self._norms = ParamNorms()
        self._t = 0
        self._generators: dict[torch.device, torch.Generator] = {}
        self._cache_key: tuple[int, ...] | None = None
        self._buckets: list[Bucket] = []
        self._init_hooks()

    def _init_hooks(self) -> None:
        # What Optimizer.__init__ would have set up: hook registries that
        # register_step_pre_hook & co. write into, and the step wrapper that runs them.
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

    # -- the wrapped optimizer's objects, shared rather than copied ----------------------

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property  # type: ignore[override]
    def state(self) -> Any:
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    # -- noise ----------------------------------------------------------------------------

    @property
    def schedule(self) -> NoiseSchedule:
        return self._schedule

    @property
    def t(self) -> int:
        """Optimizer steps taken so far; the next step's noise has variance variance(t)."""
        return self._t

    @property
    def seed(self) -> int:
        return self._seed

    def _generator(self, device: torch.device) -> torch.Generator:
        generator = self._generators.get(device)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(device_seed(self._seed, device))
            self._generators[device] = generator
        return generator

    def _build_buckets(self, params: list[Tensor]) -> list[Bucket]:
        groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for param in params:
            grad = cast(Tensor, param.grad)
            if grad.layout != torch.strided:
                raise RuntimeError(
                    f"GradientNoise does not support {grad.layout} gradients (parameter of "
                    f"shape {tuple(param.shape)}): dense noise would make them dense"
                )
            groups.setdefault((grad.device, grad.dtype), []).append(param)
        buckets = []
        for (device, dtype), group in groups.items():
            foreach = self._foreach
            if foreach is None:
                # Tensor subclasses (e.g. DTensor) may lack foreach kernels.
                foreach = all(type(p.grad) is Tensor for p in group)
            buckets.append(Bucket(group, dtype, device, self._generator(device), foreach))
        return buckets

    @torch.no_grad()
    def _add_noise(self) -> None:
        std = math.sqrt(self._schedule.variance_at(self._t))
        sample = self.ratios is not None and self.ratios.due(self._t)
        if std == 0.0:
            if sample:
                self._sample_ratio([])
            return
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        # The cache holds the params, so their ids cannot be reused while it lives.
        key = tuple(map(id, params))
        if key != self._cache_key:
            self._buckets = self._build_buckets(params)
            self._cache_key = key
        for bucket in self._buckets:
            bucket.draw(std)
            if self._scale == "relative":
                bucket.scale_by_rms()
        if sample:
            self._sample_ratio(self._buckets)
        for bucket in self._buckets:
            bucket.add_to_grads()

    def _sample_ratio(self, buckets: list[Bucket]) -> None:
        """Note each parameter's noise and gradient norms (before the noise joins it)."""
        assert self.ratios is not None
        params = [p for group in self.param_groups for p in group["params"]]
        if buckets:  # the step's own buckets: its gradients and its noise, one norm each
            owners = [p for bucket in buckets for p in bucket.params]
            grads = [g for bucket in buckets for g in bucket.grads()]
            noise = [n for bucket in buckets for n in bucket.views]
        else:  # no noise this step: the gradients alone
            owners = [p for p in params if p.grad is not None]
            grads, noise = [cast(Tensor, p.grad) for p in owners], []
        self._norms.sample(self.ratios, params, owners, grads, noise)

    def _clip(self) -> None:
        if self._max_grad_norm is not None:
            params = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self._max_grad_norm)

    def _prepare_grads(self) -> None:
        """Clip and add noise, in the order ``placement`` says."""
        if self._placement == "before_clip":
            self._add_noise()
            self._clip()
        else:
            self._clip()
            self._add_noise()

    @overload
    def step(self, closure: None = None) -> None: ...
    @overload
    def step(self, closure: Callable[[], float]) -> float: ...
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Add noise with variance ``schedule.variance(t)`` to the gradients, then step."""
        if closure is None:
            self._prepare_grads()
            loss = self.optimizer.step()
        else:

            def noisy_closure() -> float:
                closure_loss = closure()
                self._prepare_grads()
                return closure_loss

            loss = self.optimizer.step(noisy_closure)
        self._t += 1
        return loss

    # -- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state_dict = self.optimizer.state_dict()
        state_dict[STATE_KEY] = {
            "t": self._t,
            "seed": self._seed,
            "generators": {str(d): g.get_state() for d, g in self._generators.items()},
        }
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            hook_result = post_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            hook_result = pre_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        state_dict = dict(state_dict)
        noise = state_dict.pop(STATE_KEY, None)
        if noise is None:
            raise ValueError(
                f"state_dict has no {STATE_KEY!r} entry (saved from a bare optimizer?); "
                "load it with .optimizer.load_state_dict() to start the noise at t=0"
            )
        t = noise["t"]
        if isinstance(t, bool) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(f"{STATE_KEY}.t must be an int >= 0, got t={t!r}")
        seed = int(noise["seed"])
        generators = {}
        for name, generator_state in noise["generators"].items():
            device = torch.device(name)
            generator = torch.Generator(device=device)
            # torch.load(map_location=...) may have moved the state; generators want it on CPU.
            generator.set_state(generator_state.cpu())
            generators[device] = generator
        # Everything is validated before anything is changed, so a bad dict changes nothing.
        self.optimizer.load_state_dict(state_dict)
        self._t, self._seed, self._generators = int(t), seed, generators
        self._cache_key, self._buckets = None, []
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    # -- plumbing -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Optimizer.__getstate__ only knows defaults/state/param_groups. Skip the cache (it is
        # rebuilt on the next step), the step an LR scheduler may have patched in, and the
        # hooks, which Optimizer drops too.
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in {"step", "_cache_key", "_buckets"} and not k.startswith("_optimizer_")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache_key, self._buckets = None, []
        self._init_hooks()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._schedule!r}, seed={self._seed}, t={self._t}, "
            f"optimizer={self.optimizer!r})"
        )
