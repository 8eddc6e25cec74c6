"""The ``noisetune`` command: serve, submit, status, token, demo, report, and plugged-in groups.

Command groups that live elsewhere (the worker's ``worker``, ``train``, ...) join through the
``noisetune.commands`` entry-point group, so this module never imports the worker.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

PLUGIN_GROUP = "noisetune.commands"
DEFAULT_SERVER = "http://127.0.0.1:8000"

app = typer.Typer(
    name="noisetune",
    help="Hyperparameter search for annealed gradient-noise schedules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="API tokens for the REST API.", no_args_is_help=True)
app.add_typer(token_app, name="token")

StorageOption = Annotated[
    str | None,
    typer.Option("--storage", help="database URL (default: $NOISETUNE_STORAGE or ./noisetune.db)"),
]


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _shown_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def _resolved(storage: str | None) -> str:
    from search_spaces.storage import resolve_url

    return resolve_url(storage)


def _open(storage: str | None) -> RDBStorage:
    from sqlalchemy.exc import SQLAlchemyError

    from search_spaces.storage import open_storage, resolve_url

    url = resolve_url(storage)
    try:
        return open_storage(url)
    except (SQLAlchemyError, ValueError, OSError) as exc:
        # The driver's own message, without SQLAlchemy's statement and help-link lines.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(f"cannot open the storage {_shown_url(url)}: {reason}")


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
    typer.echo(f"noisetune: storage {_shown_url(settings.storage_url)}", err=True)
    for line in _serve_notes(settings):
        typer.echo(f"noisetune: {line}", err=True)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


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
        except (SQLAlchemyError, OSError, ValueError):
            return notes  # the server still starts; /healthz says the database is down
        if not any(t.revoked_at is None for t in tokens) and settings.api_token is None:
            notes.append(
                "no token exists yet: make one with `noisetune token create --scope write`"
            )
    return notes


def _server_message(response: Any) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return f"HTTP {response.status_code}: {response.text[:500]}"
    if isinstance(detail, list):
        return "\n".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail)


@app.command()
def submit(
    spec: Annotated[Path, typer.Argument(help="study spec, YAML or JSON")],
    server: Annotated[
        str, typer.Option(envvar="NOISETUNE_SERVER", help="the noisetune server")
    ] = DEFAULT_SERVER,
) -> None:
    """Submit a study to a running server; prints the study's name."""
    import httpx
    import yaml

    try:
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {spec}: {exc.strerror or exc}")
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        fail(f"{spec} is not valid YAML or JSON: {exc}")
    if not isinstance(data, dict):
        fail(f"{spec} must hold a mapping (the study spec), not {type(data).__name__}")
    try:
        body = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        fail(f"{spec} holds a value JSON cannot carry: {exc}")
    headers = {"content-type": "application/json"}
    if token := os.environ.get("NOISETUNE_API_TOKEN"):
        headers["authorization"] = f"Bearer {token}"
    url = server.rstrip("/") + "/api/v1/studies"
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=60)
    except httpx.ConnectError:
        fail(f"cannot connect to the noisetune server at {server} (is `noisetune serve` running?)")
    except httpx.HTTPError as exc:
        fail(f"request to {server} failed: {type(exc).__name__}: {exc}")
    if response.status_code != 201:
        fail(
            f"the server refused the study (HTTP {response.status_code}):\n"
            + _server_message(response)
        )
    typer.echo(response.json()["name"])


def _console() -> Any:
    from rich.console import Console

    # Piped output (tests, scripts) gets wide lines rather than names cut at 80 columns.
    width = None if sys.stdout.isatty() else 200
    return Console(markup=False, highlight=False, width=width)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="a study; all studies when left out")] = None,
    storage: StorageOption = None,
) -> None:
    """Show studies and their progress, read straight from the database (no server needed)."""
    from rich.table import Table

    from service import studies

    opened = _open(storage)
    console = _console()
    if name is None:
        page = studies.list_studies(opened)
        if not page.data:
            typer.echo(f"no studies in {_shown_url(opened.url)}")
            return
        table = Table("name", "status", "finished", "running", "best value")
        for s in page.data:
            best_value = s.best_trial.value if s.best_trial else None
            finished = f"{s.progress.finished}/{s.n_trials}"
            table.add_row(s.name, s.status, finished, str(s.progress.running), _number(best_value))
        console.print(table)
        return
    try:
        s = studies.get_study(opened, name)
    except studies.StudyNotFound:
        fail(f"no study named {name!r} in {_shown_url(opened.url)} (`noisetune status` lists them)")
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
    console.print(grid)


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

    token = create_token(_open(storage).engine, scope.value, name)
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

    tokens = list_tokens(_open(storage).engine)
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
    _console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="the token's id (`token list`)")],
    storage: StorageOption = None,
) -> None:
    """Revoke a token: requests with it are refused from now on. It stays listed as revoked."""
    from service.auth import TokenNotFound, revoke_token

    try:
        revoked = revoke_token(_open(storage).engine, token_id)
    except TokenNotFound:
        fail(f"no token has the id {token_id} (`noisetune token list` shows them)")
    typer.echo(f"token {token_id} {'revoked' if revoked else 'was already revoked'}", err=True)


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
def migrate(storage: StorageOption = None) -> None:
    """Create or upgrade the database schema (safe to run from many processes at once)."""
    _open(storage)
    typer.echo(f"schema ready on {_shown_url(_resolved(storage))}")


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


_OWN_COMMANDS = {"serve", "submit", "status", "token", "demo", "report", "migrate"}


def main() -> None:
    # Our own commands skip the plugins: `noisetune serve` then never imports the worker
    # (nor torch), and quick commands start quickly.
    first = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if first not in _OWN_COMMANDS:
        load_plugins(app)
    app()
