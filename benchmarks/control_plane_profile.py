"""Where a worker's per-trial overhead goes: SQL round trips by caller, and a CPU profile.

Runs one real `Worker` in this process on a fresh PostgreSQL database with the `quadratic`
task (epochs=1, sleep_s=0, so nearly all of its time is control plane), after a warm-up.
Every statement the engine sends is attributed to the noisetune code path that issued it
(and to the Optuna call in between, if any), with its count and client-side time per
trial. Transactions (BEGIN/COMMIT/ROLLBACK) and pool pre-pings are round trips too and are
counted apart; PostgreSQL's own transaction counter is shown as a cross-check. Then the
cProfile top of the same run.

    python benchmarks/control_plane_profile.py [--trials 200] [--epochs 1] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from control_plane import ROOT, STUDY, create_study, fresh_database  # noqa: E402

from search_spaces.storage import open_storage  # noqa: E402

OURS = (str(ROOT / "worker"), str(ROOT / "search_spaces"))
# Plumbing frames that add nothing to a label.
SORT = "cumulative"
PLUMBING = {"<lambda>", "with_db_retry", "_record", "run", "_claim", "claim_trial", "helper"}


def caller_label() -> str:
    """`noisetune > path > ... [optuna_call]` for the statement being sent now."""
    frame = sys._getframe(2)
    ours: list[str] = []
    api = ""
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(OURS):
            if code.co_name not in PLUMBING:
                ours.append(code.co_name)
        elif not ours and "/optuna/" in code.co_filename and "/_rdb/" not in code.co_filename:
            api = code.co_name  # the outermost Optuna call below our code
        frame = frame.f_back  # type: ignore[assignment]
    path = " > ".join(reversed(ours[:4])) or "?"
    return f"{path} [{api}]" if api else path


class RoundTrips:
    """Statements, transactions and pings on one engine, by caller."""

    def __init__(self, engine: sa.Engine) -> None:
        self.count: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.tx: Counter[str] = Counter()
        self.started: dict[int, float] = {}
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        for name in ("begin", "commit", "rollback"):
            sa.event.listen(engine, name, self._tx(name))
        sa.event.listen(engine.pool, "checkout", self._tx("checkout (pre-ping)"))

    def _before(self, conn: Any, cursor: Any, *args: Any) -> None:
        self.started[id(cursor)] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, *args: Any) -> None:
        label = caller_label()
        self.count[label] += 1
        self.seconds[label] += time.perf_counter() - self.started.pop(id(cursor), 0.0)

    def _tx(self, name: str) -> Any:
        def listener(*args: Any) -> None:
            self.tx[name] += 1

        return listener

    def reset(self) -> None:
        self.count.clear()
        self.seconds.clear()
        self.tx.clear()


def pg_transactions(engine: sa.Engine) -> int:
    # The statistics collector lags a little; pg_stat_clear_snapshot forces a fresh read.
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        return int(
            conn.execute(
                sa.text(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            ).scalar_one()
        )


def profile_worker(trials: int, epochs: int, top: int) -> None:
    from worker.runner import Worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with fresh_database() as url:
        create_study(url, {"epochs": epochs, "sleep_s": 0.0})
        engine = open_storage(url, worker=True).engine  # the worker's own engine
        trips = RoundTrips(engine)
        Worker(url, "cpu", STUDY, 10.0).run(20, False)  # warm-up: imports, pool, caches
        trips.reset()
        worker = Worker(url, "cpu", STUDY, 10.0)
        tx_before = pg_transactions(engine)
        profiler = cProfile.Profile()
        began = time.perf_counter()
        profiler.enable()
        worker.run(trials, False)
        profiler.disable()
        wall = time.perf_counter() - began
        tx_server = pg_transactions(engine) - tx_before - 2  # less the two readings
        engine.dispose()

    statements = sum(trips.count.values())
    sql_s = sum(trips.seconds.values())
    print(f"{trials} trials, epochs={epochs}: {1000 * wall / trials:.1f} ms per trial")
    print(
        f"per trial: {statements / trials:.1f} statements ({1000 * sql_s / trials:.1f} ms "
        "waiting on them), "
        + ", ".join(f"{n / trials:.1f} {name}" for name, n in sorted(trips.tx.items()))
        + f"; PostgreSQL counted {tx_server / trials:.1f} transactions"
    )
    print(f"\n{'per trial':>9} {'ms':>6}  statements by caller [Optuna call]")
    for label, n in sorted(trips.count.items(), key=lambda kv: -trips.seconds[kv[0]]):
        print(f"{n / trials:>9.2f} {1000 * trips.seconds[label] / trials:>6.2f}  {label}")
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats(SORT)
    stats.print_stats(top)
    print("\n" + out.getvalue().split("\n", 6)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    profile_worker(args.trials, args.epochs, args.top)


if __name__ == "__main__":
    main()
