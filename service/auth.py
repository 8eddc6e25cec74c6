"""API tokens: issued once, stored only as a SHA-256 hash, checked per write request.

In the ``auto`` mode, writes need a token as soon as the deployment shows it is shared:
tokens were ever made (revoked ones count, so revoking the last token never opens the
server), a shared ``api_token`` is configured, or the server listens beyond loopback.
A laptop running ``noisetune serve`` alone stays token-free. The ``required`` mode makes
every write need a token regardless. Revocation takes effect at once: every check reads
the table.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from search_spaces.storage import now
from search_spaces.tables import tokens_table

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")
TOKEN_PREFIX = "nt_"
AuthMode = Literal["auto", "required"]
# Seconds between two writes of a token's last use, so that reads do not each write.
LAST_USED_RESOLUTION = 60.0


class AuthError(Exception):
    """A request that may not do what it asks."""


class MissingToken(AuthError):
    """No token, or one that is not known (HTTP 401)."""


class InsufficientScope(AuthError):
    """A known token whose scope does not cover the request (HTTP 403)."""


class TokenNotFound(LookupError):
    """No token has the given id."""


class TokenInfo(NamedTuple):
    """What may be shown about a token: never the token, nor its hash."""

    id: int
    name: str | None
    scope: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


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
    """The scope of `token`, or None when it is not known or revoked. `api_token` is write.

    A known token's last use is recorded, at most once per `LAST_USED_RESOLUTION`.
    """
    if api_token and hmac.compare_digest(token.encode(), api_token.encode()):
        return "write"
    t = tokens_table.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.id, t.scope, t.last_used_at).where(
                t.token_hash == hash_token(token), t.revoked_at.is_(None)
            )
        ).first()
    if row is None or row.scope not in SCOPES:
        return None
    stamp = now()
    if row.last_used_at is None or stamp - row.last_used_at >= LAST_USED_RESOLUTION:
        stale = sa.or_(t.last_used_at.is_(None), t.last_used_at <= stamp - LAST_USED_RESOLUTION)
        with engine.begin() as conn:
            conn.execute(
                sa.update(tokens_table).where(t.id == row.id, stale).values(last_used_at=stamp)
            )
    scope: Scope = row.scope
    return scope


def list_tokens(engine: Engine) -> list[TokenInfo]:
    """Every token ever made, revoked ones included, oldest first."""
    t = tokens_table.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.id, t.name, t.scope, t.created_at, t.last_used_at, t.revoked_at).order_by(
                t.id
            )
        ).all()
    return [TokenInfo(*row) for row in rows]


def revoke_token(engine: Engine, token_id: int) -> bool:
    """Revoke the token `token_id` from now on; False when it was revoked already."""
    t = tokens_table.c
    with engine.begin() as conn:
        revoked = conn.execute(
            sa.update(tokens_table)
            .where(t.id == token_id, t.revoked_at.is_(None))
            .values(revoked_at=now())
        ).rowcount
        if revoked:
            return True
        if conn.execute(sa.select(t.id).where(t.id == token_id)).first() is None:
            raise TokenNotFound(f"no token has the id {token_id}")
    return False


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
    mode: AuthMode = "auto",
) -> None:
    """Raise `MissingToken` or `InsufficientScope` unless `token` may do a `needed` request."""
    if needed == "read":
        required = read_requires_token
    else:
        required = mode == "required" or exposed or bool(api_token) or tokens_exist(engine)
    if not required:
        return
    if not token:
        raise MissingToken(f"this server needs a {needed} token: send 'Authorization: Bearer ...'")
    scope = check_token(engine, token, api_token=api_token)
    if scope is None:
        raise MissingToken("the token is not valid")
    if needed == "write" and scope != "write":
        raise InsufficientScope("this token may only read; writing needs a write token")
