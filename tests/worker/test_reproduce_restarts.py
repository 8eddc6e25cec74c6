"""The restart experiment: its counts, intervals and ratios, and the CLI that prints them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from search_spaces.statistics import wilson_interval
from worker.cli import register
from worker.reproduce_restarts import (
    PAPER_ETA,
    RESTARTS_CONFIG,
    Restart,
    render_table,
    run_restarts,
    summarize,
)
from worker.tasks.binary_arith import train

TINY = {"channels": 4, "steps_per_epoch": 3, "epochs": 1, "test_size": 8, "batch_size": 4}


@pytest.fixture(autouse=True)
def _restore_threads() -> Any:
    import torch

    before = torch.get_num_threads()  # the command sets the process's torch threads
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def restart(seed: int, eta: float, error: float, diverged: bool = False) -> Restart:
    return Restart(seed, eta, error, diverged)


def test_counts_intervals_and_ratios() -> None:
    errors_without = [0.005, 0.015, 0.5, 0.04]
    errors_with = [0.001, 0.002, 0.025, math.nan]
    outcomes = [restart(i, 0.0, e) for i, e in enumerate(errors_without)]
    outcomes += [restart(i, 1.0, e, math.isnan(e)) for i, e in enumerate(errors_with)]
    rows = summarize(outcomes)
    assert [r.threshold for r in rows] == [0.01, 0.02, 0.03, 0.05]
    assert [(r.without, r.with_noise) for r in rows] == [(1, 2), (2, 2), (2, 3), (3, 3)]
    assert rows[0].ratio == 2.0 and rows[2].ratio == 1.5
    assert rows[0].without_interval == wilson_interval(1, 4)
    assert rows[0].with_interval == wilson_interval(2, 4)
    assert (rows[3].paper_without, rows[3].paper_with) == (387, 570)


def test_ratio_without_successes_is_inf_or_undefined() -> None:
    rows = summarize([restart(0, 0.0, 0.5), restart(0, 1.0, 0.0)], thresholds=[0.01])
    assert rows[0].ratio == math.inf
    rows = summarize([restart(0, 0.0, 0.5), restart(0, 1.0, 0.5)], thresholds=[0.01])
    assert math.isnan(rows[0].ratio)
    with pytest.raises(ValueError, match="arms differ"):
        summarize([restart(0, 0.0, 0.5)])


def test_each_seed_trains_in_both_arms_as_its_lone_run() -> None:
    outcomes = run_restarts(2, config=TINY, stack_size=3, device="cpu")  # stacks of 3 and 1
    assert [(r.seed, r.eta) for r in outcomes] == [
        (seed, eta) for seed in range(2) for eta in (0.0, PAPER_ETA)
    ]
    for r in outcomes:
        lone = train({**RESTARTS_CONFIG, **TINY, "seed": r.seed}, eta=r.eta, gamma=0.55)
        assert r.test_error == pytest.approx(lone["test_error"], abs=1e-9)


def test_the_table_has_a_row_per_threshold() -> None:
    from rich.console import Console

    rows = summarize([restart(0, 0.0, 0.001), restart(0, 1.0, 0.5)])
    console = Console(width=200, record=True)
    console.print(render_table(rows, config=RESTARTS_CONFIG))
    text = console.export_text()
    for cell in ("< 1%", "< 5%", "1 [21-100%]", "0 [0-79%]", "0.00", "58", "570"):
        assert cell in text


@pytest.fixture()
def app() -> typer.Typer:
    root = typer.Typer()
    register(root)
    return root


def test_reproduce_restarts_prints_the_table(app: typer.Typer) -> None:
    tiny = [f"-c{key}={value}" for key, value in TINY.items()]
    args = ["reproduce", "--experiment", "restarts", "--restarts", "2", *tiny]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for line in ("2 restarts per arm", "no noise", "< 3%", "of 7,290", "wall time:"):
        assert line in result.output
    assert "channels=4" in result.output and "test_bits=16" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "claim3"], "unknown experiment 'claim3'; choose noise or restarts"),
        (["--restarts", "5"], "--restarts and --config apply to --experiment restarts"),
        (["--experiment", "restarts", "-c", "channels=0"], "channels"),
        (["--experiment", "restarts", "-c", "depth=3"], "unknown key 'depth'"),
    ],
)
def test_bad_experiment_options_are_one_line(
    app: typer.Typer, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["reproduce", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_the_experiment_runs_the_tasks_defaults() -> None:
    """README: `binary_arith`'s defaults are the restart experiment's scale."""
    from search_spaces import BinaryArithConfig

    defaults = BinaryArithConfig().model_dump(exclude={"seed", "momentum"})
    assert defaults == RESTARTS_CONFIG
