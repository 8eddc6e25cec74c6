"""``noisetune status``: studies and their progress, read from the database (no server
needed) or, with ``--server``, through a server's API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from service.cli_common import StorageOption, console, fail, open_or_fail, shown_url

if TYPE_CHECKING:
    from service.schemas import StudyPublic


def status_command(
    name: Annotated[str | None, typer.Argument(help="a study; all studies when left out")] = None,
    storage: StorageOption = None,
    server: Annotated[
        str | None,
        typer.Option(help="read through this noisetune server instead of the database"),
    ] = None,
) -> None:
    """Show studies and their progress, read straight from the database (no server needed),
    or through a server's API with --server."""
    if server is not None and storage is not None:
        fail("give --storage or --server, not both")
    if server is not None:
        found, where = _through(server, name), server
    else:
        found, where = _from_database(storage, name)
    if name is None:
        if not found:
            typer.echo(f"no studies in {where}")
            return
        console().print(_table(found))
        return
    if found is None:
        fail(f"no study named {name!r} in {where} (`noisetune status` lists them)")
    console().print(_detail(found))


def _from_database(storage: str | None, name: str | None) -> tuple[Any, str]:
    """All studies (`name` None), the one named, or None if there is none; and where."""
    from service import studies

    opened = open_or_fail(storage)
    where = shown_url(opened.url)
    if name is None:
        return studies.list_studies(opened).data, where
    try:
        return studies.get_study(opened, name), where
    except studies.StudyNotFound:
        return None, where


def _through(server: str, name: str | None) -> Any:
    from service.cli_server import server_client
    from service.client import ClientError

    with server_client(server, what="the request") as client:
        if name is None:
            return client.studies()
        try:
            return client.study(name)
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _table(found: list[StudyPublic]) -> Any:
    from rich.table import Table

    table = Table("name", "status", "finished", "running", "best value")
    for s in found:
        best_value = s.best_trial.value if s.best_trial else None
        finished = f"{s.progress.finished}/{s.n_trials}"
        table.add_row(s.name, s.status, finished, str(s.progress.running), _number(best_value))
    return table


def _detail(s: StudyPublic) -> Any:
    from rich.table import Table

    spec, p, b = s.spec, s.progress, s.best_trial
    grid = Table.grid(padding=(0, 2))
    grid.add_row("study", s.name)
    grid.add_row("task", f"{spec['task']} ({spec['metric']}, {spec['direction']})")
    grid.add_row("status", s.status)
    if s.fail_reason:
        grid.add_row("reason", s.fail_reason)
    grid.add_row(
        "progress", f"{p.finished}/{s.n_trials} finished, {p.running} running, {p.waiting} waiting"
    )
    grid.add_row("trials", ", ".join(f"{k} {v}" for k, v in s.counts.items()))
    best = (
        "none yet"
        if b is None
        else (
            f"#{b.number}  {spec['metric']} {_number(b.value)}  "
            + " ".join(f"{k}={v}" for k, v in b.params.items())
        )
    )
    grid.add_row("best", best)
    grid.add_row("created", s.created_at.isoformat(timespec="seconds"))
    return grid
