"""Studies written the way workers write them, for the plot, page and report tests.

Trials are built as FrozenTrials with the attributes a worker sets (worker, host, device,
metrics, curve, wall_time_s, fail_reason) and added with Optuna's own `add_trials`, so
the database is exactly what a real run leaves behind, only faster to make.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState, create_trial

from search_spaces import StudySpec
from search_spaces.storage import now, open_storage
from search_spaces.tables import studies_table, trial_runs_table, workers_table

SPACE = {
    "eta": {"type": "categorical", "choices": [0.0, 0.01, 0.3, 1.0]},
    "gamma": {"type": "float", "low": 0.3, "high": 1.0},
    "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
}


def accuracy(eta: float, gamma: float, lr: float) -> float:
    """A made-up landscape where noise helps, like the paper's claim 1."""
    return 0.1 + 0.8 * math.sqrt(eta) * math.exp(-((gamma - 0.55) ** 2)) * (lr / 0.1) ** 0.2


def register_study(url: str, spec: dict[str, Any]) -> optuna.Study:
    """Create the Optuna study and its noisetune row, as the service does on submit."""
    checked = StudySpec.model_validate(spec)
    storage = open_storage(url)
    study = optuna.create_study(
        study_name=checked.name, storage=storage, direction=checked.direction
    )
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(studies_table).values(
                name=checked.name,
                study_id=study._study_id,
                spec=json.dumps(checked.model_dump(mode="json")),
                status="running",
                priority=0,
                n_trials=checked.n_trials,
                created_at=now(),
            )
        )
    return study


def make_study(
    url: str,
    name: str = "paper",
    *,
    complete: int = 12,
    pruned: int = 2,
    failed: int = 1,
    running: int = 1,
    epochs: int = 5,
    n_trials: int | None = None,
    space: dict[str, Any] | str | None = None,
    seed: int = 0,
) -> optuna.Study:
    """A deep_mlp study on digits with trials in every state a worker leaves."""
    total = complete + pruned + failed + running
    spec = {
        "name": name,
        "task": "deep_mlp",
        "task_config": {"dataset": "digits", "epochs": epochs},
        "search_space": SPACE if space is None else space,
        "n_trials": n_trials or max(total, 1),
    }
    study = register_study(url, spec)
    rng = random.Random(seed)
    space = StudySpec.model_validate(spec).space
    dists = space.distributions()
    # Recent start times, so that running trials look like they started minutes ago.
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=12 * total + 60)
    states = (
        [TrialState.COMPLETE] * complete
        + [TrialState.PRUNED] * pruned
        + [TrialState.FAIL] * failed
        + [TrialState.RUNNING] * running
    )
    rng.shuffle(states)
    trials = []
    for i, state in enumerate(states):
        # Drawn as a worker draws them: parameters whose `when` does not hold are left out.
        drawn: dict[str, Any] = dict(space.fixed)
        params = {}
        for k, p in space.sampled.items():
            if p.active(drawn):
                params[k] = drawn[k] = _draw(rng, dists[k])
        final = accuracy(params.get("eta", 0.0), params.get("gamma", 0.55), params.get("lr", 0.03))
        n_epochs = {TrialState.PRUNED: 2, TrialState.RUNNING: 3, TrialState.FAIL: 1}.get(
            state, epochs
        )
        curve = [
            {"epoch": e, "val_accuracy": final * e / epochs, "val_loss": 2.3 - final * e / epochs}
            for e in range(1, n_epochs + 1)
        ]
        # Diagnostics in the curve only, as deep_mlp reports them (eta 0: no noise).
        ratio = 10 * math.sqrt(params.get("eta", 0.0))
        diagnostics = [
            {"noise_grad_ratio": ratio / e, "noise_grad_ratio_layers": [ratio * (4 - j) / e
                                                                         for j in range(4)]}
            for e in range(1, n_epochs + 1)
        ]  # fmt: skip
        attrs: dict[str, Any] = {
            "worker": f"host-a:{100 + i % 3}",
            "host": "host-a",
            "device": "cpu",
            "attempt": 0,
            "curve": [{**c, **d} for c, d in zip(curve, diagnostics, strict=True)],
        }
        if state != TrialState.RUNNING:
            attrs["metrics"] = {**curve[-1], "steps": n_epochs * 11, "epochs": n_epochs}
            attrs["wall_time_s"] = 3.0 + i
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "diverged"
        began = start + timedelta(seconds=10 * i)
        trials.append(
            create_trial(
                state=state,
                value=final if state == TrialState.COMPLETE else None,
                params=params,
                distributions={k: dists[k] for k in params},
                user_attrs=attrs,
                intermediate_values={int(c["epoch"]): c["val_accuracy"] for c in curve},
            )
        )
        trials[-1].datetime_start = began
        if state != TrialState.RUNNING:
            trials[-1].datetime_complete = began + timedelta(seconds=3 + i)
    study.add_trials(trials)
    # The claim records workers keep beside Optuna's rows: finished trials count in the budget.
    with open_storage(url).engine.begin() as conn:
        conn.execute(
            sa.insert(trial_runs_table),
            [
                {
                    "trial_id": t._trial_id,
                    "study_name": name,
                    "number": t.number,
                    "worker_id": t.user_attrs["worker"],
                    "attempt": 0,
                    "counted": t.state != TrialState.RUNNING,
                    "fail_reason": t.user_attrs.get("fail_reason"),
                }
                for t in study.get_trials(deepcopy=False)
            ],
        )
    return study


def _draw(rng: random.Random, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return rng.choice(dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution):
        return rng.randint(dist.low, dist.high)
    assert isinstance(dist, optuna.distributions.FloatDistribution)
    if dist.log:
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    return rng.uniform(dist.low, dist.high)


def add_worker(
    url: str, worker_id: str = "host-a:100", study: str | None = "paper", interval: float = 10.0
) -> None:
    storage = open_storage(url)
    with storage.engine.begin() as conn:
        conn.execute(
            sa.insert(workers_table).values(
                id=worker_id,
                host="host-a",
                pid=100,
                device="cpu",
                study_name=study,
                trial_number=3,
                started_at=now() - 60,
                heartbeat_at=now(),
                heartbeat_interval=interval,
                state="alive",
            )
        )
