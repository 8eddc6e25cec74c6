"""A claimed trial's checkpoint: resuming a retry from it, and what is kept once it ends.

A retry of a lost or interrupted trial continues from the last checkpoint of its first
attempt (or of any attempt since): the saved curve becomes the retry's own (its epochs
reported again to Optuna as they were), ``resumed_from_epoch`` records where it picked up,
and the trainer resumes from the saved state. A finished trial's checkpoint is removed, or
with ``keep_checkpoints: best`` kept as the study's ``best`` while it is the best trial.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from search_spaces import trial_attrs
from search_spaces.optuna_adapter import (
    note_reported,
    trial_db_id,
    write_intermediate_values,
    write_user_attrs,
)
from worker.checkpoints import Checkpoint, CheckpointStore, SaveCadence, saved_curve
from worker.claims import Claim, first_attempt
from worker.db_retry import with_db_retry
from worker.tasks.base import takes_keyword
from worker.trial_log import TrialOutput

log = logging.getLogger("noisetune.worker")


def takes_checkpoint(trainer: Any) -> bool:
    """Whether a trainer accepts the ``checkpoint`` keyword of the trainer contract."""
    return takes_keyword(trainer, "checkpoint")


def study_dir(study_name: str) -> str:
    # A prefix keeps names such as ".." from meaning a directory of their own.
    return f"study-{study_name}"


def checkpoint_key(claim: Claim) -> str:
    """Checkpoints are keyed by study and the number of the trial's first attempt."""
    trial = claim.trial
    return f"{study_dir(claim.row.name)}/trial-{first_attempt(trial.number, trial.user_attrs)}"


def open_checkpoint(
    claim: Claim,
    store: CheckpointStore,
    curve: list[dict[str, Any]],
    stop: threading.Event,
    output: TrialOutput,
    stop_exc: type[BaseException],
    *,
    cadence: SaveCadence | None = None,
    saving_curve: list[dict[str, Any]] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> Checkpoint:
    """The trainer's checkpoint, with the saved state of an earlier attempt if there is one;
    a resumed curve is restored into `curve` and into the trial's record first.

    A stack's members share one `cadence`, save `saving_curve` (the curve as reported so
    far) where `curve` is written in the background, and stop when `stopping` says (the
    stack decides once per epoch) rather than as soon as `stop` is set.
    """
    key = checkpoint_key(claim)
    try:
        saved = store.load(key)
    except Exception as exc:  # an unreadable checkpoint: the trial starts over
        log.warning("checkpoint %s unreadable, starting from scratch: %s", key, exc)
        output.write(f"checkpoint {key} unreadable ({type(exc).__name__}: {exc}); started over\n")
        saved = None
    if saving_curve is None:
        saving_curve = curve
    if saved is not None:
        curve.extend(saved_curve(saved))
        if saving_curve is not curve:
            saving_curve.extend(saved_curve(saved))
        epoch = int(saved.get("epoch") or 0)
        _record_resume(claim, curve, epoch)
        output.write(f"resumed from the checkpoint of epoch {epoch}\n")
        log.info("trial %s of %s resumes from epoch %s", claim.trial.number, claim.row.name, epoch)
    return Checkpoint(
        store,
        key,
        every=claim.spec.checkpoint_every,
        resumed=saved,
        curve=saving_curve,
        stopping=stopping if stopping is not None else stop.is_set,
        stop_exc=stop_exc,
        cadence=cadence,
    )


def _record_resume(claim: Claim, curve: list[dict[str, Any]], epoch: int) -> None:
    trial, metric = claim.trial, str(claim.spec.metric)
    tid = trial_db_id(trial)
    points = [(int(p["epoch"]), p.get(metric)) for p in curve if "epoch" in p]
    values = [(e, float(v)) for e, v in points if isinstance(v, int | float)]

    def write() -> None:
        with claim.engine.begin() as conn:
            for step, value in values:
                write_intermediate_values(conn, {tid: (step, value)})
            write_user_attrs(conn, {tid: {trial_attrs.RESUMED_FROM_EPOCH: epoch}})

    with_db_retry(write, what="resuming a trial")
    for step, value in values:
        note_reported(trial, step, value)


def settle_checkpoint(claim: Claim, store: CheckpointStore, *, complete: bool) -> None:
    """A trial ended for good: remove its checkpoint, or keep it as the study's best."""
    key = checkpoint_key(claim)
    try:
        if complete and claim.spec.keep_checkpoints == "best":
            best = claim.study.best_trial
            if best.number == claim.trial.number:
                store.copy(key, f"{study_dir(claim.row.name)}/best")
        store.remove(key)
    except Exception as exc:  # a checkpoint left behind costs space, not correctness
        log.warning("could not remove checkpoint %s: %s", key, exc)
