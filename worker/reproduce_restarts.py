"""Claim 2 of the paper, the restart experiment: more restarts of a Neural GPU learn
binary arithmetic with gradient noise than without.

The paper trained 7,290 restarts of a Neural GPU on binary multiplication with and without
noise (eta 1.0, gamma 0.55, added after clipping) and counted those whose test error fell
below 1, 2, 3 and 5%. Here N restarts (seeds 0..N-1) of the binary_arith task train at a
scale this machine affords (``RESTARTS_CONFIG``: addition, trained on short numbers and
tested on longer ones), each seed once per arm; the two arms share the seed's data and
initial weights and differ only in the noise. They train stacked, up to ``STACK_SIZE``
restarts per stack and one stack per process at a time, so hundreds of restarts cost far
less than hundreds of runs.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from search_spaces.schedules import DEFAULT_GAMMA
from search_spaces.statistics import wilson_interval

PAPER_ETA, PAPER_GAMMA = 1.0, DEFAULT_GAMMA
THRESHOLDS = (0.01, 0.02, 0.03, 0.05)
# The paper's Neural GPU on multiplication: successes without and with noise, of 7,290.
PAPER_RESTARTS = 7290
PAPER_SUCCESSES = {0.01: (28, 58), 0.02: (90, 159), 0.03: (172, 282), 0.05: (387, 570)}
DEFAULT_RESTARTS = 100
# The most restarts trained as one stack: bounds memory (tens of MB here); fewer when
# that spreads the restarts evenly over the processes.
STACK_SIZE = 100
# The scale, chosen by measurement (README, "The restart experiment"): the no-noise arm
# passes on some seeds and not on others, and both arms of 100 restarts fit in minutes on
# two CPU cores.
RESTARTS_CONFIG: dict[str, Any] = {
    "operation": "addition",
    "train_bits": 8,
    "test_bits": 16,
    "width": 1,
    "channels": 8,
    "optimizer": "adam",
    "lr": 0.01,
    "batch_size": 16,
    "steps_per_epoch": 75,
    "epochs": 8,
    "clip": 10.0,
    "loss": "sum",
    "test_size": 128,
}


@dataclass(frozen=True)
class Restart:
    """One restart's outcome in one arm."""

    seed: int
    eta: float
    test_error: float  # NaN when it diverged
    diverged: bool


@dataclass(frozen=True)
class ThresholdRow:
    """Successes (test error below ``threshold``) of each arm, with Wilson intervals."""

    threshold: float
    restarts: int
    without: int
    with_noise: int
    without_interval: tuple[float, float] | None
    with_interval: tuple[float, float] | None
    paper_without: int
    paper_with: int

    @property
    def ratio(self) -> float:
        """Successes with noise over those without (inf: only the noise arm passed; NaN:
        neither did)."""
        if self.without == 0:
            return math.inf if self.with_noise else math.nan
        return self.with_noise / self.without


def train_chunk(
    jobs: Sequence[tuple[int, float]], config: dict[str, Any], gamma: float, device: str
) -> list[Restart]:
    """Train the (seed, eta) jobs as one stack."""
    from worker.stacked import StackMember
    from worker.tasks.binary_arith_stacked import train_stacked

    members = [StackMember({**config, "seed": seed}, eta, gamma) for seed, eta in jobs]
    outcomes = []
    for (seed, eta), result in zip(jobs, train_stacked(members, device=device), strict=True):
        if isinstance(result, BaseException):
            raise result
        outcomes.append(Restart(seed, eta, float(result["test_error"]), bool(result["diverged"])))
    return outcomes


def _init_pool_process() -> None:
    import torch

    # Each process trains its own stacks; more threads only contend for the cores.
    torch.set_num_threads(1)


def run_restarts(
    restarts: int,
    *,
    config: dict[str, Any] | None = None,
    eta: float = PAPER_ETA,
    gamma: float = PAPER_GAMMA,
    stack_size: int = STACK_SIZE,
    workers: int = 1,
    device: str = "auto",
    on_done: Callable[[Restart], None] | None = None,
) -> list[Restart]:
    """Train seeds 0..restarts-1 without noise and with (eta, gamma), in stacks of at most
    ``stack_size``, spread over ``workers`` processes (one torch thread each; ``workers``
    <= 1 trains in this process, and so does a GPU). Outcomes in (seed, arm) order."""
    from worker.tasks.base import resolve_device

    if restarts < 1 or stack_size < 1:
        raise ValueError(f"need restarts >= 1 and stack_size >= 1, got {restarts}, {stack_size}")
    base = {**RESTARTS_CONFIG, **(config or {})}
    # Both arms of a seed side by side, so every stack holds as many of each.
    jobs = [(seed, e) for seed in range(restarts) for e in (0.0, eta)]
    dev = resolve_device(device)
    if dev != "cpu":
        workers = 1
    size = min(stack_size, math.ceil(len(jobs) / max(workers, 1)))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    outcomes: list[Restart] = []

    def collect(done: list[Restart]) -> None:
        outcomes.extend(done)
        for restart in done:
            if on_done is not None:
                on_done(restart)

    if workers <= 1 or len(chunks) == 1:
        for chunk in chunks:
            collect(train_chunk(chunk, base, gamma, dev))
        return outcomes
    # spawn: a forked child would inherit torch's thread pool state from the parent.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        min(workers, len(chunks)), mp_context=context, initializer=_init_pool_process
    ) as pool:
        futures = [pool.submit(train_chunk, chunk, base, gamma, dev) for chunk in chunks]
        try:
            for future in as_completed(futures):
                collect(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    order = {job: i for i, job in enumerate(jobs)}
    return sorted(outcomes, key=lambda r: order[(r.seed, r.eta)])


def summarize(
    outcomes: Sequence[Restart], thresholds: Sequence[float] = THRESHOLDS
) -> list[ThresholdRow]:
    """Per threshold, each arm's successes; a diverged restart never succeeds."""
    plain = [r for r in outcomes if r.eta == 0.0]
    noisy = [r for r in outcomes if r.eta != 0.0]
    if len(plain) != len(noisy):
        raise ValueError(f"arms differ in size: {len(plain)} without noise, {len(noisy)} with")
    rows = []
    for threshold in thresholds:
        without = sum(not r.diverged and r.test_error < threshold for r in plain)
        with_noise = sum(not r.diverged and r.test_error < threshold for r in noisy)
        paper = PAPER_SUCCESSES.get(threshold, (0, 0))
        rows.append(
            ThresholdRow(
                threshold=threshold,
                restarts=len(plain),
                without=without,
                with_noise=with_noise,
                without_interval=wilson_interval(without, len(plain)),
                with_interval=wilson_interval(with_noise, len(noisy)),
                paper_without=paper[0],
                paper_with=paper[1],
            )
        )
    return rows


def _share(successes: int, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return f"{successes}"
    return f"{successes} [{100 * interval[0]:.0f}-{100 * interval[1]:.0f}%]"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else "inf" if math.isinf(value) else f"{value:.2f}"


def render_table(rows: Sequence[ThresholdRow], *, config: dict[str, Any]) -> Any:
    """A rich table, one line per threshold: each arm's successes of N with its Wilson 95%
    interval, their ratio, and the paper's counts of 7,290 beside them."""
    from rich import box
    from rich.table import Table

    n = rows[0].restarts if rows else 0
    table = Table(
        title=f"{config['operation']}, trained on {config['train_bits']} bits, tested on "
        f"{config['test_bits']}: {n} restarts per arm, noise eta {PAPER_ETA:g}, gamma "
        f"{PAPER_GAMMA:g} after clipping",
        caption=f"restarts under each test error (95% Wilson interval); the paper's: a Neural "
        f"GPU on multiplication, of {PAPER_RESTARTS:,}",
        box=box.SIMPLE,
    )
    for name in ("test error", "no noise", "noise", "ratio"):
        table.add_column(name, justify="right", no_wrap=True)
    for name in ("paper\nno noise", "paper\nnoise", "paper\nratio"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            f"< {100 * r.threshold:g}%",
            _share(r.without, r.without_interval),
            _share(r.with_noise, r.with_interval),
            _ratio(r.ratio),
            str(r.paper_without),
            str(r.paper_with),
            _ratio(r.paper_with / r.paper_without if r.paper_without else math.nan),
        )
    return table


def restarts_command(restarts: int | None, overrides: dict[str, Any] | None = None) -> None:
    """``noisetune reproduce --experiment restarts``: train, then print the table.

    ``overrides`` (``--config``) change the experiment's task config, validated by the
    caller."""
    import os

    import torch
    from rich.console import Console
    from rich.progress import Progress

    n = restarts or DEFAULT_RESTARTS
    config = {**RESTARTS_CONFIG, **(overrides or {})}
    workers = os.cpu_count() or 1
    torch.set_num_threads(1)  # where it trains in this process (a GPU, or one core)
    started = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task_id = bar.add_task(f"{n} restarts x 2 arms on {workers} processes", total=2 * n)
        outcomes = run_restarts(
            n, config=config, workers=workers, on_done=lambda _: bar.advance(task_id)
        )
    out = Console()
    out.print(render_table(summarize(outcomes), config=config))
    settings = " ".join(f"{k}={v}" for k, v in config.items())
    out.print(f"config: {settings}", highlight=False, soft_wrap=True)
    out.print(f"wall time: {time.perf_counter() - started:.1f} s", highlight=False, soft_wrap=True)
