"""What the API answers to specs that used to get through and break workers, on every backend."""

from __future__ import annotations

import json
from typing import Any

import pytest

STUDIES = "/api/v1/studies"
JSON = {"content-type": "application/json"}


def spec(**fields: Any) -> dict[str, Any]:
    return {"name": "s1", "task": "quadratic", **fields}


POISON = [
    (
        {"sampler": {"type": "tpe", "options": {"n_startup_trials": 0, "gamma": 0.25}}},
        "sampler.options.gamma: unknown option for sampler 'tpe' (allowed: n_startup_trials, ",
    ),
    (
        {"sampler": {"type": "tpe", "options": {"n_ei_candidates": 10**9}}},
        "sampler.options.n_ei_candidates: ",
    ),
    ({"sampler": {"type": "cmaes", "options": {"popsize": 10**9}}}, "sampler.options.popsize: "),
    (
        {"sampler": {"type": "cmaes", "options": {"independent_sampler": {}}}},
        "sampler.options.independent_sampler: unknown option",
    ),
    (
        {"sampler": {"type": "gp", "options": {"constraints_func": "x"}}},
        "sampler.options.constraints_func: unknown option",
    ),
    (
        {"sampler": {"type": "tpe", "options": {"n_startup_trials": "abc"}}},
        "sampler.options.n_startup_trials: ",
    ),
    (
        {"pruner": {"type": "hyperband", "options": {"reduction_factor": "x"}}},
        "pruner.options.reduction_factor: ",
    ),
    (
        {"pruner": {"type": "median", "options": {"n_warmup_steps": True}}},
        "pruner.options.n_warmup_steps: ",
    ),
    ({"max_retries": 11}, "max_retries: must be at most 10, got 11"),
    ({"max_consecutive_failures": 0}, "max_consecutive_failures: "),
    (
        {"task_config": {"epochs": 100, "sleep_s": 60}},
        "task_config: a quadratic trial may sleep at most 3600 s",
    ),
]


def test_poison_specs_are_422_and_nothing_is_stored(make_client: Any) -> None:
    client = make_client()
    for fields, start in POISON:
        answer = client.post(STUDIES, json=spec(**fields))
        assert answer.status_code == 422, (fields, answer.text)
        messages = [d["msg"] for d in answer.json()["detail"]]
        assert any(m.startswith(start) for m in messages), (fields, messages)
        if start.startswith(("sampler.options", "pruner.options")):
            assert all("(allowed: " in m for m in messages), messages
    listed = client.get(STUDIES)
    assert listed.status_code == 200 and listed.json()["count"] == 0


def test_valid_options_are_stored_as_given(make_client: Any) -> None:
    client = make_client()
    body = spec(
        sampler={
            "type": "tpe",
            "seed": 3,
            "options": {"n_startup_trials": 4, "multivariate": True},
        },
        pruner={"type": "hyperband", "options": {"max_resource": 50, "reduction_factor": 2}},
        max_consecutive_failures=7,
    )
    answer = client.post(STUDIES, json=body)
    assert answer.status_code == 201, answer.text
    stored = client.get(f"{STUDIES}/s1").json()["spec"]
    assert stored["sampler"]["options"] == {"n_startup_trials": 4, "multivariate": True}
    assert stored["pruner"]["options"] == {"max_resource": 50, "reduction_factor": 2}
    assert stored["max_consecutive_failures"] == 7


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # The escapes travel as JSON text: the server decodes them into lone surrogates.
        (
            '{"name": "s", "task": "quadratic", "task_config": {"x\\ud800": 1}}',
            "task_config.x\\ud800",
        ),
        (
            '{"name": "s", "task": "quadratic", "task_config": {"seed": "\\udfff"}}',
            "task_config.seed",
        ),
        ('{"name": "s\\ud800", "task": "quadratic"}', "name"),
    ],
)
def test_lone_surrogates_are_422_and_nothing_is_stored(
    make_client: Any, text: str, where: str
) -> None:
    client = make_client()
    answer = client.post(STUDIES, content=text, headers=JSON)
    assert answer.status_code == 422, answer.text
    (detail,) = answer.json()["detail"]
    assert detail["msg"].startswith(where + ": ")
    assert detail["msg"].endswith("contains a character that cannot be encoded (lone surrogate)")
    listed = client.get(STUDIES)
    assert listed.status_code == 200 and listed.json()["count"] == 0


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        # Past the spec's own limit (32) but within the body's (64): validation refuses it
        # without recursing that deep, and names where.
        (40, "sampler.options.x0.a.a.a.a.a ... ("),
        # Far past both: the body is refused before it is parsed.
        (500, "the body nests arrays and objects deeper than 64 levels"),
    ],
)
def test_a_deeply_nested_spec_is_422(make_client: Any, depth: int, message: str) -> None:
    x0 = '{"a": ' * depth + "1" + "}" * depth
    text = (
        '{"name": "s", "task": "quadratic", "sampler": {"type": "cmaes", "options": {"x0": '
        + x0
        + "}}}"
    )
    json.loads(text)  # valid JSON
    client = make_client()
    answer = client.post(STUDIES, content=text, headers=JSON)
    assert answer.status_code == 422, answer.text[:500]
    (detail,) = answer.json()["detail"]
    assert detail["msg"].startswith(message)
    assert client.get(STUDIES).json()["count"] == 0


HUGE = {"dataset": "mnist", "width": 4096, "depth": 200, "batch_size": 65536}


def test_a_study_whose_trials_need_more_memory_than_allowed_is_refused(
    make_client: Any,
) -> None:
    client = make_client()  # the default limit, 8 GiB
    huge = {"name": "huge", "task": "deep_mlp", "task_config": HUGE, "search_space": "paper"}
    answer = client.post(STUDIES, json=huge)
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["msg"].startswith("deep_mlp needs about ")
    assert "this server allows 8 GiB (NOISETUNE_MAX_TRIAL_MEMORY)" in error["msg"]
    assert client.get(STUDIES).json()["count"] == 0
    # A searched width counts at its largest value.
    wide = {"width": {"type": "int", "low": 50, "high": 4096}, "eta": 0.3}
    searched = {**huge, "task_config": {**HUGE, "width": 50}, "search_space": wide}
    assert client.post(STUDIES, json=searched).status_code == 422
    paper = {"name": "paper", "task": "deep_mlp", "search_space": "paper"}
    assert client.post(STUDIES, json=paper).status_code == 201


def test_the_memory_limit_is_the_servers_setting(make_client: Any) -> None:
    client = make_client(max_trial_memory="4TiB")
    huge = {"name": "huge", "task": "deep_mlp", "task_config": HUGE, "search_space": "paper"}
    assert client.post(STUDIES, json=huge).status_code == 201
    small = make_client(max_trial_memory=1024)
    paper = {"name": "paper", "task": "deep_mlp", "search_space": "paper"}
    answer = small.post(STUDIES, json=paper)
    assert answer.status_code == 422 and "allows 1 KiB" in answer.text


def test_memory_sizes_read_as_people_write_them() -> None:
    from service.settings import Settings, parse_bytes

    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("512 MB") == 512 * 10**6
    assert parse_bytes("24G") == 24 * 10**9 and parse_bytes("1073741824") == 2**30
    assert Settings(max_trial_memory="2TiB").max_trial_memory == 2 * 2**40
    with pytest.raises(ValueError, match="expected a size such as 8GiB"):
        Settings(max_trial_memory="lots")
