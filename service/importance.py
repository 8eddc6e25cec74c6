"""Parameter importance (PED-ANOVA or fANOVA), cached per number of finished trials."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage

from search_spaces.storage import study_progress
from service import optuna_tables as tables
from service.schemas import Evaluator, ImportancePublic
from service.studies import require_row

# Importances are costly (they read every complete trial) but only change when trials finish.
_importance_cache: dict[tuple[Any, ...], ImportancePublic] = {}
_CACHE_SIZE = 256
# One computation at a time: many viewers of one big study cost one computation, and the
# warnings that explain an answer are caught without another thread's getting mixed in.
_compute_lock = threading.Lock()


def _complete_study(storage: RDBStorage, name: str) -> optuna.Study:
    """The study's COMPLETE trials, params and value only, in an in-memory study.

    Loading the stored study would also read every trial's curve and attrs, which on a
    10,000-trial study costs more than the importance computation itself.
    """
    study_id = storage.get_study_id_from_name(name)
    t_ = tables.trials
    done = [t_.c.study_id == study_id, sa.cast(t_.c.state, sa.String) == "COMPLETE"]
    on = t_.c.trial_id
    with storage.engine.connect() as conn:
        params = conn.execute(
            sa.select(tables.params).join(t_, on == tables.params.c.trial_id).where(*done)
        ).all()
        values = conn.execute(
            sa.select(tables.values)
            .join(tables.trials, on == tables.values.c.trial_id)
            .where(*done, tables.values.c.objective == 0)
        ).all()
    chosen: dict[int, dict[str, Any]] = {}
    dists: dict[int, dict[str, BaseDistribution]] = {}
    for p in params:
        dist = tables.distribution(p.distribution_json)
        chosen.setdefault(p.trial_id, {})[p.param_name] = dist.to_external_repr(p.param_value)
        dists.setdefault(p.trial_id, {})[p.param_name] = dist
    study = optuna.create_study(directions=storage.get_study_directions(study_id))
    study.add_trials(
        optuna.trial.create_trial(
            params=chosen.get(v.trial_id, {}),
            distributions=dists.get(v.trial_id, {}),
            value=tables.stored_float(v.value, v.value_type),
        )
        for v in values
    )
    return study


def _evaluator(name: Evaluator) -> optuna.importance.BaseImportanceEvaluator:
    if name == "fanova":
        # Seeded so that the same trials always give the same answer.
        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    return optuna.importance.PedAnovaImportanceEvaluator()


def param_importance(
    storage: RDBStorage, name: str, evaluator: Evaluator = "ped_anova"
) -> ImportancePublic:
    """Each sampled parameter's share of the study metric's variation, on COMPLETE trials."""
    row = require_row(storage, name)
    progress = study_progress(storage.engine, name, row.study_id)
    n_complete = progress.by_state.get("COMPLETE", 0)
    key = (storage.url, name, row.study_id, evaluator, n_complete, progress.counted)
    cached = _importance_cache.get(key)
    if cached is not None:
        return cached
    with _compute_lock:
        result = _importance_cache.get(key) or _compute_importance(
            storage, name, evaluator, n_complete
        )
        if len(_importance_cache) >= _CACHE_SIZE:
            _importance_cache.clear()
        _importance_cache[key] = result
    return result


def _compute_importance(
    storage: RDBStorage, name: str, evaluator: Evaluator, n_complete: int
) -> ImportancePublic:
    if n_complete < 2:
        return ImportancePublic(
            evaluator=evaluator,
            importances={},
            message=f"importance needs at least 2 complete trials; this study has {n_complete}",
        )
    study = _complete_study(storage, name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = optuna.importance.get_param_importances(study, evaluator=_evaluator(evaluator))
        except (ValueError, RuntimeError) as exc:
            return ImportancePublic(evaluator=evaluator, importances={}, message=str(exc))
    if not raw:
        return ImportancePublic(
            evaluator=evaluator,
            importances={},
            message="no parameter is sampled in this study's complete trials",
        )
    total = sum(raw.values())
    shares = {p: (v / total if total > 0 else 1.0 / len(raw)) for p, v in raw.items()}
    notes = [
        str(w.message)
        for w in caught
        if not issubclass(w.category, optuna.exceptions.ExperimentalWarning)
    ]
    return ImportancePublic(
        evaluator=evaluator, importances=shares, message="; ".join(notes) or None
    )
