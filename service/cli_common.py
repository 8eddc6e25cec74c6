"""What the ``noisetune`` commands share: the storage option, opening it, and failing cleanly."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

StorageOption = Annotated[
    str | None,
    typer.Option("--storage", help="database URL (default: $NOISETUNE_STORAGE or ./noisetune.db)"),
]


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def resolved(storage: str | None) -> str:
    from search_spaces.storage import resolve_url

    return resolve_url(storage)


def open_or_fail(storage: str | None) -> RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    from search_spaces.schema import SchemaOutOfDate
    from search_spaces.storage import open_storage, resolve_url

    url = resolve_url(storage)
    try:
        return open_storage(url)
    except SchemaOutOfDate as exc:
        fail(f"{shown_url(url)}: {exc}")
    except (SQLAlchemyError, ValueError, OSError) as exc:
        # The driver's own message, without SQLAlchemy's statement and help-link lines.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(f"cannot open the storage {shown_url(url)}: {reason}")


def console() -> Any:
    from rich.console import Console

    # Piped output (tests, scripts) gets wide lines rather than names cut at 80 columns.
    width = None if sys.stdout.isatty() else 200
    return Console(markup=False, highlight=False, width=width)
