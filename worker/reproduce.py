"""Claim 1 of the paper, measured: a 20-layer ReLU MLP from a poor init trains only with noise.

Runs the deep_mlp task on scikit-learn's digits (20 x 50 ReLU, "simple" init N(0, 0.1^2) or
"zero", plain SGD lr 0.03, batch 128, no clipping) for each eta and seed, in a pool of
processes with one torch thread each (the networks are too small to gain from more), and
summarises validation accuracy per eta as the paper's Table 1 does: runs, best, mean (with
its 95% interval here) and success rates (with Wilson intervals). Every eta trains the same
seeds, so each eta is also compared with eta 0 seed by seed (a paired t-test).
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from search_spaces.schedules import DEFAULT_GAMMA
from search_spaces.statistics import paired_comparison, summarize_values, wilson_interval

PAPER_ETAS = (0.0, 0.01, 0.3, 1.0)
PAPER_GAMMA = DEFAULT_GAMMA
PAPER_CONFIG: dict[str, Any] = {
    "dataset": "digits",
    "depth": 20,
    "width": 50,
    "activation": "relu",
    "init": "simple",  # --init zero: the paper's other poor initialisation
    "optimizer": "sgd",
    "lr": 0.03,
    "batch_size": 128,
    "clip": None,
}


@dataclass(frozen=True)
class RunResult:
    eta: float
    seed: int
    val_accuracy: float
    diverged: bool
    seconds: float


# Validation accuracy a run must reach to count as a success (chance is about 10%).
SUCCESS_THRESHOLDS = (0.5, 0.9)


@dataclass(frozen=True)
class EtaSummary:
    eta: float
    runs: int
    mean: float
    interval: tuple[float, float] | None  # 95% t interval of the mean
    std: float
    best: float
    worst: float
    successes: tuple[int, ...]  # runs at or above each of SUCCESS_THRESHOLDS
    diverged: int
    seconds: float  # summed over this eta's runs, each on one thread


def run_one(eta: float, seed: int, epochs: int, init: str = "simple") -> RunResult:
    from worker.tasks.deep_mlp import train

    start = time.perf_counter()  # after the import: time the training only
    config = {**PAPER_CONFIG, "epochs": epochs, "seed": seed, "init": init}
    result = train(config, eta=eta, gamma=PAPER_GAMMA)
    return RunResult(
        eta, seed, result["val_accuracy"], result["diverged"], time.perf_counter() - start
    )


def _init_pool_process() -> None:
    import torch

    from worker.data import load_digits_split

    # Each process trains one small network; more threads only contend for the cores.
    torch.set_num_threads(1)
    # Pay the one-time costs outside the timed runs: sklearn and the digits, and the lazy
    # import (seconds) that torch's first optimizer triggers.
    load_digits_split(0.5, 0)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def run_all(
    *,
    seeds: int,
    epochs: int,
    workers: int,
    etas: Sequence[float] = PAPER_ETAS,
    init: str = "simple",
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Train every (eta, seed) pair; ``workers`` <= 1 trains in this process."""
    jobs = [(eta, seed) for seed in range(seeds) for eta in etas]
    results: list[RunResult] = []
    if workers <= 1:
        for eta, seed in jobs:
            results.append(run_one(eta, seed, epochs, init))
            if on_result is not None:
                on_result(results[-1])
        return results
    # spawn: a forked child would inherit torch's thread pool state from the parent.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_pool_process) as pool:
        futures = [pool.submit(run_one, eta, seed, epochs, init) for eta, seed in jobs]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                if on_result is not None:
                    on_result(results[-1])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return sorted(results, key=lambda r: (r.eta, r.seed))


def summarize(results: Sequence[RunResult]) -> list[EtaSummary]:
    """One row per eta. A diverged run counts as a run and as a failure; its accuracy (the
    last epoch's, usually chance) counts in the mean as measured."""
    rows = []
    for eta in sorted({r.eta for r in results}):
        accs = [r.val_accuracy for r in results if r.eta == eta]
        finite = [a for a in accs if math.isfinite(a)] or [math.nan]
        summary = summarize_values(finite)
        rows.append(
            EtaSummary(
                eta=eta,
                runs=len(accs),
                mean=statistics.fmean(finite),
                interval=summary.interval,
                std=statistics.pstdev(finite) if len(finite) > 1 else 0.0,
                best=max(finite),
                worst=min(finite),
                successes=tuple(
                    sum(r.val_accuracy >= t and not r.diverged for r in results if r.eta == eta)
                    for t in SUCCESS_THRESHOLDS
                ),
                diverged=sum(r.diverged for r in results if r.eta == eta),
                seconds=sum(r.seconds for r in results if r.eta == eta),
            )
        )
    return rows


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _span(bounds: tuple[float, float] | None) -> str:
    """An interval of accuracies in percent, ``low-high``, within 0-100 where a t interval
    reaches past them (n/a when there is none)."""
    if bounds is None:
        return "n/a"
    return f"{_pct(max(bounds[0], 0.0))}-{_pct(min(bounds[1], 1.0))}"


def _rate(successes: int, runs: int) -> str:
    """``k/n`` and the Wilson 95% interval of the rate, in whole percent."""
    bounds = wilson_interval(successes, runs)
    shown = "" if bounds is None else f" {100 * bounds[0]:.0f}-{100 * bounds[1]:.0f}"
    return f"{successes}/{runs}{shown}"


def render_table(rows: Sequence[EtaSummary], *, epochs: int, init: str = "simple") -> Any:
    """A rich table, one line per eta (eta first), accuracies in percent; it fits in 80
    columns."""
    from rich import box
    from rich.table import Table

    init_text = "N(0,0.1^2) init" if init == "simple" else f"{init} init"
    table = Table(
        title=f"digits, 20x50 ReLU, {init_text}, SGD lr 0.03, {epochs} epochs",
        caption="validation accuracy in %; runs reaching 50% and 90%, each with its 95%\n"
        "interval (t for the mean, Wilson for a rate)",
        box=box.SIMPLE,
        pad_edge=False,
        collapse_padding=True,
    )
    columns = ["eta", "runs", "mean", "95% CI", "best", "worst"]
    columns += [f">={100 * t:g}%" for t in SUCCESS_THRESHOLDS]
    for name in [*columns, "diverged"]:
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            f"{r.eta:g}",
            str(r.runs),
            _pct(r.mean),
            _span(r.interval),
            _pct(r.best),
            _pct(r.worst),
            *(_rate(k, r.runs) for k in r.successes),
            str(r.diverged),
        )
    return table


def paired_lines(results: Sequence[RunResult]) -> list[str]:
    """Each noisy eta against eta 0 on the seeds both ran: the mean paired difference in
    accuracy with its 95% interval and the paired t-test's p-value."""
    by_eta: dict[float, dict[int, float]] = {}
    for r in results:
        if math.isfinite(r.val_accuracy):
            by_eta.setdefault(r.eta, {})[r.seed] = r.val_accuracy
    base = by_eta.get(0.0)
    if base is None:
        return []
    lines = []
    for eta in sorted(e for e in by_eta if e != 0.0):
        c = paired_comparison(by_eta[eta], base)
        if c.mean_difference is None:
            continue
        interval = (
            ""
            if c.interval is None
            else f" [{100 * c.interval[0]:+.1f}, {100 * c.interval[1]:+.1f}]"
        )
        p = "n/a (no spread)" if c.p_value is None else f"{c.p_value:.2g}"
        lines.append(
            f"eta={eta:g} vs eta=0, same seeds: {100 * c.mean_difference:+.1f} points{interval}, "
            f"paired t-test p = {p} ({c.pairs} pairs)"
        )
    return lines


def few_runs_note(rows: Sequence[EtaSummary]) -> str | None:
    """A warning when the intervals rest on few runs (the paper averages 40)."""
    fewest = min((r.runs for r in rows), default=0)
    if fewest >= 20:
        return None
    return (
        f"note: {fewest} runs per eta; the intervals above are that wide for that reason "
        "(--seeds 40 for the paper's count)"
    )


def verdict(rows: Sequence[EtaSummary]) -> str:
    """One line comparing the no-noise runs with the best noisy eta."""
    base = next((r for r in rows if r.eta == 0.0), None)
    noisy = [r for r in rows if r.eta > 0.0]
    if base is None or not noisy:
        return "verdict: needs eta = 0 and at least one eta > 0 to compare"
    best = max(noisy, key=lambda r: r.mean)
    holds = base.mean < 0.2 and best.mean > base.mean + 0.3
    return (
        f"verdict: no noise {100 * base.mean:.1f}% mean (chance is ~10%), "
        f"eta={best.eta:g} {100 * best.mean:.1f}% mean -> claim 1 "
        + ("reproduced" if holds else "NOT reproduced")
    )
