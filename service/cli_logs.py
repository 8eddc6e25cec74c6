"""``noisetune logs NAME N [--follow]``: what a trial printed, read from the database."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from service.cli_common import StorageOption, fail, open_or_fail


def logs_command(
    name: Annotated[str, typer.Argument(help="the study")],
    number: Annotated[int, typer.Argument(help="the trial's number", min=0)],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing until the trial ends")
    ] = False,
    storage: StorageOption = None,
) -> None:
    """Print a trial's log: its trainer's output and, if it failed, its traceback."""
    from optuna.trial import TrialState

    from search_spaces.trial_logs import read_log
    from service.studies import StudyNotFound
    from service.trials import TrialNotFound, trial_id_of

    opened = open_or_fail(storage)
    try:
        trial_id = trial_id_of(opened, name, number)
    except (StudyNotFound, TrialNotFound) as exc:
        fail(str(exc))
    shown = 0  # bytes of the log printed so far, counting what the cap dropped
    while True:
        # Read the state first: a log read after the trial ended is the whole log.
        ended = opened.get_trial(trial_id).state in (
            TrialState.COMPLETE,
            TrialState.PRUNED,
            TrialState.FAIL,
        )
        log = read_log(opened.engine, trial_id)
        if log is not None:
            total = log.dropped_bytes + len(log.text)
            if shown == 0:
                sys.stdout.write(log.render())
            elif total > shown:
                sys.stdout.write(log.text[max(0, shown - log.dropped_bytes) :])
            shown = max(shown, total)
            sys.stdout.flush()
        if not follow or ended:
            return
        time.sleep(1.0)
