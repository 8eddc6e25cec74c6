"""How the dashboard holds up on a 10,000-trial study: server-side time per request.

Fills a fresh SQLite database with a synthetic finished study (bulk SQL into Optuna's
own tables, checked afterwards with `optuna.load_study`), then times, through the real
FastAPI app and its TestClient, the study page, one page of the trials API, every plot
kind cold (first request after the trials were read) and warm, and importance cold.

    python benchmarks/dashboard_scale.py [--trials 10000] [--epochs 5] [--keep DIR]

Targets: warm < 1 s per request; importance cold (default evaluator, with its intervals) < 2 s.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_spaces import StudySpec  # noqa: E402
from search_spaces.storage import now, open_storage  # noqa: E402
from search_spaces.tables import studies_table  # noqa: E402

NAME = "scale"
SPACE = {
    "eta": {"type": "categorical", "choices": [0.0, 0.01, 0.3, 1.0]},
    "gamma": {"type": "float", "low": 0.3, "high": 1.0},
    "lr": {"type": "float", "low": 0.001, "high": 0.3, "log": True},
}


def _objective(rng: random.Random, eta: float, gamma: float, lr: float) -> float:
    base = 0.1 + 0.8 * math.sqrt(eta) * math.exp(-((gamma - 0.55) ** 2) * 3)
    return min(0.99, max(0.05, base * (lr / 0.3) ** 0.1 + rng.gauss(0, 0.03)))


def fill(url: str, n: int, epochs: int, seed: int = 0) -> None:
    """Write `n` finished trials of a deep_mlp study the way workers would leave them."""
    spec = StudySpec.model_validate(
        {
            "name": NAME,
            "task": "deep_mlp",
            "search_space": SPACE,
            "n_trials": n,
            "task_config": {"epochs": epochs},
        }
    )
    storage = open_storage(url)
    study = optuna.create_study(study_name=NAME, storage=storage, direction="maximize")
    dists = spec.space.distributions()
    dist_json = {k: optuna.distributions.distribution_to_json(d) for k, d in dists.items()}
    rng = random.Random(seed)
    start = datetime(2026, 1, 1)
    trials, params, values, inter, attrs = [], [], [], [], []
    with storage.engine.connect() as conn:
        first = conn.execute(sa.text("SELECT COALESCE(MAX(trial_id), 0) FROM trials")).scalar()
    for i in range(n):
        tid = int(first or 0) + 1 + i
        p = {
            "eta": rng.choice([0.0, 0.01, 0.3, 1.0]),
            "gamma": rng.uniform(0.3, 1.0),
            "lr": math.exp(rng.uniform(math.log(0.001), math.log(0.3))),
        }
        final = _objective(rng, **p)
        state = "PRUNED" if i % 12 == 5 else ("FAIL" if i % 50 == 7 else "COMPLETE")
        done = {"COMPLETE": epochs, "PRUNED": max(1, epochs // 2), "FAIL": 1}[state]
        began = start + timedelta(seconds=4 * i)
        trials.append(
            {
                "id": tid,
                "num": i,
                "sid": study._study_id,
                "state": state,
                "s": began,
                "e": began + timedelta(seconds=3 + rng.random() * 9),
            }
        )
        for k, v in p.items():
            internal = dists[k].to_internal_repr(v)
            params.append({"tid": tid, "k": k, "v": internal, "d": dist_json[k]})
        if state == "COMPLETE":
            values.append({"tid": tid, "v": final})
        curve = [{"epoch": e, "val_accuracy": final * e / epochs} for e in range(1, done + 1)]
        inter += [{"tid": tid, "s": c["epoch"], "v": c["val_accuracy"]} for c in curve]
        user = {
            "worker": f"node{i % 8}:{1000 + i % 3}",
            "host": f"node{i % 8}",
            "device": "cpu",
            "attempt": 0,
            "wall_time_s": 3.0,
            "metrics": {**curve[-1], "steps": done * 11, "epochs": done},
        }
        if i % 10 == 0:
            user["curve"] = curve
        if state == "FAIL":
            user["fail_reason"] = "diverged"
        attrs += [{"tid": tid, "k": k, "v": json.dumps(v)} for k, v in user.items()]
    with storage.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO trials (trial_id, number, study_id, state, "
                "datetime_start, datetime_complete) VALUES (:id, :num, :sid, :state, "
                ":s, :e)"
            ),
            trials,
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_params (trial_id, param_name, param_value, "
                "distribution_json) VALUES (:tid, :k, :v, :d)"
            ),
            params,
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_values (trial_id, objective, value, value_type) "
                "VALUES (:tid, 0, :v, 'FINITE')"
            ),
            values,
        )
        conn.execute(
            sa.text(
                "INSERT INTO trial_intermediate_values (trial_id, step, "
                "intermediate_value, intermediate_value_type) "
                "VALUES (:tid, :s, :v, 'FINITE')"
            ),
            inter,
        )
        conn.execute(
            sa.text(
                'INSERT INTO trial_user_attributes (trial_id, "key", value_json) '
                "VALUES (:tid, :k, :v)"
            ),
            attrs,
        )
        conn.execute(
            sa.insert(studies_table).values(
                name=NAME,
                study_id=study._study_id,
                spec=json.dumps(spec.model_dump(mode="json")),
                status="running",
                priority=0,
                n_trials=n,
                created_at=now(),
            )
        )


def _time(client: Any, path: str, repeat: int = 1) -> tuple[float, int]:
    """Median seconds over `repeat` requests, and the last status code."""
    times, status = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - t)
        status = response.status_code
    return statistics.median(times), status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--keep", help="write the database into this folder and keep it")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = args.keep or tempfile.mkdtemp(prefix="noisetune-scale-")
    Path(folder).mkdir(parents=True, exist_ok=True)
    db = Path(folder) / "scale.db"
    db.unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    t = time.perf_counter()
    fill(url, args.trials, args.epochs)
    print(f"filled {args.trials} trials in {time.perf_counter() - t:.1f} s ({db})")
    loaded = optuna.load_study(study_name=NAME, storage=url)
    assert len(loaded.get_trials(deepcopy=False)) == args.trials, "Optuna must read every trial"

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.plots import PLOT_KINDS
    from service.plots import _cache as caches
    from service.settings import Settings

    client = TestClient(create_app(Settings(storage=url)), base_url="http://127.0.0.1")
    rows: list[tuple[str, float, float | None, int]] = []
    base = f"/api/v1/studies/{NAME}"
    cold, status = _time(client, f"{base}/plots/history")
    rows.append(("first plot (reads all trials)", cold, None, status))
    for kind in PLOT_KINDS:
        caches.figures.clear()
        caches.importances.clear()
        cold, _ = _time(client, f"{base}/plots/{kind}")
        warm, status = _time(client, f"{base}/plots/{kind}", repeat=3)
        rows.append((f"plot {kind}", cold, warm, status))
    caches.figures.clear()
    cold, _ = _time(client, f"{base}/plots/importance?evaluator=fanova")
    warm, status = _time(client, f"{base}/plots/importance?evaluator=fanova", repeat=3)
    rows.append(("plot importance (fANOVA)", cold, warm, status))
    for label, path in (
        ("study page", f"/studies/{NAME}"),
        ("studies page", "/"),
        ("trials API, 1 page of 50", f"{base}/trials?limit=50&offset={args.trials // 2}"),
        ("study API", base),
        ("importance API (service.studies)", f"{base}/importance"),
        ("trial page", f"/studies/{NAME}/trials/{args.trials // 2}"),
    ):
        cold, _ = _time(client, path)
        warm, status = _time(client, path, repeat=3)
        rows.append((label, cold, warm, status))
    print(f"\n{'request':34} {'cold s':>8} {'warm s':>8} {'cold/warm':>9} {'status':>6}")
    for label, c, w, s in rows:
        shown = "" if w is None else f"{w:.3f}"
        ratio = "" if w is None else f"{c / w:.1f}x"
        print(f"{label:34} {c:8.3f} {shown:>8} {ratio:>9} {s:>6}")
    worst = max(w for _, _, w, _ in rows if w is not None)
    importance_cold = next(c for label, c, _, _ in rows if label == "plot importance")
    print(
        f"\nworst warm: {worst:.3f} s (target < 1 s); "
        f"importance cold (default evaluator): {importance_cold:.3f} s (target < 2 s)"
    )
    client.close()
    if not args.keep:
        open_storage(url).engine.dispose()
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if worst < 1 and importance_cold < 2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
