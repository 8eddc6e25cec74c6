"""`python -m worker ...`: the same as `noisetune worker ...` (used for per-GPU children)."""

from __future__ import annotations

import typer

from worker.cli import register

app = typer.Typer(add_completion=False)
register(app)

if __name__ == "__main__":
    app(["worker", *__import__("sys").argv[1:]])
