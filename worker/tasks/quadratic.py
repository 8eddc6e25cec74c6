"""A cheap stand-in for training: a smooth bowl in (log10 eta, gamma), no model.

Pure Python (no torch) and instant: tests and demos of the search machinery use it. (A
worker process imports torch all the same, for its stacking code: the worker's commands
need the ``worker`` extra whatever the task.) The minimum is at eta = 0.3, gamma = 0.55::

    final = (log10(eta + 1e-3) - log10(0.3 + 1e-3))**2 + (gamma - 0.55)**2 + jitter

where ``jitter`` is a tiny (<= 1e-3) constant drawn from (seed, eta, gamma), so repeats
with different seeds differ a little but any one run is exactly reproducible. Epoch e of
E reports ``final + 1/e - 1/E``: a decreasing learning curve that ends at ``final`` and
keeps the order of runs at every epoch (what a pruner compares).
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from search_spaces import QUADRATIC, QuadraticConfig, derived_seed
from worker.tasks.base import Report, check_noise, final_result, validate

BEST_ETA = 0.3
BEST_GAMMA = 0.55
JITTER = 1e-3


def objective(eta: float, gamma: float, seed: int = 0) -> float:
    """The final loss of a run with these noise parameters (the bowl plus its jitter)."""
    bowl = (math.log10(eta + 1e-3) - math.log10(BEST_ETA + 1e-3)) ** 2 + (gamma - BEST_GAMMA) ** 2
    jitter = JITTER * random.Random(derived_seed(seed, "quadratic", eta, gamma)).random()
    return bowl + jitter


def train(
    config: dict[str, Any],
    *,
    eta: float,
    gamma: float,
    device: str = "cpu",
    report: Report | None = None,
    progress: bool = False,
    noise: Any = None,
) -> dict[str, Any]:
    """Report the bowl's curve once per epoch (sleeping ``sleep_s`` each); see module doc.

    ``device`` and ``progress`` are accepted for the common trainer signature and ignored,
    and so is ``noise``: the bowl depends on eta and gamma alone, whatever the schedule
    family, so that searches over schedules can be tried and tested at no cost.
    """
    cfg = validate(QUADRATIC, config)
    assert isinstance(cfg, QuadraticConfig)
    eta, gamma = check_noise(eta, gamma)

    if (cfg.diverge_eta is not None and eta >= cfg.diverge_eta) or cfg.seed in cfg.diverge_seeds:
        # Like a real run whose loss blew up: one epoch, a NaN loss, flagged as diverged.
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
        nan = {"loss": float("nan")}
        if report is not None:
            report(1, {**nan, "steps": 1})
        return final_result(nan, steps=1, epochs=1, diverged=True)

    final = objective(eta, gamma, cfg.seed)
    loss = final
    for epoch in range(1, cfg.epochs + 1):
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
        loss = final + (1.0 / epoch - 1.0 / cfg.epochs)  # exactly final at the last epoch
        if report is not None:
            report(epoch, {"loss": loss, "steps": epoch})
    return final_result({"loss": loss}, steps=cfg.epochs, epochs=cfg.epochs, diverged=False)
