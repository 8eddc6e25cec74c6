"""Parameter importance for the API: the dashboard's snapshot-based computation, as JSON.

One implementation serves both the `/importance` endpoint and the importance plot, so the
two always agree, and both share the per-study snapshot and the importance cache.
"""

from __future__ import annotations

from optuna.storages import RDBStorage

from service.plots import cached_importance, study_snapshot
from service.plots._snapshot import TooFew
from service.schemas import Evaluator, ImportancePublic
from service.studies import require_row


def param_importance(
    storage: RDBStorage, name: str, evaluator: Evaluator = "ped_anova"
) -> ImportancePublic:
    """Each sampled parameter's share of the study metric's variation, on COMPLETE trials."""
    require_row(storage, name)
    info = cached_importance(study_snapshot(storage, name), evaluator, storage.url)
    if isinstance(info, TooFew):
        return ImportancePublic(evaluator=evaluator, importances={}, message=info.message)
    shares = dict(zip(info.params, info.importances, strict=True))
    return ImportancePublic(
        evaluator=evaluator, importances=shares, message=None, not_ranked=list(info.not_ranked)
    )
