"""The user attributes a worker records on each Optuna trial: their keys and value types.

Workers write them (worker.claims), the service reads them (the trials API, the trial
page, plots and reports); both import the keys from here.
"""

from __future__ import annotations

WORKER = "worker"  # the worker's id, host-pid-suffix
HOST = "host"
DEVICE = "device"  # cpu, cuda:N
ATTEMPT = "attempt"  # 0 for a first run, then one more per retry that counts
RETRY_OF = "retry_of"  # the number of the trial this one runs again
METRICS = "metrics"  # the final metrics (a pruned trial: its last epoch's)
CURVE = "curve"  # one point per epoch: {"epoch", "steps", each metric}
WALL_TIME_S = "wall_time_s"
FAIL_REASON = "fail_reason"  # one line: the exception's type and message, "diverged", ...
FIRST_ATTEMPT = "first_attempt"  # the number of the trial's first attempt (its checkpoints')
RESUMED_FROM_EPOCH = "resumed_from_epoch"  # the epoch a retry resumed from
# Each seed's run of a trial (studies with ``repeats``; one entry otherwise): a list of
# {"seed": int, "diverged": bool, "metrics": {...}} in seed order. Seed i of every trial of
# a study is the same seed (common random numbers across arms).
RUNS = "runs"
# The curve of each of those runs, in the same order (kept apart so that lists of trials
# read the runs without their curves; absent for one run, whose curve is CURVE).
RUN_CURVES = "run_curves"
# Where a trial came from, when not from the study's sampler: parameters queued by hand
# (``POST .../trials``, ``noisetune enqueue``; True), or a finished trial of another study
# copied in before sampling began ({"study": name, "number": its number there}).
QUEUED = "queued"
WARM_START = "warm_start"

# Keys of a curve point besides the epoch's metrics: the epoch, the optimizer steps reached,
# and the epoch's wall time in seconds.
EPOCH = "epoch"
STEPS = "steps"
EPOCH_SECONDS = "epoch_s"

# Each key's JSON type (numbers that are whole may read back as int).
TYPES: dict[str, type | tuple[type, ...]] = {
    WORKER: str,
    HOST: str,
    DEVICE: str,
    ATTEMPT: int,
    RETRY_OF: int,
    METRICS: dict,
    CURVE: list,
    WALL_TIME_S: (int, float),
    FAIL_REASON: str,
    FIRST_ATTEMPT: int,
    RESUMED_FROM_EPOCH: int,
    RUNS: list,
    RUN_CURVES: list,
    QUEUED: bool,
    WARM_START: dict,
}
