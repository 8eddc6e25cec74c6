"""API tokens: issued once, stored only as a SHA-256 hash, checked per write request.

Writes need a token as soon as the deployment shows it is shared: tokens exist in the
table, a shared ``api_token`` is configured, or the server listens beyond loopback.
A laptop running ``noisetune serve`` alone stays token-free.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from search_spaces.storage import now, tokens_table

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
TOKEN_PREFIX = "nt_"


class AuthError(Exception):
    """A request that may not do what it asks."""


class MissingToken(AuthError):
    """No token, or one that is not known (HTTP 401)."""


class InsufficientScope(AuthError):
    """A known token whose scope does not cover the request (HTTP 403)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def create_token(engine: Engine, scope: Scope, name: str | None = None) -> str:
    """A new random token; only its hash is stored, so this is the one time it is seen."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tokens_table).values(
                token_hash=hash_token(token), scope=scope, name=name, created_at=now()
            )
        )
    return token


def check_token(engine: Engine, token: str, *, api_token: str | None = None) -> Scope | None:
    """The scope of `token`, or None when it is not known. `api_token` counts as write."""
    if api_token and hmac.compare_digest(token.encode(), api_token.encode()):
        return "write"
    with engine.connect() as conn:
        scope = conn.execute(
            sa.select(tokens_table.c.scope).where(tokens_table.c.token_hash == hash_token(token))
        ).scalar_one_or_none()
    return scope if scope in SCOPES else None


def tokens_exist(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.select(tokens_table.c.id).limit(1)).first() is not None


def authorize(
    engine: Engine,
    token: str | None,
    needed: Scope,
    *,
    api_token: str | None = None,
    exposed: bool = False,
    read_requires_token: bool = False,
) -> None:
    """Raise `MissingToken` or `InsufficientScope` unless `token` may do a `needed` request."""
    if needed == "read":
        required = read_requires_token
    else:
        required = exposed or bool(api_token) or tokens_exist(engine)
    if not required:
        return
    if not token:
        raise MissingToken(f"this server needs a {needed} token: send 'Authorization: Bearer ...'")
    scope = check_token(engine, token, api_token=api_token)
    if scope is None:
        raise MissingToken("the token is not valid")
    if needed == "write" and scope != "write":
        raise InsufficientScope("this token may only read; writing needs a write token")
