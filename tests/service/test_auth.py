"""API tokens: stored as hashes, checked on writes, and required once a deployment is shared."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from search_spaces.tables import tokens_table
from service.auth import check_token, create_token, hash_token
from service.cli import app

STUDIES = "/api/v1/studies"


def spec(name: str) -> dict[str, Any]:
    return {"name": name, "task": "quadratic"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_stored_as_hashes_only(storage: Any) -> None:
    engine = storage.engine
    read, write = create_token(engine, "read", name="ci"), create_token(engine, "write")
    assert read.startswith("nt_") and write.startswith("nt_") and read != write
    assert check_token(engine, read) == "read" and check_token(engine, write) == "write"
    assert check_token(engine, "nt_not-issued") is None
    assert check_token(engine, read + "x") is None
    assert check_token(engine, "shared", api_token="shared") == "write"
    with engine.connect() as conn:
        rows = conn.execute(sa.select(tokens_table)).all()
    stored = " ".join(str(value) for row in rows for value in row)
    assert read not in stored and write not in stored
    assert {r.token_hash for r in rows} == {hash_token(read), hash_token(write)}
    with pytest.raises(ValueError, match="scope must be one of read, write"):
        create_token(engine, "admin")  # type: ignore[arg-type]


def test_a_lone_loopback_server_needs_no_token(make_client: Any) -> None:
    client = make_client()
    assert client.post(STUDIES, json=spec("open")).status_code == 201
    assert client.post(f"{STUDIES}/open/stop").status_code == 200
    assert client.delete(f"{STUDIES}/open").status_code == 204


def test_once_tokens_exist_writes_need_a_write_token(make_client: Any, storage: Any) -> None:
    client = make_client()
    client.post(STUDIES, json=spec("before"))
    read, write = create_token(storage.engine, "read"), create_token(storage.engine, "write")

    missing = client.post(STUDIES, json=spec("s1"))
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.post(STUDIES, json=spec("s1"), headers=bearer("nt_forged")).status_code == 401
    basic = {"Authorization": "Basic dXNlcjpwYXNz"}
    assert client.post(STUDIES, json=spec("s1"), headers=basic).status_code == 401
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(read)).status_code == 403
    for method, url in [("POST", f"{STUDIES}/before/stop"), ("DELETE", f"{STUDIES}/before")]:
        assert client.request(method, url).status_code == 401
        assert client.request(method, url, headers=bearer(read)).status_code == 403
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(write)).status_code == 201
    assert client.delete(f"{STUDIES}/before", headers=bearer(write)).status_code == 204
    # Reads stay open, with or without a token.
    assert client.get(STUDIES).json()["count"] == 1
    assert client.get(STUDIES, headers=bearer(read)).status_code == 200


def test_a_configured_api_token_is_a_write_token(make_client: Any) -> None:
    client = make_client(api_token="s3cret-shared")
    assert client.post(STUDIES, json=spec("s1")).status_code == 401
    assert client.post(STUDIES, json=spec("s1"), headers=bearer("wrong")).status_code == 401
    assert client.post(STUDIES, json=spec("s1"), headers=bearer("s3cret-shared")).status_code == 201


def test_a_server_bound_beyond_loopback_needs_a_token(make_client: Any, storage: Any) -> None:
    client = make_client(host="0.0.0.0")
    assert client.post(STUDIES, json=spec("s1")).status_code == 401
    write = create_token(storage.engine, "write")
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(write)).status_code == 201
    assert client.get(f"{STUDIES}/s1").status_code == 200


def test_reads_can_require_a_token(make_client: Any, storage: Any) -> None:
    client = make_client(read_requires_token=True)
    read = create_token(storage.engine, "read")
    for url in [STUDIES, "/api/v1/workers", "/api/v1/tasks", f"{STUDIES}/s1/trials"]:
        assert client.get(url).status_code == 401
    assert client.get(STUDIES, headers=bearer(read)).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes never need a token


def test_cli_creates_a_token_the_server_accepts(make_client: Any, storage_url: str) -> None:
    args = ["token", "create", "--scope", "write", "--name", "ci", "--storage", storage_url]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    token = out.stdout.strip()
    assert token.startswith("nt_") and "\n" not in token and token not in out.stderr
    client = make_client()
    assert client.post(STUDIES, json=spec("s1")).status_code == 401
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(token)).status_code == 201


def test_required_mode_makes_every_write_need_a_token(make_client: Any, storage: Any) -> None:
    client = make_client(auth="required")  # loopback, no tokens, no api token
    missing = client.post(STUDIES, json=spec("s1"))
    assert missing.status_code == 401 and "write token" in missing.json()["detail"]
    read, write = create_token(storage.engine, "read"), create_token(storage.engine, "write")
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(read)).status_code == 403
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(write)).status_code == 201
    assert client.post(f"{STUDIES}/s1/stop", headers=bearer(write)).status_code == 200
    assert client.get(f"{STUDIES}/s1").status_code == 200  # reads stay open


def test_token_list_shows_last_use_and_never_the_token(make_client: Any, storage_url: str) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["token", "create", "--scope", "write", "--name", "ci-bot",
                               "--storage", storage_url])  # fmt: skip
    runner.invoke(app, ["token", "create", "--scope", "read", "--storage", storage_url])
    token = made.stdout.strip()
    before = runner.invoke(app, ["token", "list", "--storage", storage_url])
    assert before.exit_code == 0, before.output
    rows = [line for line in before.stdout.splitlines() if "ci-bot" in line]
    assert len(rows) == 1 and "write" in rows[0] and "UTC" in rows[0]
    assert rows[0].count("UTC") == 1  # created; not used, not revoked

    client = make_client()
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(token)).status_code == 201
    after = runner.invoke(app, ["token", "list", "--storage", storage_url]).stdout
    row = next(line for line in after.splitlines() if "ci-bot" in line)
    assert row.count("UTC") == 2  # created and last used
    hashed = hash_token(token)
    assert token not in after and hashed not in after and token[3:20] not in after


def test_last_use_is_written_at_most_once_a_minute(storage: Any) -> None:
    engine = storage.engine
    token = create_token(engine, "read")
    assert check_token(engine, token) == "read"
    with engine.connect() as conn:
        first = conn.execute(sa.select(tokens_table.c.last_used_at)).scalar_one()
    assert first is not None
    assert check_token(engine, token) == "read"
    with engine.connect() as conn:
        assert conn.execute(sa.select(tokens_table.c.last_used_at)).scalar_one() == first
    with engine.begin() as conn:
        conn.execute(sa.update(tokens_table).values(last_used_at=first - 61))
    check_token(engine, token)
    with engine.connect() as conn:
        assert conn.execute(sa.select(tokens_table.c.last_used_at)).scalar_one() > first - 61


def test_a_revoked_token_is_refused_at_once(make_client: Any, storage_url: str) -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["token", "create", "--scope", "write", "--name", "gone",
                               "--storage", storage_url])  # fmt: skip
    token = made.stdout.strip()
    client = make_client(read_requires_token=True)
    assert client.get(STUDIES, headers=bearer(token)).status_code == 200
    listed = runner.invoke(app, ["token", "list", "--storage", storage_url]).stdout
    token_id = next(line for line in listed.splitlines() if "gone" in line).split()[1]

    revoked = runner.invoke(app, ["token", "revoke", token_id, "--storage", storage_url])
    assert revoked.exit_code == 0, revoked.output
    assert client.get(STUDIES, headers=bearer(token)).status_code == 401
    assert client.post(STUDIES, json=spec("s1"), headers=bearer(token)).status_code == 401
    # Still listed, as revoked; writes still need a token (revoking never opens the server).
    row = next(line for line in runner.invoke(app, ["token", "list", "--storage", storage_url])
               .stdout.splitlines() if "gone" in line)  # fmt: skip
    assert row.count("UTC") == 3  # created, last used, revoked
    assert make_client().post(STUDIES, json=spec("s2")).status_code == 401

    unknown = runner.invoke(app, ["token", "revoke", "9999", "--storage", storage_url])
    assert unknown.exit_code == 1
    assert "no token has the id 9999" in unknown.stderr and "Traceback" not in unknown.output
