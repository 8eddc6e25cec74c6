"""``noisetune analyze NAME --by eta``: the effect analysis, read from the database."""

from __future__ import annotations

from typing import Annotated

import typer

from service.cli_common import StorageOption, console, fail, open_or_fail


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",")]


def analyze_command(
    name: Annotated[str, typer.Argument(help="the study")],
    by: Annotated[
        str, typer.Option(help="parameters to group runs by, comma-separated: eta,gamma")
    ] = "eta",
    baseline: Annotated[
        str | None,
        typer.Option(
            help="the group to compare with, its values in --by order: 0,0.55 "
            "(default: eta 0 when grouping by eta)"
        ),
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="default: the spec's success metric, else the study's")
    ] = None,
    storage: StorageOption = None,
) -> None:
    """Group a study's runs by parameters: means and success rates with their intervals."""
    from rich.table import Table

    from service.analysis import analyze
    from service.analysis_table import effect_table
    from service.plots import study_snapshot
    from service.studies import InvalidInput, StudyNotFound

    opened = open_or_fail(storage)
    try:
        snap = study_snapshot(opened, name)
        info = analyze(
            snap, [n for n in _names(by) or [] if n], baseline=_names(baseline), metric=metric
        )
    except StudyNotFound as exc:
        fail(f"{exc} (`noisetune status` lists them)")
    except InvalidInput as exc:
        fail(exc.msg.replace("`by`", "--by"))
    table = effect_table(info)
    out = console()
    grid = Table(*table.headers, title=table.title)
    for row in table.rows:
        grid.add_row(*row)
    out.print(grid)
    for note in table.notes:
        out.print(f"note: {note}")
