"""Samplers and pruners rebuilt from a study spec (Optuna does not persist them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from search_spaces._grid import PointGridSampler, grid_points
from search_spaces._params import grid_of
from search_spaces._seeds import derived_seed

if TYPE_CHECKING:
    from search_spaces._study_spec import StudySpec


def build_sampler(spec: StudySpec, trial_number: int) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded for the trial about to be asked.

    With a spec seed the sampler is reseeded from (seed, trial number): one worker replays the
    same study, while workers that share the seed still draw different parameters because each
    asks for a different trial number.
    """
    s = spec.sampler
    seed = None if s.seed is None else derived_seed(s.seed, trial_number)
    # A new spec's options were checked and typed by their model (_optimizer_options); a
    # stored spec's are passed as stored, and Optuna's TypeError is reported below.
    options: dict[str, Any] = dict(s.options)
    try:
        if s.type == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **options)
        if s.type == "random":
            return optuna.samplers.RandomSampler(seed=seed, **options)
        if s.type == "grid":
            # The grid sampler walks the grid by itself; its seed only shuffles the order.
            grid_seed = None if s.seed is None else s.seed
            space = spec.space
            if space.conditional:  # only the distinct points, not the full product
                return PointGridSampler(grid_points(space), seed=grid_seed)
            return optuna.samplers.GridSampler(grid_of(space), seed=grid_seed, **options)
        if s.type == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, **options)
        if s.type == "gp":
            return optuna.samplers.GPSampler(seed=seed, **options)
        if s.type == "qmc":
            # QMC walks one low-discrepancy sequence; reseeding it per trial would break it.
            qmc_seed = None if s.seed is None else s.seed
            return optuna.samplers.QMCSampler(seed=qmc_seed, **options)
    except TypeError as exc:
        raise ValueError(f"sampler {s.type!r}: bad option ({exc})") from None
    raise ValueError(f"unknown sampler type {s.type!r}")


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    try:
        if p.type == "none":
            return optuna.pruners.NopPruner(**p.options)
        if p.type == "median":
            options = {"n_startup_trials": 5, "n_warmup_steps": 2, **p.options}
            return optuna.pruners.MedianPruner(**options)
        if p.type == "hyperband":
            return optuna.pruners.HyperbandPruner(**p.options)
        if p.type == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**p.options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pruner {p.type!r}: bad option ({exc})") from None
    raise ValueError(f"unknown pruner type {p.type!r}")
