"""What the bootstrap intervals of importance cost: each evaluator, point alone and with them.

Builds studies of the paper's space in memory (random trials; eta in {0.3, 1.0} lifts the
metric, gamma and lr move it a little), then times `importance_info` cold, once with one
resample (about the point estimate alone) and once with the resamples `RESAMPLING` sets,
side by side, in CPU seconds of this process (the machine's other load does not count).
It also prints each evaluator's ranking, so the difference between them is in view.

    python benchmarks/importance_bootstrap.py [--trials 30 300] [--evaluators anova ped_anova]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optuna.trial import create_trial  # noqa: E402

from search_spaces import StudySpec  # noqa: E402
from service.plots import _importance  # noqa: E402
from service.plots._snapshot import StudySnapshot  # noqa: E402

SPACE = {
    "eta": {"type": "categorical", "choices": [0.0, 0.01, 0.3, 1.0]},
    "gamma": {"type": "float", "low": 0.3, "high": 1.0},
    "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
}


def snapshot(n: int, seed: int = 0) -> StudySnapshot:
    spec = StudySpec.model_validate(
        {"name": "bench", "task": "deep_mlp", "search_space": SPACE, "n_trials": n}
    )
    dists = spec.space.distributions()
    rng = random.Random(seed)
    trials = []
    for number in range(n):
        eta = rng.choice([0.0, 0.01, 0.3, 1.0])
        gamma = rng.uniform(0.3, 1.0)
        lr = math.exp(rng.uniform(math.log(0.01), math.log(0.1)))
        value = 0.1 + rng.gauss(0, 0.01)
        if eta >= 0.3:
            value = 0.95 + 0.02 * math.sqrt(lr / 0.1) - 0.01 * (gamma - 0.55) ** 2
            value += rng.gauss(0, 0.005)
        trial = create_trial(
            params={"eta": eta, "gamma": gamma, "lr": lr}, distributions=dists, value=value
        )
        trial.number = trial._trial_id = number  # as a storage numbers them: PED-ANOVA
        trials.append(trial)
    return StudySnapshot("bench", 1, spec.model_dump(mode="json"), tuple(trials))


def _cold(snap: StudySnapshot, evaluator: str) -> tuple[float, _importance.ImportanceInfo]:
    start = time.process_time()
    info = _importance.importance_info(snap, evaluator)
    assert isinstance(info, _importance.ImportanceInfo), info
    return time.process_time() - start, info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--evaluators", nargs="+", default=list(_importance.EVALUATORS))
    args = parser.parse_args()
    configured = dict(_importance.RESAMPLING)
    for evaluator in args.evaluators:  # imports (scikit-learn) and first calls, untimed
        _cold(snapshot(8), evaluator)
    head = f"{'trials':>6} {'evaluator':10} {'point s':>8} {'with B s':>9} {'ratio':>6}"
    print(f"{head} {'B':>4}  ranking")
    for n in args.trials:
        snap = snapshot(n)
        for evaluator in args.evaluators:
            setting = configured[evaluator]
            _importance.RESAMPLING[evaluator] = setting._replace(resamples=1)
            point, _ = _cold(snap, evaluator)
            _importance.RESAMPLING[evaluator] = setting
            full, info = _cold(snap, evaluator)
            ranking = ", ".join(
                f"{p} {v:.2f} [{lo:.2f}, {hi:.2f}]"
                for p, v, (lo, hi) in zip(
                    info.params, info.importances, info.intervals, strict=True
                )
            )
            print(
                f"{n:6d} {evaluator:10} {point:8.3f} {full:9.3f} {full / point:5.0f}x "
                f"{info.resamples:4d}  {ranking}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
