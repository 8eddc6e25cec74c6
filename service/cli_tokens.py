"""``noisetune token``: create, list and revoke the REST API's tokens."""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from service.cli_common import StorageOption, console, fail, open_or_fail

token_app = typer.Typer(help="API tokens for the REST API.", no_args_is_help=True)


class TokenScope(enum.StrEnum):
    read = "read"
    write = "write"


@token_app.command("create")
def token_create(
    scope: Annotated[TokenScope, typer.Option(help="read: GET only; write: everything")],
    name: Annotated[str | None, typer.Option(help="a label to tell tokens apart")] = None,
    storage: StorageOption = None,
) -> None:
    """Create an API token and print it; only its hash is stored, so it is shown once."""
    from service.auth import create_token

    token = create_token(open_or_fail(storage).engine, scope.value, name)
    typer.echo(token)
    typer.echo("Keep this token now: it cannot be shown again.", err=True)


def _when(stamp: float | None) -> str:
    from datetime import UTC, datetime

    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@token_app.command("list")
def token_list(storage: StorageOption = None) -> None:
    """List tokens: id, name, scope, when made, last used and revoked (never the token)."""
    from rich.table import Table

    from service.auth import list_tokens

    tokens = list_tokens(open_or_fail(storage).engine)
    if not tokens:
        typer.echo("no tokens (`noisetune token create` makes one)")
        return
    table = Table("id", "name", "scope", "created", "last used", "revoked")
    for t in tokens:
        table.add_row(
            str(t.id),
            t.name or "-",
            t.scope,
            _when(t.created_at),
            _when(t.last_used_at),
            _when(t.revoked_at),
        )
    console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="the token's id (`token list`)")],
    storage: StorageOption = None,
) -> None:
    """Revoke a token: requests with it are refused from now on. It stays listed as revoked."""
    from service.auth import TokenNotFound, revoke_token

    try:
        revoked = revoke_token(open_or_fail(storage).engine, token_id)
    except TokenNotFound:
        fail(f"no token has the id {token_id} (`noisetune token list` shows them)")
    typer.echo(f"token {token_id} {'revoked' if revoked else 'was already revoked'}", err=True)
