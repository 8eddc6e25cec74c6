"""The worker's commands of the ``noisetune`` CLI: train, reproduce, data, worker.

The service owns the root typer app and calls ``register`` through the
``noisetune.commands`` entry-point group, so the service never imports the worker.
torch (and the rest of the training stack) is imported inside command bodies only,
which keeps ``noisetune --help`` fast.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Annotated, Any, NoReturn

import typer

from search_spaces.schedules import DEFAULT_GAMMA
from worker.cli_launch import launch_app
from worker.tasks.base import json_safe

EXIT_USAGE = 2
EXIT_FAILURE = 1


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _require_torch(command: str) -> None:
    """Stop with one line when PyTorch is missing: the service installs without it."""
    try:
        import torch  # noqa: F401
    except ImportError:
        _fail(
            f"`noisetune {command}` trains models and needs PyTorch: "
            'pip install "noisetune[worker]"',
            EXIT_FAILURE,
        )


def parse_config_items(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, each value read as a YAML scalar (``0.1``, ``null``, ``relu``)."""
    import yaml

    config: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--config expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw  # not valid YAML: keep the text, the config check judges it
        config[key] = _number_or_text(value)
    return config


def _number_or_text(value: Any) -> Any:
    # YAML 1.1 reads "1e-3" (no dot) as text; anyone typing it means a number.
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if math.isfinite(number):
            return number
    return value


def train_command(
    task: Annotated[str, typer.Option(help="Registered task name.")] = "deep_mlp",
    eta: Annotated[float, typer.Option(help="Noise variance at step 0.")] = 0.0,
    gamma: Annotated[float, typer.Option(help="Decay exponent of the variance.")] = DEFAULT_GAMMA,
    schedule: Annotated[
        str,
        typer.Option(
            help="Noise schedule family: polynomial (the paper's, eta and gamma), "
            "constant, exponential (--half-life), cosine or linear (--horizon)."
        ),
    ] = "polynomial",
    half_life: Annotated[
        float | None, typer.Option(help="exponential: steps over which the variance halves.")
    ] = None,
    horizon: Annotated[
        int | None, typer.Option(help="cosine, linear: the step where the variance reaches 0.")
    ] = None,
    noise_window: Annotated[
        int | None, typer.Option(help="Noise only during the first N optimizer steps.")
    ] = None,
    placement: Annotated[
        str,
        typer.Option(
            help="after_clip (the paper's) or before_clip: noise added to the "
            "raw gradients, then clipped with them."
        ),
    ] = "after_clip",
    scale: Annotated[
        str,
        typer.Option(
            help="absolute (the paper's) or relative: each tensor's noise std "
            "times its gradient's RMS."
        ),
    ] = "absolute",
    seed: Annotated[int | None, typer.Option(help="Overrides the config's seed.")] = None,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", "-c", help="KEY=VALUE task config entry; repeatable."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option(help="Progress bar on standard error.")] = True,
    threads: Annotated[
        int, typer.Option(min=1, help="torch CPU threads (the default MLPs run best on one).")
    ] = 1,
) -> None:
    """Train one run; the last line of standard output is the final metrics as JSON."""
    _require_torch("train")
    from search_spaces import NoiseSetup, TaskConfigError, get_task_definition
    from worker.data import DatasetError
    from worker.tasks import TrainerImportError, load_trainer
    from worker.tasks.base import check_noise, noise_keyword, resolve_device

    try:
        definition = get_task_definition(task)
        values = parse_config_items(config or [])
        if seed is not None:
            values["seed"] = seed
        checked = definition.validate_config(values).model_dump()
        eta, gamma = check_noise(eta, gamma)
        noise = NoiseSetup(eta, gamma, schedule, half_life, horizon, noise_window, placement, scale)
        trainer = load_trainer(definition)
        extra = noise_keyword(trainer, task, noise)
        if "torch" in sys.modules:  # a trainer that never imports torch has no device
            import torch

            device = resolve_device(device)
            torch.set_num_threads(threads)
    except (TaskConfigError, ValueError) as exc:
        _fail(str(exc))
    except TrainerImportError as exc:
        _fail(str(exc), EXIT_FAILURE)
    try:
        result = trainer(checked, eta=eta, gamma=gamma, device=device, progress=progress, **extra)
    except DatasetError as exc:
        _fail(str(exc), EXIT_FAILURE)
    typer.echo(json.dumps(json_safe(result)))


def reproduce_command(
    seeds: Annotated[int, typer.Option(min=1, help="Runs per eta (seeds 0..N-1).")] = 4,
    epochs: Annotated[int, typer.Option(min=1, max=10_000, help="Epochs per run.")] = 150,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes (default: one per CPU core).")
    ] = None,
    experiment: Annotated[
        str,
        typer.Option(
            help="noise: claim 1 on digits (the options above); restarts: claim 2, restarts "
            "of a small Neural GPU on binary addition with and without noise."
        ),
    ] = "noise",
    restarts: Annotated[
        int | None,
        typer.Option(min=1, help="restarts: restarts per arm, seeds 0..N-1 (default 100)."),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "--config", "-c", help="restarts: KEY=VALUE over the experiment's task config."
        ),
    ] = None,
    init: Annotated[
        str, typer.Option(help="noise: the network's poor init, simple (N(0, 0.1^2)) or zero.")
    ] = "simple",
) -> None:
    """The paper's claims: 1 on digits (no noise stays at chance, eta = 1.0 trains) by
    default; 2 (more restarts succeed with noise) with --experiment restarts."""
    if experiment not in ("noise", "restarts"):
        _fail(f"unknown experiment {experiment!r}; choose noise or restarts")
    if (restarts is not None or config) and experiment != "restarts":
        _fail("--restarts and --config apply to --experiment restarts")
    if init not in ("simple", "zero"):
        _fail(f"--init must be simple or zero, got {init!r}")
    _require_torch("reproduce")
    if experiment == "restarts":
        from search_spaces import BINARY_ARITH, TaskConfigError
        from worker.reproduce_restarts import RESTARTS_CONFIG, restarts_command

        try:
            overrides = parse_config_items(config or [])
            BINARY_ARITH.validate_config({**RESTARTS_CONFIG, **overrides})
        except (TaskConfigError, ValueError) as exc:
            _fail(str(exc))
        restarts_command(restarts, overrides)
        return
    from rich.console import Console
    from rich.progress import Progress

    from worker.reproduce import (
        PAPER_ETAS,
        few_runs_note,
        paired_lines,
        run_all,
        summarize,
        verdict,
    )
    from worker.reproduce import render_table as table_of

    n_jobs = seeds * len(PAPER_ETAS)
    n_workers = workers or min(os.cpu_count() or 1, n_jobs)
    start = time.perf_counter()
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task_id = bar.add_task(f"{n_jobs} runs on {n_workers} processes", total=n_jobs)
        results = run_all(
            seeds=seeds,
            epochs=epochs,
            workers=n_workers,
            init=init,
            on_result=lambda _: bar.advance(task_id),
        )
    rows = summarize(results)
    out = Console()
    out.print(table_of(rows, epochs=epochs, init=init))
    for line in [*paired_lines(results), few_runs_note(rows), verdict(rows)]:
        if line is not None:
            out.print(line, highlight=False, soft_wrap=True)
    out.print(f"wall time: {time.perf_counter() - start:.1f} s", highlight=False, soft_wrap=True)


data_app = typer.Typer(help="Datasets for the deep_mlp task.", no_args_is_help=True)


@data_app.command("download")
def download_command(
    dataset: Annotated[str, typer.Argument(help="Dataset to fetch: mnist.")],
    data_dir: Annotated[
        str | None,
        typer.Option(help="Target directory (default $NOISETUNE_DATA_DIR or ~/.cache/...)."),
    ] = None,
) -> None:
    """Fetch a dataset's files (checked against known sizes and md5 sums)."""
    from worker.data import DatasetError, download_mnist

    if dataset != "mnist":
        _fail(f"unknown dataset {dataset!r}; downloadable: mnist (digits ships with sklearn)")
    try:
        paths = download_mnist(data_dir)
    except (DatasetError, OSError) as exc:
        _fail(str(exc), EXIT_FAILURE)
    for path in paths:
        typer.echo(str(path))


def worker_command(
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    gpus: Annotated[str | None, typer.Option(help="'all' or a list like 0,1.")] = None,
    study: Annotated[str | None, typer.Option(help="Only work on this study.")] = None,
    max_trials: Annotated[int | None, typer.Option(help="Stop after N trials.")] = None,
    exit_when_idle: Annotated[bool, typer.Option(help="Exit when no work is left.")] = False,
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between beats.")] = 10.0,
    batch: Annotated[
        str,
        typer.Option(
            help="Trials trained together as one stacked model: a number, or auto (from free "
            "GPU memory; 16 on CPU). Tasks that cannot be stacked train one at a time. "
            "Each member keeps its own seed's data split and order, so a trial trains the "
            "same stacked or alone."
        ),
    ] = "1",
    grace: Annotated[
        float,
        typer.Option(
            help="Seconds after SIGTERM within which the worker exits: it stops at the end "
            "of the current epoch, or interrupts the trainer when the epoch runs longer; "
            "either way the trial is queued again."
        ),
    ] = 30.0,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            help="Where trials keep checkpoints: a directory or an fsspec URL such as "
            "s3://bucket/prefix (default: $NOISETUNE_CHECKPOINTS, else a "
            "noisetune-checkpoints folder beside a SQLite database)."
        ),
    ] = None,
) -> None:
    """Pull trials from the database and train them until stopped."""
    _require_torch("worker")
    from worker.runner import run_workers

    raise typer.Exit(
        run_workers(
            storage=storage,
            device=device,
            gpus=gpus,
            study=study,
            max_trials=max_trials,
            exit_when_idle=exit_when_idle,
            heartbeat_interval=heartbeat_interval,
            stack=batch,
            grace=grace,
            checkpoints=checkpoints,
        )
    )


def register(app: typer.Typer) -> None:
    """Add the worker's commands to the root ``noisetune`` app."""
    app.command("train")(train_command)
    app.command("reproduce")(reproduce_command)
    app.command("worker")(worker_command)
    app.add_typer(data_app, name="data")
    app.add_typer(launch_app, name="launch")
