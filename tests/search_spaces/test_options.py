"""Sampler and pruner options: typed and bounded for new studies, lenient for stored ones."""

from __future__ import annotations

import importlib.util
import itertools
import tracemalloc
import warnings
from typing import Any

import optuna
import pytest
from pydantic import ValidationError

from search_spaces import (
    PRUNER_OPTIONS,
    SAMPLER_OPTIONS,
    StudySpec,
    allowed_options,
    build_pruner,
    build_sampler,
)

SPACE = {
    "eta": {"type": "float", "low": 0.01, "high": 3.0, "log": True},
    "gamma": {"type": "float", "low": 0.0, "high": 1.0},
    "epochs": {"type": "int", "low": 1, "high": 10},
}


def spec(**fields: Any) -> StudySpec:
    return StudySpec.model_validate(
        {"name": "s", "task": "quadratic", "search_space": SPACE, **fields}
    )


def sampler(type_: str, **options: Any) -> dict[str, Any]:
    return {"sampler": {"type": type_, "options": options}}


def pruner(type_: str, **options: Any) -> dict[str, Any]:
    return {"pruner": {"type": type_, "options": options}}


# Each of these was accepted before and killed or exhausted every worker that sampled it.
POISON = [
    (sampler("tpe", n_startup_trials=0, gamma=0.25), "sampler.options.gamma: unknown option"),
    (sampler("tpe", n_ei_candidates=10**9), "sampler.options.n_ei_candidates: "),
    (sampler("cmaes", popsize=10**9), "sampler.options.popsize: "),
    (sampler("cmaes", independent_sampler={}), "sampler.options.independent_sampler: unknown"),
    (sampler("gp", constraints_func="x"), "sampler.options.constraints_func: unknown"),
    (sampler("tpe", constraints_func="x"), "sampler.options.constraints_func: unknown"),
    (sampler("tpe", n_startup_trials="abc"), "sampler.options.n_startup_trials: "),
    (pruner("hyperband", reduction_factor="x"), "pruner.options.reduction_factor: "),
]


@pytest.mark.parametrize(("fields", "message"), POISON)
def test_poison_options_are_refused_naming_the_option(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        spec(**fields)
    assert "allowed: " in str(info.value)


def test_an_unknown_option_lists_what_the_type_allows() -> None:
    with pytest.raises(ValidationError) as info:
        spec(**sampler("qmc", weights=[1, 2]))
    (error,) = info.value.errors()
    assert error["loc"] == ("sampler", "options", "weights")
    assert error["msg"] == (
        "sampler.options.weights: unknown option for sampler 'qmc' (allowed: qmc_type, "
        "scramble, warn_independent_sampling, warn_asynchronous_seeding)"
    )
    with pytest.raises(ValidationError, match=r"for sampler 'random' \(allowed: none\)"):
        spec(**sampler("random", seed=1))
    with pytest.raises(ValidationError, match=r"for pruner 'none' \(allowed: none\)"):
        spec(**pruner("none", n_startup_trials=1))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (sampler("tpe", n_startup_trials="5"), "valid integer"),  # no string-to-int coercion
        (sampler("tpe", n_startup_trials=True), "valid integer"),  # a bool is not an int
        (sampler("tpe", n_startup_trials=5.0), "valid integer"),
        (sampler("tpe", multivariate="true"), "valid boolean"),
        (sampler("tpe", multivariate=1), "valid boolean"),
        (sampler("tpe", prior_weight=0), "greater than 0"),
        (sampler("tpe", prior_weight="1"), "valid number"),
        (sampler("tpe", group=True, multivariate=False), "group: true needs multivariate"),
        (sampler("cmaes", x0={"eta": "1"}), "x0"),
        (sampler("cmaes", x0={f"p{i}": 0.0 for i in range(65)}), "x0"),
        (sampler("cmaes", sigma0=0.0), "sigma0"),
        (sampler("cmaes", popsize=1), "popsize"),
        (sampler("cmaes", restart_strategy="bogus"), "'ipop' or 'bipop'"),
        (sampler("cmaes", lr_adapt=True, with_margin=True), "lr_adapt cannot be combined"),
        (sampler("cmaes", use_separable_cma=True, with_margin=True), "cannot be combined"),
        (sampler("qmc", qmc_type="lhs"), "'sobol' or 'halton'"),
        (sampler("gp", n_startup_trials=-1), "greater than or equal to 0"),
        (pruner("median", interval_steps=0), r"an integer in 1\.\.100000"),
        (pruner("median", n_min_trials=0), "n_min_trials"),
        (pruner("hyperband", min_resource="auto"), r"allowed: an integer in 1\.\.100000"),
        (pruner("hyperband", max_resource=100_001), "'auto' or an integer"),
        (pruner("hyperband", reduction_factor=1), r"an integer in 2\.\.100"),
        (pruner("hyperband", bootstrap_count=1001), "bootstrap_count"),
        (pruner("hyperband", min_resource=5, max_resource=4), "must be <= max_resource"),
        (pruner("hyperband", bootstrap_count=1), "needs an integer max_resource"),
        (pruner("successive_halving", min_resource="some"), "'auto' or an integer"),
        (pruner("successive_halving", min_early_stopping_rate=101), "min_early_stopping"),
        (pruner("successive_halving", bootstrap_count=2), "needs an integer min_resource"),
    ],
)
def test_options_are_strict_and_bounded(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        spec(**fields)


def test_cmaes_x0_must_start_every_searched_number_inside_its_range() -> None:
    x0 = {"eta": 0.5, "gamma": 0.5, "epochs": 3}
    assert spec(**sampler("cmaes", x0=x0)).sampler.options["x0"] == x0
    with pytest.raises(ValidationError, match="needs a start value for 'epochs'"):
        spec(**sampler("cmaes", x0={"eta": 0.5, "gamma": 0.5}))
    with pytest.raises(
        ValidationError,
        match="no float or int parameter named 'lr' \\(it has: eta, gamma, epochs\\)",
    ):
        spec(**sampler("cmaes", x0={**x0, "lr": 0.1}))
    with pytest.raises(ValidationError, match=r"x0\.gamma: 2 is outside .* \[0, 1\]"):
        spec(**sampler("cmaes", x0={**x0, "gamma": 2}))


def test_only_given_options_are_kept_and_typed() -> None:
    s = spec(**sampler("tpe", n_startup_trials=3, prior_weight=2), **pruner("median"))
    assert s.sampler.options == {"n_startup_trials": 3, "prior_weight": 2.0}
    assert s.pruner.options == {}
    assert s.model_dump(mode="json")["sampler"]["options"] == {
        "n_startup_trials": 3,
        "prior_weight": 2.0,
    }


def test_no_option_names_code() -> None:
    code = {"gamma", "weights", "constraints_func", "independent_sampler", "source_trials"}
    for kind, table in (("sampler", SAMPLER_OPTIONS), ("pruner", PRUNER_OPTIONS)):
        for type_ in table:
            assert not code & set(allowed_options(kind, type_)), (kind, type_)


# The largest (or most demanding) value each option allows, per sampler; CMA-ES three times
# over, as its variants exclude one another.
EXTREME_SAMPLERS: list[tuple[str, dict[str, Any]]] = [
    (
        "tpe",
        {
            "n_startup_trials": 0,
            "n_ei_candidates": 10_000,
            "multivariate": True,
            "group": True,
            "constant_liar": True,
            "consider_endpoints": True,
            "consider_magic_clip": False,
            "prior_weight": 1e6,
            "warn_independent_sampling": False,
        },
    ),
    (
        "cmaes",
        {
            "x0": {"eta": 3.0, "gamma": 0.0, "epochs": 10},
            "sigma0": 1e12,
            "n_startup_trials": 0,
            "consider_pruned_trials": True,
            "restart_strategy": "bipop",
            "inc_popsize": 100,
            "popsize": 10_000,
            "lr_adapt": True,
            "warn_independent_sampling": False,
        },
    ),
    ("cmaes", {"n_startup_trials": 0, "popsize": 10_000, "use_separable_cma": True}),
    ("cmaes", {"n_startup_trials": 0, "popsize": 2, "sigma0": 1e-300, "with_margin": True}),
    (
        "gp",
        {
            "n_startup_trials": 0,
            "deterministic_objective": True,
            "warn_independent_sampling": False,
        },
    ),
    (
        "qmc",
        {
            "qmc_type": "halton",
            "scramble": True,
            "warn_independent_sampling": False,
            "warn_asynchronous_seeding": False,
        },
    ),
    ("random", {}),
    ("grid", {}),
]
EXTREME_PRUNERS: dict[str, dict[str, Any]] = {
    "median": {
        "n_startup_trials": 0,
        "n_warmup_steps": 0,
        "interval_steps": 100_000,
        "n_min_trials": 10_000,
    },
    "hyperband": {
        "min_resource": 1,
        "max_resource": 100_000,
        "reduction_factor": 2,
        "bootstrap_count": 1000,
    },
    "successive_halving": {
        "min_resource": 100_000,
        "reduction_factor": 100,
        "min_early_stopping_rate": 100,
        "bootstrap_count": 1000,
    },
    "none": {},
}


def test_models_cover_every_type_and_every_option_optuna_takes_by_that_name() -> None:
    covered: dict[str, set[str]] = {}
    for type_, options in EXTREME_SAMPLERS:
        covered.setdefault(type_, set()).update(options)
    assert covered == {t: set(allowed_options("sampler", t)) for t in SAMPLER_OPTIONS}
    assert set(PRUNER_OPTIONS) == set(EXTREME_PRUNERS)
    for type_, options in EXTREME_PRUNERS.items():
        assert set(options) == set(allowed_options("pruner", type_)), type_


# Each sampler with one pruner, every pruner twice over.
EXTREME_PAIRS = [
    (sampler_type, sampler_options, *pruner_case)
    for (sampler_type, sampler_options), pruner_case in zip(
        EXTREME_SAMPLERS, itertools.cycle(EXTREME_PRUNERS.items()), strict=False
    )
]


@pytest.mark.parametrize(
    ("sampler_type", "sampler_options", "pruner_type", "pruner_options"), EXTREME_PAIRS
)
def test_extreme_options_build_and_sample_in_little_memory(
    sampler_type: str,
    sampler_options: dict[str, Any],
    pruner_type: str,
    pruner_options: dict[str, Any],
) -> None:
    if sampler_type == "cmaes" and importlib.util.find_spec("cmaes") is None:
        pytest.skip("CMA-ES samples with the optional cmaes package, not installed here")
    space = SPACE
    if sampler_type == "grid":
        space = {"eta": {"type": "categorical", "choices": [0.01, 0.1, 0.3, 1.0]}, "epochs": 2}
    s = StudySpec.model_validate(
        {
            "name": "s",
            "task": "quadratic",
            "search_space": space,
            "sampler": {"type": sampler_type, "seed": 1, "options": sampler_options},
            "pruner": {"type": pruner_type, "options": pruner_options},
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's deprecation and experimental warnings
        tracemalloc.start()
        try:
            study = optuna.create_study(sampler=build_sampler(s, 0), pruner=build_pruner(s))
            for number in range(3):  # past n_startup_trials = 0: the model samples
                study.sampler = build_sampler(s, number)
                trial = study.ask(s.space.distributions())
                for step in range(1, 4):
                    trial.report(trial.params["eta"], step)
                    trial.should_prune()
                study.tell(trial, trial.params["eta"])
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert peak < 256 * 2**20


def test_stored_specs_keep_their_options_and_bounds() -> None:
    # Stored before the bounds: 50 retries, an option over its bound that Optuna takes, one
    # the models leave out, and a quadratic trial that sleeps 100 minutes.
    raw = {
        "name": "old",
        "task": "quadratic",
        "task_config": {"epochs": 100, "sleep_s": 60},
        "max_retries": 50,
        "sampler": {"type": "tpe", "options": {"n_ei_candidates": 20_000, "consider_prior": True}},
        "pruner": {"type": "median", "options": {"n_warmup_steps": 200_000}},
    }
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate(raw)
    problems = " | ".join(f"{e['loc']} {e['msg']}" for e in info.value.errors())
    for fragment in ("max_retries", "n_ei_candidates", "consider_prior", "n_warmup_steps"):
        assert fragment in problems
    # The quadratic hour is checked once the fields are valid.
    fixed = {**raw, "max_retries": 2, "sampler": {"type": "tpe"}, "pruner": {"type": "median"}}
    with pytest.raises(ValidationError, match="epochs=100 and sleep_s=60 make 6000 s"):
        StudySpec.model_validate(fixed)

    stored = StudySpec.from_stored(raw)
    assert stored.max_retries == 50
    assert stored.sampler.options == {"n_ei_candidates": 20_000, "consider_prior": True}
    assert stored.max_consecutive_failures == 3  # stored before the field existed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # consider_prior is deprecated
        assert isinstance(build_sampler(stored, 0), optuna.samplers.TPESampler)
    assert isinstance(build_pruner(stored), optuna.pruners.MedianPruner)


def test_stored_specs_are_still_held_to_what_always_held() -> None:
    with pytest.raises(ValidationError, match="sampler 'tpe': bad option"):
        StudySpec.from_stored({"name": "s", "task": "quadratic", **sampler("tpe", bogus=1)})
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        StudySpec.from_stored({"name": "s", "task": "quadratic", "max_retries": 101})
    with pytest.raises(ValidationError, match="unknown task"):
        StudySpec.from_stored({"name": "s", "task": "nope"})


def test_retry_and_failure_bounds() -> None:
    assert spec(max_retries=10).max_retries == 10
    with pytest.raises(ValidationError, match="max_retries\n.*must be at most 10, got 11"):
        spec(max_retries=11)
    assert spec().max_consecutive_failures == 3
    assert spec(max_consecutive_failures=1000).max_consecutive_failures == 1000
    for bad in (0, 1001):
        with pytest.raises(ValidationError, match="max_consecutive_failures"):
            spec(max_consecutive_failures=bad)
    schema = StudySpec.model_json_schema()["properties"]
    assert schema["max_retries"]["maximum"] == 10
    assert "failed" in schema["max_consecutive_failures"]["description"]


def test_a_quadratic_trial_sleeps_an_hour_at_most_over_the_whole_space() -> None:
    assert spec(task_config={"epochs": 60, "sleep_s": 60}).task_config["epochs"] == 60
    with pytest.raises(ValidationError, match="epochs=61 and sleep_s=60 make 3660 s"):
        spec(task_config={"epochs": 61, "sleep_s": 60})
    # Each end alone stays under the hour (100 x 0 s, 5 x 60 s); together they do not.
    both = {
        "epochs": {"type": "int", "low": 1, "high": 100},
        "sleep_s": {"type": "float", "low": 0.0, "high": 60.0},
    }
    with pytest.raises(ValidationError, match="epochs=100 and sleep_s=60 make 6000 s"):
        spec(search_space=both)
    assert StudySpec.from_stored({"name": "s", "task": "quadratic", "search_space": both})
