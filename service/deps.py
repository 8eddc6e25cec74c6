"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from optuna.storages import RDBStorage
from sqlalchemy.engine import Engine

from search_spaces.storage import open_storage
from service import auth
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_storage(settings: SettingsDep) -> RDBStorage:
    # Opened on first use, not at startup, so the server comes up (and /healthz can say
    # 503) while the database is still unreachable.
    return open_storage(settings.storage_url)


StorageDep = Annotated[RDBStorage, Depends(get_storage)]


def get_engine(storage: StorageDep) -> Engine:
    return storage.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authorize_request(
    request: Request, settings: Settings, engine: Engine, needed: auth.Scope
) -> None:
    """Raise an `auth.AuthError` unless this request's token may do a `needed` request."""
    api_token = settings.api_token.get_secret_value() if settings.api_token else None
    auth.authorize(
        engine,
        bearer_token(request),
        needed,
        api_token=api_token,
        exposed=settings.exposed,
        read_requires_token=settings.read_requires_token,
        mode=settings.auth,
    )


def require_read(request: Request, settings: SettingsDep, engine: EngineDep) -> None:
    authorize_request(request, settings, engine, "read")


def require_write(request: Request, settings: SettingsDep, engine: EngineDep) -> None:
    authorize_request(request, settings, engine, "write")


# Route and router dependencies: reads are open unless configured otherwise; writes need a
# write token once the deployment has any (see service.auth).
ReadAccess = Depends(require_read)
WriteAccess = Depends(require_write)
