"""Waiting for a study to end: poll it until completed, stopped or failed, with a progress
bar on a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from service.schemas import StudyPublic

# A study in one of these takes no more trials until someone changes it.
FINAL_STATUSES = frozenset({"completed", "stopped", "failed"})
Show = Callable[[StudyPublic], None]


def wait_for_study(
    fetch: Callable[[], StudyPublic],
    timeout: float | None,
    interval: float,
    progress: bool | None,
) -> StudyPublic:
    """The study as `fetch` reads it, once its status is final.

    Raises TimeoutError, saying how far it got, when `timeout` seconds pass first.
    `progress` None draws a bar only when stderr is a terminal.
    """
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
    if interval <= 0:
        raise ValueError(f"interval must be > 0 seconds, got {interval}")
    deadline = None if timeout is None else time.monotonic() + timeout
    show_bar = sys.stderr.isatty() if progress is None else progress
    with _bar(show_bar) as show:
        while True:
            study = fetch()
            show(study)
            if study.status in FINAL_STATUSES:
                return study
            if deadline is not None and time.monotonic() >= deadline:
                p = study.progress
                raise TimeoutError(
                    f"study {study.name!r} is still {study.status} after {timeout:g} s: "
                    f"{p.finished}/{study.n_trials} finished, {p.running} running, "
                    f"{p.waiting} waiting"
                )
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(pause, 0.0))


@contextmanager
def _bar(enabled: bool) -> Iterator[Show]:
    """A `show(study)` that draws finished/n_trials on stderr, or does nothing."""
    if not enabled:
        yield lambda study: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("", total=None, status="")

        def show(study: StudyPublic) -> None:
            p = study.progress
            bar.update(
                task,
                description=study.name,
                completed=p.finished,
                total=study.n_trials,
                status=f"{p.running} running, {study.status}",
            )

        yield show
