"""``noisetune migrate``: bring the database to this noisetune's schema, or check that it is.

``--check`` changes nothing, so an orchestrator can hold the service and the workers back
until the one migration (a Kubernetes Job, a compose service) has run: ``--check --wait``
is the init container of deploy/kubernetes.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from service.cli_common import StorageOption, fail, resolved, shown_url

# Seconds between two looks of `--check --wait`.
POLL_S = 3.0


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def migrate_command(
    storage: StorageOption = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Change nothing: exit 0 when the schema is this noisetune's, 1 when it is "
            "not or the database cannot be reached."
        ),
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(help="With --check: look again every few seconds until it is."),
    ] = False,
) -> None:
    """Create or upgrade the database schema (safe to run from many processes at once)."""
    from sqlalchemy.exc import SQLAlchemyError

    from search_spaces.storage import migrate as upgrade_schema

    url = resolved(storage)
    if wait and not check:
        fail("--wait goes with --check")
    if check:
        _check(url, wait)
        return
    try:
        before, after = upgrade_schema(url)
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot migrate {shown_url(url)}: {_first_line(exc)}")
    change = "already at" if before == after else f"upgraded from {before or 'none'} to"
    typer.echo(f"schema of {shown_url(url)} {change} {after}")


def _check(url: str, wait: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from search_spaces.storage import schema_status

    while True:
        try:
            found, needed = schema_status(url)
        except (SQLAlchemyError, OSError) as exc:
            problem = f"cannot reach {shown_url(url)}: {_first_line(exc)}"
        else:
            if found == needed:
                typer.echo(f"schema of {shown_url(url)} is {needed}, as this noisetune needs")
                return
            at = "no noisetune schema" if found is None else f"schema {found}"
            problem = f"{shown_url(url)} has {at}; this noisetune needs {needed}"
        if not wait:
            fail(f"{problem}: run `noisetune migrate`")
        typer.echo(f"waiting: {problem}", err=True)
        time.sleep(POLL_S)
