"""End to end: a study over the built-in `schedules` space, trained by a stacking worker."""

from __future__ import annotations

import pytest

from search_spaces.schedules import FAMILY_PARAMETERS
from tests.e2e.conftest import Server, Workers

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
def test_a_schedules_study_completes_with_each_familys_own_parameters(
    server: Server, workers: Workers
) -> None:
    spec = {
        "name": "families", "task": "deep_mlp",
        "task_config": {"dataset": "digits", "depth": 3, "width": 8, "epochs": 2},
        "search_space": "schedules", "n_trials": 10,
        "sampler": {"type": "tpe", "seed": 0, "options": {"n_startup_trials": 5}},
        "pruner": {"type": "none"},
    }  # fmt: skip
    server.submit(spec)
    workers.start("--batch", "4", "--exit-when-idle")
    assert workers.wait_all(timeout=240) == [0], workers.logs()
    assert server.study("families")["status"] == "completed"
    trials = server.trials("families")
    assert len(trials) == 10 and {t["state"] for t in trials} == {"COMPLETE"}
    families = set()
    for t in trials:
        family = t["params"]["schedule"]
        families.add(family)
        own = {p for p in FAMILY_PARAMETERS[family]}
        assert set(t["params"]) == {"schedule", "eta", *own}  # only the active ones
        record = server.client.get(f"/api/v1/studies/families/trials/{t['number']}").json()
        assert all(len(p["noise_grad_ratio_layers"]) == 3 for p in record["curve"])
    assert len(families) >= 3  # the seeded TPE tried several families
    for kind in ("noise_schedule", "noise_ratio", "importance", "parallel", "slice"):
        answer = server.client.get(f"/api/v1/studies/families/plots/{kind}")
        assert answer.status_code == 200 and answer.json()["data"], kind
