"""The ``noisetune`` command: serve, submit, status, token, analyze, report, ..., and plugins.

Command groups that live elsewhere (the worker's ``worker``, ``train``, ...) join through the
``noisetune.commands`` entry-point group, so this module never imports the worker.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli_analyze import analyze_command
from service.cli_common import StorageOption, fail, shown_url
from service.cli_logs import logs_command
from service.cli_migrate import migrate_command
from service.cli_server import ServerOption, server_client
from service.cli_status import status_command
from service.cli_studies import enqueue_command, export_command, study_app
from service.cli_tokens import token_app

PLUGIN_GROUP = "noisetune.commands"

app = typer.Typer(
    name="noisetune",
    help="Hyperparameter search for annealed gradient-noise schedules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(token_app, name="token")
app.command("logs")(logs_command)
app.command("migrate")(migrate_command)
app.command("analyze")(analyze_command)
app.add_typer(study_app, name="study")
app.command("enqueue")(enqueue_command)
app.command("export")(export_command)


class AuthMode(enum.StrEnum):
    auto = "auto"
    required = "required"


@app.command()
def serve(
    storage: StorageOption = None,
    host: Annotated[str | None, typer.Option(help="default: $NOISETUNE_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default: $NOISETUNE_PORT or 8000")] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            help="host names the server answers to besides loopback, comma-separated "
            "('*': any, only behind a proxy that checks Host); default: $NOISETUNE_ALLOWED_HOSTS"
        ),
    ] = None,
    auth: Annotated[
        AuthMode | None,
        typer.Option(
            help="auto: writes need a token once tokens exist, an API token is set or the "
            "server listens beyond loopback; required: every write needs one "
            "(default: $NOISETUNE_AUTH or auto)"
        ),
    ] = None,
    read_requires_token: Annotated[
        bool | None,
        typer.Option(
            "--read-requires-token",
            help="reads need a token too (default: $NOISETUNE_READ_REQUIRES_TOKEN)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the REST API server."""
    import uvicorn
    from pydantic import ValidationError

    from service.app import create_app
    from service.settings import Settings

    given: dict[str, Any] = {
        "storage": storage,
        "host": host,
        "port": port,
        "allowed_hosts": allowed_hosts,
        "auth": auth.value if auth else None,
        "read_requires_token": read_requires_token,
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        fail(f"bad setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    typer.echo(f"noisetune: storage {shown_url(settings.storage_url)}", err=True)
    _check_schema_or_fail(settings.storage_url)
    for line in _serve_notes(settings):
        typer.echo(f"noisetune: {line}", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


def _check_schema_or_fail(url: str) -> None:
    """Stop with the command to run when the database's schema is not this noisetune's.

    A database that cannot be reached does not stop the server: /healthz says so until it
    comes up.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from search_spaces.schema import SchemaOutOfDate
    from search_spaces.storage import open_storage

    try:
        open_storage(url)
    except SchemaOutOfDate as exc:
        fail(str(exc))
    except (SQLAlchemyError, OSError, ValueError):
        pass


def _serve_notes(settings: Any) -> list[str]:
    """What `serve` says at start about who may reach and change the server."""
    notes = []
    if settings.exposed:
        notes.append("listening beyond loopback, so writes need a token")
        if not settings.allowed_hosts:
            notes.append(
                "warning: only loopback host names (127.0.0.1, localhost, [::1]) will be "
                "answered; name this server's others with --allowed-hosts"
            )
    if settings.auth == "required" or settings.read_requires_token:
        from sqlalchemy.exc import SQLAlchemyError

        from search_spaces.storage import open_storage
        from service.auth import list_tokens

        try:
            tokens = list_tokens(open_storage(settings.storage_url).engine)
        except (SQLAlchemyError, OSError, ValueError, RuntimeError):
            return notes  # the server still starts; /healthz says the database is down
        if not any(t.revoked_at is None for t in tokens) and settings.api_token is None:
            notes.append(
                "no token exists yet: make one with `noisetune token create --scope write`"
            )
    return notes


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="study spec, YAML or JSON")],
    server: ServerOption = None,
) -> None:
    """Submit a study to a running server; prints the study's name."""
    with server_client(server, what="the study") as client:
        study = client.submit(spec)
    typer.echo(study.name)


app.command("status")(status_command)


@app.command()
def demo(
    storage: StorageOption = None,
    port: Annotated[int, typer.Option(help="port of the demo's server")] = 8000,
    workers: Annotated[int, typer.Option(help="local worker processes")] = 2,
    trials: Annotated[int | None, typer.Option(help="trials per study")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per trial")] = None,
    keep_serving: Annotated[
        bool, typer.Option(help="keep the dashboard up after the study completes")
    ] = False,
) -> None:
    """Run the paper's study end to end: server, local workers, dashboard, results."""
    from service.demo import run_demo

    raise typer.Exit(
        run_demo(
            storage=storage,
            port=port,
            workers=workers,
            trials=trials,
            epochs=epochs,
            keep_serving=keep_serving,
        )
    )


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="the study")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")],
    storage: StorageOption = None,
) -> None:
    """Write a self-contained HTML report of a study."""
    from service.report import write_report
    from service.studies import StudyNotFound

    try:
        write_report(name, output, storage)
    except StudyNotFound as exc:
        fail(str(exc))
    typer.echo(f"wrote {output}", err=True)


def load_plugins(root: typer.Typer) -> None:
    """Let each ``noisetune.commands`` entry point add its commands; a broken one only warns."""
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            register: Callable[[typer.Typer], None] = ep.load()
            register(root)
        except Exception as exc:
            typer.echo(
                f"warning: commands from {ep.value!r} are unavailable: {type(exc).__name__}: {exc}",
                err=True,
            )


_OWN_COMMANDS = {
    "serve",
    "submit",
    "status",
    "token",
    "logs",
    "analyze",
    "demo",
    "report",
    "migrate",
    "study",
    "enqueue",
    "export",
}


def main() -> None:
    # Our own commands skip the plugins: `noisetune serve` then never imports the worker
    # (nor torch), and quick commands start quickly.
    first = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if first not in _OWN_COMMANDS:
        load_plugins(app)
    app()
