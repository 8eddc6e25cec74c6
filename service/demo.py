"""`noisetune demo`: the whole system on one machine, end to end.

Starts the server and local workers on the default SQLite file, submits the paper's study on
digits over REST, shows progress, and prints the best parameters and the importances.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from search_spaces.storage import resolve_url
from service.analysis_table import effect_table
from service.schemas import AnalysisPublic

console = Console(stderr=True)


def demo_spec(name: str, trials: int, epochs: int) -> dict[str, Any]:
    """The paper's comparison as a search: eta with its no-noise control, plus gamma and lr."""
    return {
        "name": name,
        "task": "deep_mlp",
        "task_config": {"dataset": "digits", "epochs": epochs},
        "search_space": {
            "eta": {"type": "categorical", "choices": [0.0, 0.01, 0.3, 1.0]},
            "gamma": {"type": "float", "low": 0.3, "high": 1.0},
            "lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
        },
        "n_trials": trials,
        "sampler": {"type": "tpe", "seed": 0},
        # Deep nets at a poor init sit at chance for a while before noise lifts them: give the
        # pruner a long warm-up so it does not stop the slow starters the paper is about.
        "pruner": {"type": "median", "options": {"n_startup_trials": 8, "n_warmup_steps": 60}},
    }


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise RuntimeError("no free port")


@contextlib.contextmanager
def _processes(cmds: list[list[str]], log_dir: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    try:
        for i, cmd in enumerate(cmds):
            log = open(os.path.join(log_dir, f"demo-{i}.log"), "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_healthy(client: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the server exited at start-up; see demo-0.log in the log folder")
        with contextlib.suppress(httpx.HTTPError):
            if client.get("/healthz").status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError("the server did not become healthy within 60 s")


def _show_results(client: httpx.Client, name: str) -> None:
    study = client.get(f"/api/v1/studies/{name}").json()
    best = study.get("best_trial")
    out = Console()
    if best:
        out.print(f"[bold]Best trial[/bold] #{best['number']}: value {best['value']:.4f}")
        for key, value in best["params"].items():
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            out.print(f"  {key} = {shown}")
    imp = client.get(f"/api/v1/studies/{name}/importance").json()
    table = Table(
        title=f"Parameter importance ({imp.get('evaluator')}, {imp.get('n_trials')} trials)"
    )
    table.add_column("parameter")
    table.add_column("share", justify="right")
    level = f"{imp['confidence']:.0%} interval" if imp.get("confidence") else "interval"
    table.add_column(f"{level} ({imp.get('bootstrap')} resamples)", justify="right")
    intervals = imp.get("intervals", {})
    for param, share in sorted(imp.get("importances", {}).items(), key=lambda kv: -kv[1]):
        low, high = intervals.get(param, (None, None))
        shown = "—" if low is None else f"{low:.2f} to {high:.2f}"
        table.add_row(param, f"{share:.3f}", shown)
    out.print(table)
    for note in imp.get("notes", []):
        out.print(f"note: {note}", highlight=False, soft_wrap=True)
    # The effect of noise with its uncertainty: what the study's page and report show too.
    answer = client.get(f"/api/v1/studies/{name}/analysis", params={"by": "eta"})
    if answer.status_code != 200:
        out.print(f"no analysis: {answer.text}")
        return
    effect = effect_table(AnalysisPublic.model_validate(answer.json()))
    per_eta = Table(*effect.headers, title=effect.title)
    for row in effect.rows:
        per_eta.add_row(*row)
    out.print(per_eta)
    for note in effect.notes:
        out.print(f"note: {note}", highlight=False, soft_wrap=True)


def run_demo(
    storage: str | None = None,
    port: int = 8000,
    workers: int = 2,
    trials: int | None = None,
    epochs: int | None = None,
    keep_serving: bool = False,
) -> int:
    url = resolve_url(storage)
    port = _free_port(port)
    name = "paper-demo-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    spec = demo_spec(name, trials or 40, epochs or 150)
    log_dir = tempfile.mkdtemp(prefix="noisetune-demo-")
    # Both through the `noisetune` command itself (`python -m service` is that command, also
    # where the virtual environment's bin folder is not on PATH).
    noisetune = [sys.executable, "-m", "service"]
    server_cmd = [*noisetune, "serve", "--storage", url, "--port", str(port)]
    worker_cmd = [*noisetune, "worker", "--storage", url, "--exit-when-idle"]
    address = f"http://127.0.0.1:{port}"
    console.print(f"[bold]noisetune demo[/bold]: storage {url}, {workers} workers")
    console.print(f"Logs of the server and workers: {log_dir}")
    with (
        _processes([server_cmd], log_dir) as (server,),
        httpx.Client(base_url=address, timeout=30) as client,
    ):
        _wait_healthy(client, server)
        answer = client.post("/api/v1/studies", json=spec)
        if answer.status_code != 201:
            console.print(f"[red]submission refused ({answer.status_code}): {answer.text}")
            return 1
        console.print(f"Submitted study [bold]{name}[/bold] ({spec['n_trials']} trials).")
        console.print(f"Dashboard: [link]{address}/studies/{name}[/link]")
        with _processes([worker_cmd] * workers, log_dir) as procs:
            _follow(client, name, spec["n_trials"], procs)
        _show_results(client, name)
        console.print(f"Results are kept in {url}; `noisetune serve` shows them again.")
        if keep_serving:
            console.print(f"Dashboard still at {address} — Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                server.wait()
    return 0


def _follow(
    client: httpx.Client, name: str, n_trials: int, procs: list[subprocess.Popen[bytes]]
) -> None:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("trials", total=n_trials, detail="")
        while True:
            study = client.get(f"/api/v1/studies/{name}").json()
            counts, best = study["counts"], study.get("best_trial")
            detail = (
                f"running {counts.get('RUNNING', 0)}, pruned {counts.get('PRUNED', 0)}, "
                f"failed {counts.get('FAIL', 0)}"
            )
            if best:
                detail += f", best {best['value']:.3f}"
            bar.update(task, completed=study["progress"]["finished"], detail=detail)
            if study["status"] == "completed":
                return
            if study["status"] == "failed":
                raise RuntimeError(f"the study failed: {study.get('fail_reason')}")
            if all(p.poll() is not None for p in procs):
                raise RuntimeError("every worker exited before the study completed; see logs")
            time.sleep(1.0)
