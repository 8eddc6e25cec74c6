"""The control plane's cost: noisetune workers against raw Optuna ask/tell, side by side.

Every measurement runs on a fresh PostgreSQL database (created and dropped here) with the
`quadratic` task, so the numbers are the claim/report/record machinery, not training:

* throughput: N real worker processes (`python -m worker`) beside N processes looping raw
  `study.ask()` / suggest eta, gamma / the same quadratic objective / `study.tell()`, for
  N = 1, 4, 8. The raw objective reports every epoch (`trial.report`, `should_prune`) as
  a worker does and as an Optuna objective with learning curves and a pruner would. Both
  start together (workers poll, raw loops wait for a go signal) and only trials completed
  inside the same window, after a warm-up, are counted.
* per-trial overhead: from claim start to result recorded, minus the task's own time
  (epochs * sleep_s). For a worker that is `claim_seconds` (timed by the worker) plus
  datetime_complete - datetime_start (Optuna's own stamps; the trial is created inside
  the claim, so the few ms of ask() after creation are counted twice: an overestimate).
  For raw Optuna it is datetime_complete - datetime_start.
* claim latency at 100, 1,000 and 10,000 finished trials (pre-filled in bulk SQL, then
  VACUUM ANALYZE), from the `claim_seconds` one worker records (its first 3 claims, the
  warm-up, left out).

Two views: epochs=1, sleep_s=0 (the bare overhead) and epochs=5, sleep_s=0.02 (short trials
of 0.1 s, where per-epoch reporting shows). `control_plane_profile.py` shows where a
worker's per-trial overhead goes.

    python benchmarks/control_plane.py [--workers 1,4,8] [--duration 8] [--rounds 2]
                                       [--skip-latency]

Each side runs `--rounds` times per N, the order alternating, and keeps its best run: this
machine's speed drifts by tens of percent from one minute to the next.

Targets: noisetune >= 0.8 x raw Optuna throughput at every N; claim latency at 10,000
trials <= 2 x that at 100.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_spaces import StudySpec  # noqa: E402
from search_spaces._builtin import PAPER_ETAS  # noqa: E402
from search_spaces.storage import migrate, open_storage  # noqa: E402
from search_spaces.study_rows import set_study_status  # noqa: E402
from search_spaces.tables import trial_runs_table, workers_table  # noqa: E402

PG = os.environ.get("NOISETUNE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
STUDY = "bench"
WARM_S = 1.5  # workers poll for studies once a second; let every process get going
# (finished trials before, claims measured): fewer where each claim is known to be slow.
LATENCY_RUNS = ((100, 60), (1_000, 40), (10_000, 40))
VIEWS = {"bare": {"epochs": 1, "sleep_s": 0.0}, "short": {"epochs": 5, "sleep_s": 0.02}}


def _admin() -> sa.Engine:
    return sa.create_engine(
        f"{PG}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )


@contextmanager
def fresh_database() -> Iterator[str]:
    name = f"nt_bench_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        migrate(f"{PG}/{name}")
        yield f"{PG}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "NOISETUNE_LOG_LEVEL": "WARNING"}


def create_study(url: str, config: dict[str, Any], n_trials: int = 100_000) -> None:
    from search_spaces.study_rows import register_study as create

    spec = {
        "name": STUDY,
        "task": "quadratic",
        "task_config": config,
        "search_space": "paper-gamma",
        "n_trials": n_trials,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
    }
    create(open_storage(url), StudySpec.model_validate(spec))


def _stamp(dt: datetime) -> float:
    return dt.timestamp()  # Optuna stamps with datetime.now(): local time, like time.time()


@dataclass
class Measured:
    trials: int  # completed inside the window
    per_s: float
    overhead_ms: list[float]
    claim_ms: list[float]  # noisetune only: claim_seconds, lock wait included


def _window(
    rows: Sequence[Any], start: float, duration: float, task_s: float, claim: bool
) -> Measured:
    inside = [
        r
        for r in rows
        if r.datetime_complete is not None
        and start <= _stamp(r.datetime_complete) < start + duration
    ]
    overhead, claims = [], []
    for r in inside:
        span = _stamp(r.datetime_complete) - _stamp(r.datetime_start)
        extra = (r.claim_seconds or 0.0) if claim else 0.0
        overhead.append(1000 * (span + extra - task_s))
        claims.append(1000 * extra)
    return Measured(len(inside), len(inside) / duration, overhead, claims if claim else [])


def _live_workers(url: str) -> int:
    with open_storage(url).engine.connect() as conn:
        query = sa.select(sa.func.count()).where(workers_table.c.state == "alive")
        return int(conn.execute(query).scalar_one())


def run_workers(url: str, n: int, config: dict[str, Any], duration: float, logs: Path) -> Measured:
    """N worker processes; the study appears once all of them are polling."""
    storage = open_storage(url)
    cmd = [sys.executable, "-m", "worker", "--storage", url, "--device", "cpu"]
    procs = []
    for i in range(n):
        with open(logs / f"worker-{n}-{i}.log", "ab") as fh:
            procs.append(
                subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
            )
    try:
        deadline = time.monotonic() + 120
        while _live_workers(url) < n:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not start; see {logs}")
            time.sleep(0.2)
        create_study(url, config)
        start = time.time() + WARM_S
        time.sleep(WARM_S + duration + 0.5)
        set_study_status(storage.engine, STUDY, "stopped")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    query = sa.text(
        "SELECT t.datetime_start, t.datetime_complete, r.claim_seconds FROM trials t "
        "JOIN noisetune_trial_runs r ON r.trial_id = t.trial_id WHERE t.state = 'COMPLETE'"
    )
    with storage.engine.connect() as conn:
        rows = conn.execute(query).all()
    task_s = config["epochs"] * config["sleep_s"]
    return _window(rows, start, duration, task_s, claim=True)


def raw_child(url: str, epochs: int, sleep_s: float) -> None:
    """One raw Optuna process: ask, suggest, the same objective, tell, until the deadline.

    The objective reports each epoch and asks whether to prune, as an Optuna objective with
    learning curves and a pruner does, and as a worker does for every trial.
    """
    from worker.tasks.quadratic import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=STUDY,
        storage=url,
        sampler=optuna.samplers.RandomSampler(),
        pruner=optuna.pruners.NopPruner(),  # the workers' study has no pruner either
    )
    print("ready", flush=True)
    deadline = float(sys.stdin.readline())
    config = {"epochs": epochs, "sleep_s": sleep_s}
    while time.time() < deadline:
        trial = study.ask()
        eta = trial.suggest_categorical("eta", PAPER_ETAS)
        gamma = trial.suggest_float("gamma", 0.3, 1.0)

        def report(epoch: int, metrics: dict[str, float], trial: optuna.Trial = trial) -> None:
            trial.report(metrics["loss"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned

        result = train(config, eta=float(eta), gamma=gamma, report=report)  # type: ignore[arg-type]
        study.tell(trial, result["loss"])


def run_raw(url: str, n: int, config: dict[str, Any], duration: float) -> Measured:
    storage = open_storage(url)  # the same schema as the workers' database
    optuna.create_study(study_name=STUDY, storage=storage, direction="minimize")
    args = [str(config["epochs"]), str(config["sleep_s"])]
    cmd = [sys.executable, __file__, "--raw-child", url, *args]
    procs = [
        subprocess.Popen(cmd, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        start = time.time() + WARM_S
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{start + duration + 0.5}\n")
            p.stdin.flush()
        for p in procs:
            if p.wait(timeout=WARM_S + duration + 60) != 0:
                raise RuntimeError("a raw Optuna process failed")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    query = sa.text("SELECT datetime_start, datetime_complete FROM trials WHERE state = 'COMPLETE'")
    with storage.engine.connect() as conn:
        rows = list(conn.execute(query).all())
    task_s = config["epochs"] * config["sleep_s"]
    return _window(rows, start, duration, task_s, claim=False)


def prefill(url: str, n: int, chunk: int = 2000) -> None:
    """`n` finished trials as workers leave them, in bulk SQL (Optuna's tables and ours)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.distributions import distribution_to_json as to_json
    from optuna.storages._rdb import models

    storage = open_storage(url)
    study_id = storage.get_study_id_from_name(STUDY)
    trials_t, params_t = models.TrialModel.__table__, models.TrialParamModel.__table__
    values_t = models.TrialValueModel.__table__
    eta_json = to_json(CategoricalDistribution(PAPER_ETAS))
    gamma_json = to_json(FloatDistribution(0.3, 1.0))
    began = datetime.now() - timedelta(days=1)
    for first in range(0, n, chunk):
        numbers = range(first, min(n, first + chunk))
        with storage.engine.begin() as conn:
            rows = [
                {
                    "number": i,
                    "study_id": study_id,
                    "state": optuna.trial.TrialState.COMPLETE,
                    "datetime_start": began + timedelta(seconds=i),
                    "datetime_complete": began + timedelta(seconds=i + 0.5),
                }
                for i in numbers
            ]
            returning = trials_t.insert().returning(
                trials_t.c.trial_id, sort_by_parameter_order=True
            )
            ids = conn.execute(returning, rows).scalars().all()
            pairs = list(zip(ids, numbers, strict=True))
            params = [
                {"trial_id": t, "param_name": "eta", "param_value": float(i % 3),
                 "distribution_json": eta_json}
                for t, i in pairs
            ] + [
                {"trial_id": t, "param_name": "gamma", "param_value": 0.3 + 0.7 * (i % 97) / 97,
                 "distribution_json": gamma_json}
                for t, i in pairs
            ]  # fmt: skip
            conn.execute(params_t.insert(), params)
            finite = models.TrialValueModel.TrialValueType.FINITE
            values = [
                {"trial_id": t, "objective": 0, "value": (i % 101) / 100, "value_type": finite}
                for t, i in pairs
            ]
            conn.execute(values_t.insert(), values)
            runs = [
                {"trial_id": t, "study_name": STUDY, "number": i, "worker_id": "prefill",
                 "attempt": 0, "counted": True}
                for t, i in pairs
            ]  # fmt: skip
            conn.execute(trial_runs_table.insert(), runs)
    # A real study of this size has long been analyzed by autovacuum; without this the
    # planner works from empty-table statistics and autovacuum would run mid-measurement.
    with storage.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def claim_latency(prefilled: int, n: int, claims: int, logs: Path) -> list[float]:
    """Claim seconds (ms) of `claims` trials over `n` workers, after `prefilled` finished ones."""
    with fresh_database() as url:
        create_study(url, VIEWS["bare"])
        prefill(url, prefilled)
        cmd = [sys.executable, "-m", "worker", "--storage", url, "--device", "cpu"]
        cmd += ["--max-trials", str(claims // n)]
        procs = []
        for i in range(n):
            with open(logs / f"latency-{prefilled}-{n}-{i}.log", "ab") as fh:
                procs.append(
                    subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
                )
        for p in procs:
            if p.wait(timeout=300) != 0:
                raise RuntimeError(f"a worker failed; see {logs}")
        c = trial_runs_table.c
        query = (
            sa.select(c.worker_id, c.claim_seconds)
            .where(c.claim_seconds.is_not(None))
            .order_by(c.trial_id)
        )
        with open_storage(url).engine.connect() as conn:
            rows = conn.execute(query).all()
        open_storage(url).engine.dispose()
    # Each worker's first claims pay for imports and first connections: not the steady state.
    seen: dict[str, int] = {}
    out = []
    for worker, seconds in rows:
        seen[worker] = seen.get(worker, 0) + 1
        if seen[worker] > 3:
            out.append(1000 * seconds)
    return out


def best_of(
    rounds: int, n: int, config: dict[str, Any], duration: float, logs: Path
) -> tuple[Measured, Measured]:
    """Each side's best run of `rounds`, the sides alternating first (ours, raw; raw, ours; ...).

    On a shared machine a burst of load elsewhere then hurts one run, not one side.
    """
    ours: list[Measured] = []
    raw: list[Measured] = []
    for r in range(rounds):
        for side in ("ours", "raw") if r % 2 == 0 else ("raw", "ours"):
            with fresh_database() as url:
                if side == "ours":
                    ours.append(run_workers(url, n, config, duration, logs))
                else:
                    raw.append(run_raw(url, n, config, duration))
                open_storage(url).engine.dispose()
    return max(ours, key=lambda m: m.per_s), max(raw, key=lambda m: m.per_s)


def _q(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,4,8", help="process counts, e.g. 1,4,8")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    parser.add_argument("--views", default="bare,short", help=f"of {', '.join(VIEWS)}")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side; best kept")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--raw-child", nargs=3, metavar=("URL", "EPOCHS", "SLEEP_S"))
    args = parser.parse_args()
    if args.raw_child:
        url, epochs, sleep_s = args.raw_child
        raw_child(url, int(epochs), float(sleep_s))
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    counts = [int(x) for x in args.workers.split(",")]
    logs = Path(tempfile.mkdtemp(prefix="nt-bench-"))
    began = time.monotonic()
    print(
        f"PostgreSQL {PG}; {os.cpu_count()} CPUs; {args.duration:g}s windows; best of "
        f"{args.rounds} round(s) per side; logs {logs}"
    )
    header = (
        f"{'view':<6} {'N':>2} {'noisetune/s':>11} {'optuna/s':>9} {'ratio':>6}  "
        f"{'overhead p50/p95 ms: noisetune':>31} {'optuna':>15} {'claim p50 ms':>13}"
    )
    print(header)
    print("-" * len(header))
    for view in args.views.split(","):
        config = VIEWS[view]
        for n in counts:
            ours, raw = best_of(args.rounds, n, config, args.duration, logs)
            ratio = ours.per_s / raw.per_s if raw.per_s else float("nan")
            print(
                f"{view:<6} {n:>2} {ours.per_s:>11.1f} {raw.per_s:>9.1f} {ratio:>6.2f}  "
                f"{_q(ours.overhead_ms, 0.5):>22.1f} / {_q(ours.overhead_ms, 0.95):<6.1f} "
                f"{_q(raw.overhead_ms, 0.5):>6.1f} / {_q(raw.overhead_ms, 0.95):<6.1f}"
                f" {_q(ours.claim_ms, 0.5):>13.1f}",
                flush=True,
            )
    print(f"views: {', '.join(f'{v} = {VIEWS[v]}' for v in args.views.split(','))}")
    if not args.skip_latency:
        print("\nclaim latency, one worker (ms; claim_seconds as the worker records it)")
        print(f"{'prefilled':>9} {'claims':>6} {'p50':>8} {'p95':>8} {'mean':>8}")
        p50 = {}
        for prefilled, claims in LATENCY_RUNS:
            ms = claim_latency(prefilled, 1, claims, logs)
            p50[prefilled] = _q(ms, 0.5)
            print(
                f"{prefilled:>9,} {len(ms):>6} {_q(ms, 0.5):>8.1f} {_q(ms, 0.95):>8.1f} "
                f"{statistics.fmean(ms):>8.1f}",
                flush=True,
            )
        print(f"p50 at 10,000 / p50 at 100 = {p50[10_000] / p50[100]:.2f} (target <= 2)")
    print(f"\ntotal {time.monotonic() - began:.0f}s")


if __name__ == "__main__":
    main()
