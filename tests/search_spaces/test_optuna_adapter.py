"""The contract between noisetune and the installed Optuna, on real databases.

search_spaces.optuna_adapter reads and writes Optuna's tables and uses private attributes
of its objects; each test here checks one of those against what Optuna's own public API
says, so an Optuna upgrade that changes them fails here first.
"""

from __future__ import annotations

import math

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from search_spaces import optuna_adapter as oa


@pytest.fixture
def study(storage: optuna.storages.RDBStorage) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=storage, direction="maximize")


def test_every_column_the_adapter_names_exists_in_optunas_schema(
    storage: optuna.storages.RDBStorage,
) -> None:
    inspector = sa.inspect(storage.engine)
    for table in (
        oa.trials_table,
        oa.params_table,
        oa.values_table,
        oa.user_attrs_table,
        oa.system_attrs_table,
        oa.intermediate_values_table,
    ):
        have = {c["name"] for c in inspector.get_columns(table.name)}
        assert {c.name for c in table.columns} <= have, table.name


def test_written_user_attrs_read_back_through_optuna(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    trial = study.ask()
    trial.set_user_attr("kept", 1)
    with storage.engine.begin() as conn:
        oa.write_user_attrs(conn, {oa.trial_db_id(trial): {"a": {"x": [1, 2]}, "kept": 2}})
    assert storage.get_trial(oa.trial_db_id(trial)).user_attrs == {"a": {"x": [1, 2]}, "kept": 2}


def test_intermediate_values_are_written_for_running_trials_only(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    running, finished = study.ask(), study.ask()
    study.tell(finished, 0.5)
    values = {oa.trial_db_id(running): (3, 0.25), oa.trial_db_id(finished): (3, 0.75)}
    with storage.engine.begin() as conn:
        written = oa.write_intermediate_values(conn, values)
    assert written == {oa.trial_db_id(running)}
    assert storage.get_trial(oa.trial_db_id(running)).intermediate_values == {3: 0.25}
    assert storage.get_trial(oa.trial_db_id(finished)).intermediate_values == {}
    # The trial object's cached copy follows, as Trial.report keeps it.
    oa.note_reported(running, 3, 0.25)
    assert oa.frozen_trial(running).intermediate_values == {3: 0.25}
    assert oa.latest_trial(running).intermediate_values == {3: 0.25}


def test_state_is_filters_on_every_backend(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask()
    t = oa.trials_table.c
    study_id = storage.get_study_id_from_name("s")

    def count(*states: str) -> int:
        query = sa.select(sa.func.count()).where(t.study_id == study_id, oa.state_is(*states))
        with storage.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    assert (count("RUNNING"), count("COMPLETE", "FAIL"), count("WAITING")) == (1, 2, 0)
    with pytest.raises(KeyError):
        oa.state_is("DONE")


def test_stored_values_and_times_read_as_optuna_reads_them(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(-math.inf, 1)
    study.tell(trial, math.inf)
    frozen = storage.get_trial(oa.trial_db_id(trial))
    with storage.engine.connect() as conn:
        value = conn.execute(sa.select(oa.values_table)).one()
        step = conn.execute(sa.select(oa.intermediate_values_table)).one()
        param = conn.execute(sa.select(oa.params_table)).one()
        row = conn.execute(sa.select(oa.trials_table)).one()
    assert oa.stored_float(value.value, value.value_type) == math.inf
    assert oa.stored_float(step.intermediate_value, step.intermediate_value_type) == -math.inf
    dist = oa.distribution(param.distribution_json)
    assert dist == frozen.distributions["x"]
    assert dist.to_external_repr(param.param_value) == frozen.params["x"]
    assert oa.trial_state(row.state) == TrialState.COMPLETE
    assert oa.naive(row.datetime_start) == frozen.datetime_start
    assert oa.utc(row.datetime_complete).tzinfo is not None  # type: ignore[union-attr]


def test_a_read_once_view_reads_the_study_once(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    cached = optuna.load_study(study_name="s", storage=oa.cached_storage(storage))
    study.tell(study.ask(), 1.0)
    view = oa.read_once(cached)
    assert view is not None and len(view.get_trials(deepcopy=False)) == 1
    study.tell(study.ask(), 2.0)  # written meanwhile, through another storage
    assert len(view.get_trials(deepcopy=False)) == 1  # not read again
    assert len(cached.get_trials(deepcopy=False)) == 2  # the cache itself still updates
    bare = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    assert oa.read_once(bare) is None  # no trial cache to read through


def test_tell_helpers_match_optunas_own(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    trial = study.ask()
    assert oa.trial_storage(trial).get_trial(oa.trial_db_id(trial)).number == trial.number
    frozen = oa.frozen_trial(trial)
    assert frozen.number == trial.number and frozen.state == TrialState.RUNNING
    filtered = oa.filter_study(study, frozen)
    assert filtered.study_name == "s"


def test_a_trial_queued_by_the_adapter_is_one_enqueue_trial_would_make(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    study.ask()  # trial 0, so that the number returned is not merely the first
    number = oa.enqueue_params(
        storage, storage.get_study_id_from_name("s"), {"x": 0.25}, {"by": "hand"}
    )
    study.enqueue_trial({"x": 0.5}, user_attrs={"by": "optuna"})
    mine, theirs = study.get_trials(states=(TrialState.WAITING,))
    assert mine.number == number == 1
    assert mine.system_attrs == {"fixed_params": {"x": 0.25}} and mine.user_attrs == {"by": "hand"}
    assert {k: v for k, v in theirs.system_attrs.items() if k != "fixed_params"} == {}
    popped = study.ask()
    assert popped.number == number
    assert popped.suggest_float("x", 0, 1) == 0.25 and popped.suggest_float("y", 0, 1) is not None


def test_complete_trials_inserted_at_once_read_back_as_add_trials_makes_them(
    storage: optuna.storages.RDBStorage, study: optuna.Study
) -> None:
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        "x": optuna.distributions.FloatDistribution(0.001, 1.0, log=True),
        "k": optuna.distributions.IntDistribution(1, 9, step=2),
        "c": optuna.distributions.CategoricalDistribution(["a", None, 0.5]),
    }
    made = [
        optuna.trial.create_trial(
            params={"x": 0.01 * (i + 1), "k": 2 * i + 1, "c": [None, "a", 0.5][i]},
            distributions=dists,
            value=[0.25, math.inf, -1.0][i],
            user_attrs={"warm_start": {"study": "o", "number": i}, "metrics": {"m": i}},
        )
        for i in range(3)
    ]
    study.ask()  # a trial before them: the inserted ones are numbered after it
    with storage.engine.begin() as conn:
        oa.insert_complete_trials(conn, storage.get_study_id_from_name("s"), made)
    other = optuna.create_study(study_name="o", storage=storage, direction="maximize")
    other.ask()
    other.add_trials(made)
    mine = storage.get_all_trials(storage.get_study_id_from_name("s"))[1:]
    theirs = other.get_trials()[1:]

    def seen(t: optuna.trial.FrozenTrial) -> tuple[object, ...]:
        return (t.number, t.state, t.value, t.params, t.distributions, t.user_attrs)

    assert [seen(t) for t in mine] == [seen(t) for t in theirs]
    assert [t.number for t in mine] == [1, 2, 3] and mine[1].value == math.inf
    failed = optuna.trial.create_trial(state=TrialState.FAIL)
    with storage.engine.begin() as conn, pytest.raises(ValueError, match="only complete"):
        oa.insert_complete_trials(conn, storage.get_study_id_from_name("o"), [failed])
