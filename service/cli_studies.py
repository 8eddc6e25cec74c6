"""``noisetune study set``, ``enqueue`` and ``export``: changing a study, queuing parameter
sets, and writing its trials to a file.

Changes go through the server, as ``submit`` does (its checks and tokens apply); an export
reads the database directly, as ``status`` and ``report`` do, so it needs no server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from service.export import ExportFormat

from service.cli_common import StorageOption, fail, open_or_fail
from service.cli_server import ServerOption, call_server

study_app = typer.Typer(help="Change a study after it was submitted.", no_args_is_help=True)


@study_app.command("set")
def study_set(
    name: Annotated[str, typer.Argument(help="the study")],
    n_trials: Annotated[
        int | None,
        typer.Option("--n-trials", help="grow or shrink the budget (not below what is counted)"),
    ] = None,
    priority: Annotated[
        int | None, typer.Option(help="workers serve higher priorities first")
    ] = None,
    max_retries: Annotated[
        int | None, typer.Option("--max-retries", help="re-runs of a lost trial (0-10)")
    ] = None,
    notes: Annotated[
        str | None, typer.Option(help="the study's notes, Markdown ('' clears them)")
    ] = None,
    notes_file: Annotated[
        Path | None, typer.Option("--notes-file", help="read the notes from this file")
    ] = None,
    server: ServerOption = None,
) -> None:
    """Change a study's n_trials, priority, max_retries or notes; its status stays.

    Growing a completed study makes it running again; a stopped or failed one runs once
    resumed.
    """
    if notes is not None and notes_file is not None:
        fail("give --notes or --notes-file, not both")
    if notes_file is not None:
        try:
            notes = notes_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {notes_file}: {exc}")
    given = {"n_trials": n_trials, "priority": priority, "max_retries": max_retries}
    body = {k: v for k, v in {**given, "notes": notes}.items() if v is not None}
    if not body:
        fail("nothing to change: give --n-trials, --priority, --max-retries or --notes")
    study = call_server("PATCH", f"/studies/{name}", body, server, what=f"the change to {name}")
    p = study["progress"]
    typer.echo(
        f"{study['name']}: {study['status']}, {p['finished']}/{study['n_trials']} finished, "
        f"priority {study['priority']}, max_retries {study['spec'].get('max_retries')}"
    )


def _parse_value(text: str) -> Any:
    """A value as typed: JSON where it parses (0.3, 10, true, "x"), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{item!r}: parameters are given as NAME=VALUE, e.g. eta=0.3")
        if key.strip() in params:
            fail(f"{key.strip()} is given twice")
        params[key.strip()] = _parse_value(value.strip())
    return params


def enqueue_command(
    name: Annotated[str, typer.Argument(help="the study")],
    assignments: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME=VALUE...", help="values to queue; the rest are sampled"),
    ] = None,
    server: ServerOption = None,
) -> None:
    """Queue a parameter set, e.g. `noisetune enqueue NAME eta=0.3 gamma=0.55`; prints the
    queued trial's number. It runs once, counts in n_trials, and is marked queued."""
    params = parse_assignments(assignments or [])
    answer = call_server(
        "POST", f"/studies/{name}/trials", {"params": params}, server, what="the parameter set"
    )
    for queued in answer["data"]:
        typer.echo(queued["number"])


def export_command(
    name: Annotated[str, typer.Argument(help="the study")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="the file to write: NAME.csv, or .jsonl for records"),
    ],
    storage: StorageOption = None,
) -> None:
    """Write a study's trials to a CSV file (a row per trial) or JSON Lines (full records
    with curves), read from the database a page at a time."""
    from service.export import export_trials
    from service.studies import StudyNotFound

    suffix = output.suffix.lower()
    formats: dict[str, ExportFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in formats:
        fail(f"{output}: the file name must end in .csv or .jsonl (it says which format)")
    opened = open_or_fail(storage)
    try:
        chunks = export_trials(opened, name, formats[suffix])
    except StudyNotFound as exc:
        fail(str(exc))
    try:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.writelines(chunks)
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote {output}", err=True)
