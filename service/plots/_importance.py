"""Hyperparameter importance from a snapshot, with Optuna's evaluators.

Optuna's evaluators read trials through a Study; `_SnapshotStudy` is a Study whose trials
are the snapshot's, so importance never re-reads the database.

Conditional parameters (a `when` in the space) are not ranked: Optuna's evaluators need a
parameter in every trial they read (left to themselves, they rank the parameters all complete
trials share), and a share over only the trials of one branch would not add up with the
others. Their names come back in `not_ranked`.
"""

from __future__ import annotations

import warnings
from collections.abc import Container
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

if TYPE_CHECKING:
    from optuna.importance import BaseImportanceEvaluator

from search_spaces.optuna_adapter import quiet_in_memory_studies
from service.plots._data import thin
from service.plots._snapshot import StudySnapshot, TooFew, too_few

# Each importance run builds a throwaway in-memory Study; its creation is not news.
quiet_in_memory_studies()

Evaluator = Literal["ped_anova", "fanova"]
EVALUATORS: tuple[Evaluator, ...] = ("ped_anova", "fanova")
MIN_TRIALS = 4
# Optuna's default forest (64 trees, depth 64) takes minutes past a few hundred trials;
# 32 trees of depth 6 on an even spread of at most 2,000 trials take a second or two and
# rank parameters the same on the benchmark study.
FANOVA_MAX_TRIALS = 2000
FANOVA_TREES = 32
FANOVA_DEPTH = 6


class ImportanceInfo(NamedTuple):
    evaluator: str
    params: list[str]  # most important first
    importances: list[float]  # shares that sum to 1
    n_trials: int
    # Varying parameters some complete trials lack (conditional ones): not ranked.
    not_ranked: tuple[str, ...] = ()


class _SnapshotStudy(optuna.Study):
    def __init__(self, snap: StudySnapshot, trials: list[FrozenTrial]) -> None:
        storage = optuna.storages.InMemoryStorage()
        direction = StudyDirection.MAXIMIZE if snap.maximize else StudyDirection.MINIMIZE
        storage.create_new_study([direction], snap.name)
        super().__init__(
            study_name=snap.name, storage=storage, sampler=optuna.samplers.RandomSampler()
        )
        self._snapshot_trials = trials

    def get_trials(
        self, deepcopy: bool = True, states: Container[Any] | None = None
    ) -> list[FrozenTrial]:
        return [t for t in self._snapshot_trials if states is None or t.state in states]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def _evaluator(name: str) -> BaseImportanceEvaluator:
    # Imported here: optuna.importance loads scikit-learn, seconds that a server start and
    # every CLI command would otherwise pay.
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if name == "fanova":
        return FanovaImportanceEvaluator(n_trees=FANOVA_TREES, max_depth=FANOVA_DEPTH, seed=0)
    return PedAnovaImportanceEvaluator()


def importance_info(snap: StudySnapshot, evaluator: str = "ped_anova") -> ImportanceInfo | TooFew:
    if evaluator not in EVALUATORS:
        raise ValueError(f"unknown evaluator {evaluator!r}; allowed: {', '.join(EVALUATORS)}")
    done = snap.complete
    if len(done) < MIN_TRIALS:
        return too_few("importance", MIN_TRIALS, len(done), "complete trials")
    # Only sampled parameters that vary: a fixed one has no importance to measure.
    varying = snap.varying()
    params = [p for p in varying if all(p in t.params for t in done)]
    not_ranked = [p for p in varying if p not in params]
    if not params:
        also = f" (conditional ones are not ranked: {', '.join(not_ranked)})" if not_ranked else ""
        return TooFew(
            "importance", 1, 0, f"importance needs a searched parameter that varies{also}"
        )
    trials = done
    if evaluator == "fanova" and len(done) > FANOVA_MAX_TRIALS:
        trials = thin(sorted(done, key=lambda t: t.number), FANOVA_MAX_TRIALS, 0)
    study = _SnapshotStudy(snap, trials)
    with warnings.catch_warnings():
        # Optuna warns that the evaluator is experimental and when shares come out equal.
        warnings.simplefilter("ignore")
        from optuna.importance import get_param_importances

        shares = get_param_importances(study, evaluator=_evaluator(evaluator), params=params)
    ordered = sorted(shares.items(), key=lambda kv: -kv[1])
    return ImportanceInfo(
        evaluator,
        [k for k, _ in ordered],
        [float(v) for _, v in ordered],
        len(done),
        tuple(not_ranked),
    )
