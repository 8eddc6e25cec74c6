"""Hyperparameter importance from a snapshot: shares, their bootstrap intervals, and notes.

Three evaluators: ``anova`` (one-way ANOVA effect sizes, `_anova`; the default) and
Optuna's ``ped_anova`` and ``fanova``. Optuna's evaluators read trials through a Study;
`_SnapshotStudy` is a Study whose trials are the snapshot's, so importance never re-reads
the database.

The default is ``anova`` because PED-ANOVA, which asks what sets the best 10% of trials
apart, ranks a categorical parameter that decides the result low: on a study where eta in
{0, 0.01} stays at chance and eta in {0.3, 1.0} reaches the top, the best trials split
between two of four choices, a divergence that a continuous parameter on a 50-point grid
beats with small effects (eta's share was 0.14-0.28 with 300 random trials; fANOVA and
ANOVA gave it above 0.9). fANOVA agrees with ANOVA there but refits a forest per bootstrap
resample (0.2-0.5 s each), so it is offered, not the default.

Uncertainty: the complete trials are resampled with replacement (`RESAMPLING`, a fixed
seed) and each resample is ranked by the same evaluator; each share carries the percentile
interval of its resampled shares (`_bootstrap`).

Conditional parameters (a `when` in the space) are not ranked: the evaluators need a
parameter in every trial they read, and a share over only the trials of one branch would
not add up with the others. Their names come back in `not_ranked`.
"""

from __future__ import annotations

import warnings
from collections.abc import Container
from typing import TYPE_CHECKING, Any, NamedTuple, get_args

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

if TYPE_CHECKING:
    from optuna.importance import BaseImportanceEvaluator

from search_spaces.optuna_adapter import quiet_in_memory_studies
from search_spaces.statistics import CONFIDENCE
from service.plots._anova import anova_shares, category_codes
from service.plots._bootstrap import Statistic, percentile_intervals
from service.plots._data import thin
from service.plots._importance_notes import importance_notes
from service.plots._snapshot import StudySnapshot, TooFew, too_few
from service.schemas import DEFAULT_EVALUATOR, Evaluator

# Each importance run builds a throwaway in-memory Study; its creation is not news.
quiet_in_memory_studies()

EVALUATORS: tuple[Evaluator, ...] = get_args(Evaluator)
MIN_TRIALS = 4
# Optuna's default forest (64 trees, depth 64) takes minutes past a few hundred trials;
# 32 trees of depth 6 on an even spread of at most 2,000 trials take a second or two and
# rank parameters the same on the benchmark study.
FANOVA_MAX_TRIALS = 2000
FANOVA_TREES = 32
FANOVA_DEPTH = 6
BOOTSTRAP_SEED = 0


class Resampling(NamedTuple):
    resamples: int
    # Optuna's evaluators cost more per trial: past this many trials, the intervals come
    # from resamples of an even spread of this many. They are then wider than the whole
    # study's would be (they answer for that many trials), never narrower.
    max_trials: int | None


# Sized by what one resample costs (benchmarks/importance_bootstrap.py). ANOVA: about 0.5
# ms at 300 trials. PED-ANOVA: about 10 ms. fANOVA refits its forest, about 0.2 s at 30
# trials and 0.5 s at 300: only 20 resamples, so its interval is a rough one (the 2.5th
# and 97.5th percentiles of 20 draws lie close to their extremes).
RESAMPLING: dict[str, Resampling] = {
    "anova": Resampling(200, None),
    "ped_anova": Resampling(100, 300),
    "fanova": Resampling(20, 200),
}


class ImportanceInfo(NamedTuple):
    evaluator: str
    params: list[str]  # most important first
    importances: list[float]  # shares that sum to 1
    n_trials: int
    # Varying parameters some complete trials lack (conditional ones): not ranked.
    not_ranked: tuple[str, ...] = ()
    # (low, high) of each share, in the order of `params`, at `confidence`.
    intervals: tuple[tuple[float, float], ...] = ()
    resamples: int = 0  # bootstrap resamples the intervals rest on
    confidence: float = CONFIDENCE
    notes: tuple[str, ...] = ()  # what the ranking cannot claim (`_importance_notes`)


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


def _anova_statistic(
    snap: StudySnapshot, trials: list[FrozenTrial], params: list[str]
) -> Statistic:
    y = np.array([t.value for t in trials], dtype=float)
    columns: dict[str, tuple[np.ndarray, bool]] = {}
    for p in params:
        values = [t.params[p] for t in trials]
        categorical = snap.is_categorical(p)
        columns[p] = (
            category_codes(values) if categorical else np.array(values, float),
            categorical,
        )

    def shares(rows: np.ndarray) -> dict[str, float] | None:
        picked = y[rows]
        if picked.min() == picked.max():
            return None
        return anova_shares({p: (v[rows], c) for p, (v, c) in columns.items()}, picked)

    return shares


def _optuna_statistic(
    snap: StudySnapshot, trials: list[FrozenTrial], params: list[str], evaluator: str
) -> Statistic:
    from optuna.importance import get_param_importances

    def shares(rows: np.ndarray) -> dict[str, float] | None:
        picked = [trials[i] for i in rows]
        if len({t.value for t in picked}) < 2:
            return None
        study = _SnapshotStudy(snap, picked)
        with warnings.catch_warnings():
            # Optuna warns that the evaluator is experimental and when shares come out equal.
            warnings.simplefilter("ignore")
            try:
                found = get_param_importances(study, evaluator=_evaluator(evaluator), params=params)
            except RuntimeError:
                # fANOVA: every tree of the forest saw a single value (a resample that
                # repeats a few trials); the shares of this resample are undefined.
                if evaluator != "fanova":
                    raise
                return None
        return {k: float(v) for k, v in found.items()}

    return shares


def importance_info(
    snap: StudySnapshot, evaluator: str = DEFAULT_EVALUATOR
) -> ImportanceInfo | TooFew:
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
    statistic = (
        _anova_statistic(snap, trials, params)
        if evaluator == "anova"
        else _optuna_statistic(snap, trials, params, evaluator)
    )
    point = statistic(np.arange(len(trials)))
    if point is None:
        return TooFew(
            "importance", 2, 1, f"importance needs complete trials whose {snap.metric} differs"
        )
    ordered = sorted(point, key=lambda p: -point[p])
    resampling = RESAMPLING[evaluator]
    if resampling.max_trials is not None and len(trials) > resampling.max_trials:
        trials = thin(sorted(trials, key=lambda t: t.number), resampling.max_trials, 0)
        statistic = _optuna_statistic(snap, trials, params, evaluator)
    boot = percentile_intervals(
        statistic, len(trials), resampling.resamples, seed=BOOTSTRAP_SEED, point=point
    )
    intervals = tuple(boot.intervals[p] for p in ordered) if boot.resamples else ()
    return ImportanceInfo(
        evaluator,
        ordered,
        [point[p] for p in ordered],
        len(done),
        tuple(not_ranked),
        intervals,
        boot.resamples,
        boot.confidence,
        importance_notes(evaluator, ordered, intervals, len(done), boot.confidence),
    )
