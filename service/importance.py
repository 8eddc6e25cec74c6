"""Parameter importance for the API: the dashboard's snapshot-based computation, as JSON.

One implementation serves both the `/importance` endpoint and the importance plot, so the
two always agree, and both share the per-study snapshot and the importance cache.
"""

from __future__ import annotations

from optuna.storages import RDBStorage

from service.plots import cached_importance, storage_key, study_snapshot
from service.plots._snapshot import TooFew
from service.schemas import DEFAULT_EVALUATOR, Evaluator, ImportancePublic
from service.studies import require_row


def param_importance(
    storage: RDBStorage, name: str, evaluator: Evaluator = DEFAULT_EVALUATOR
) -> ImportancePublic:
    """Each sampled parameter's share of the study metric's variation, on COMPLETE trials,
    with its bootstrap interval and the notes on what the ranking cannot claim."""
    require_row(storage, name)
    # Keyed as the plots key it: the page's importance plot and its notes share one run.
    info = cached_importance(study_snapshot(storage, name), evaluator, storage_key(storage))
    if isinstance(info, TooFew):
        return ImportancePublic(evaluator=evaluator, importances={}, message=info.message)
    return ImportancePublic(
        evaluator=evaluator,
        importances=dict(zip(info.params, info.importances, strict=True)),
        message=None,
        not_ranked=list(info.not_ranked),
        intervals=dict(zip(info.params, info.intervals, strict=True)) if info.intervals else {},
        confidence=info.confidence if info.intervals else None,
        bootstrap=info.resamples,
        n_trials=info.n_trials,
        notes=list(info.notes),
    )
