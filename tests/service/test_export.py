"""Export: every trial as CSV or JSON Lines, streamed, read back with pandas; both backends."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from service import export
from service.cli import app
from worker.claims import caches, claim_trial, fail_and_maybe_retry, finish_trial, suggest_all

STUDIES = "/api/v1/studies"
runner = CliRunner()


def make_study(client: Any, worker_storage: Any) -> list[dict[str, Any]]:
    """Study `x` with trials of every kind: complete (with curves and runs), pruned, failed
    (a reason with a comma and quotes), running, and queued by hand. Returns the API's
    full records, by number."""
    spec = {
        "name": "x",
        "task": "quadratic",
        "task_config": {"epochs": 2},
        "search_space": "paper-gamma",
        "n_trials": 8,
        "max_retries": 0,
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
    }
    assert client.post(STUDIES, json=spec).status_code == 201
    outcomes = ["complete", "complete", "pruned", "failed", "complete", "running"]
    for i, outcome in enumerate(outcomes):
        caches.candidates.clear()
        claim = claim_trial(worker_storage, f"w{i}", "h", "cpu", "x")
        assert claim is not None
        p = suggest_all(claim.trial, claim.spec)
        loss = p["gamma"] + i
        curve = [{"epoch": 1, "steps": 1, "loss": loss + 1}, {"epoch": 2, "steps": 2, "loss": loss}]
        metrics = {"loss": loss, "steps": 2, "diverged": False}
        runs = {"runs": [{"seed": 0, "diverged": False, "metrics": metrics}]}
        if outcome == "complete":
            finish_trial(claim, TrialState.COMPLETE, loss, metrics=metrics, curve=curve,
                         wall_time_s=0.5 + i, runs=runs)  # fmt: skip
        elif outcome == "pruned":
            finish_trial(claim, TrialState.PRUNED, None, metrics={"loss": loss}, curve=curve[:1],
                         wall_time_s=0.25)  # fmt: skip
        elif outcome == "failed":
            fail_and_maybe_retry(claim, 'ValueError: bad "x", really', retry_counts=True)
    assert client.post(f"{STUDIES}/x/trials", json={"params": {"eta": 1.0}}).status_code == 201
    trials = client.get(f"{STUDIES}/x/trials").json()["data"]
    return [client.get(f"{STUDIES}/x/trials/{t['number']}").json() for t in trials]


def same(a: Any, b: Any) -> bool:
    """Equal as values, a missing one (None) equal to pandas' NaN."""
    if b is None or (isinstance(b, float) and b != b):
        return a is None or (isinstance(a, float) and a != a)
    return bool(a == b)


def test_csv_and_jsonl_round_trip_through_pandas(
    make_client: Any, worker_storage: Any, storage_url: str, tmp_path: Path
) -> None:
    client = make_client()
    records = make_study(client, worker_storage)
    answer = client.get(f"{STUDIES}/x/trials", params={"format": "csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="x-trials.csv"' in answer.headers["content-disposition"]
    frame = pd.read_csv(io.StringIO(answer.text))

    assert list(frame.columns) == [
        "number", "state", "value", "params_eta", "params_gamma", "metrics_loss",
        "metrics_steps", "metrics_diverged", "fail_reason", "worker",
        "device", "datetime_start", "datetime_complete", "wall_time_s", "origin",
    ]  # fmt: skip
    assert frame["number"].dtype == "int64" and list(frame["number"]) == list(range(7))
    for column in ("value", "params_eta", "params_gamma", "metrics_loss", "wall_time_s"):
        assert frame[column].dtype == "float64", column
    assert list(frame["state"]) == [r["state"] for r in records]
    assert list(frame["origin"]) == ["sampler"] * 6 + ["queued"]
    for row, record in zip(frame.to_dict("records"), records, strict=True):
        assert same(row["value"], record["value"])
        assert same(row["params_gamma"], record["params"].get("gamma"))
        assert same(row["params_eta"], record["params"].get("eta"))
        assert same(row["metrics_loss"], (record["metrics"] or {}).get("loss"))
        assert same(row["fail_reason"], record["fail_reason"])
        assert same(row["worker"], record["worker"]) and same(row["device"], record["device"])
        assert same(row["wall_time_s"], record["wall_time_s"])
        start = (
            pd.Timestamp(row["datetime_start"]) if isinstance(row["datetime_start"], str) else None
        )
        expected = record["datetime_start"]
        assert (start is None) == (expected is None)
        if start is not None:
            assert start == pd.Timestamp(expected)
    assert frame.loc[3, "fail_reason"] == 'ValueError: bad "x", really'

    lines = client.get(f"{STUDIES}/x/trials", params={"format": "jsonl"})
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in lines.text.splitlines()] == records
    table = pd.read_json(io.StringIO(lines.text), lines=True, precise_float=True)
    assert list(table["number"]) == list(range(7))
    assert table.loc[0, "curve"] == records[0]["curve"] and len(records[0]["curve"]) == 2
    assert table.loc[0, "runs"][0]["curve"] == records[0]["curve"]

    # `noisetune export` writes the same, read straight from the database.
    for suffix, text in (("csv", answer.text), ("jsonl", lines.text)):
        out = tmp_path / f"trials.{suffix}"
        done = runner.invoke(app, ["export", "x", "-o", str(out), "--storage", storage_url])
        assert done.exit_code == 0, done.output
        assert out.read_text() == text


def test_exports_are_read_a_page_at_a_time(
    make_client: Any, storage: Any, worker_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client()
    make_study(client, worker_storage)
    whole = "".join(export.export_trials(storage, "x", "csv"))
    monkeypatch.setattr(export, "CSV_PAGE", 2)
    monkeypatch.setattr(export, "JSONL_PAGE", 3)
    monkeypatch.setattr(export, "KEYS_PAGE", 1)
    chunks = list(export.export_trials(storage, "x", "csv"))
    assert len(chunks) == 1 + 4 and "".join(chunks) == whole  # the header, then 4 pages
    lines = list(export.export_trials(storage, "x", "jsonl"))
    assert [c.count("\n") for c in lines] == [3, 3, 1]
    assert client.get(f"{STUDIES}/x/trials", params={"format": "csv"}).text == whole
    only = client.get(f"{STUDIES}/x/trials", params={"format": "csv", "state": "complete"})
    assert len(only.text.splitlines()) == 1 + 3


def test_export_refusals(make_client: Any, storage_url: str, tmp_path: Path) -> None:
    client = make_client()
    assert client.get(f"{STUDIES}/nope/trials", params={"format": "csv"}).status_code == 404
    assert client.get(f"{STUDIES}/nope/trials", params={"format": "xml"}).status_code == 422
    for args, says in (
        (["export", "nope", "-o", str(tmp_path / "t.csv")], "no study named 'nope'"),
        (["export", "nope", "-o", str(tmp_path / "t.txt")], "must end in .csv or .jsonl"),
    ):
        result = runner.invoke(app, [*args, "--storage", storage_url])
        assert result.exit_code == 1 and says in result.stderr, result.output
        assert "Traceback" not in result.output
