"""The FastAPI application: routers, request guards, error mapping and ``/healthz``.

Domain code raises its own exceptions; this module alone turns them into HTTP answers, so
that no input a client can send makes the server answer 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from search_spaces import (
    PrunerSpec,
    SamplerSpec,
    SearchSpaceError,
    StudySpec,
    SuccessSpec,
    TaskConfigError,
)
from search_spaces.schema import SchemaOutOfDate
from search_spaces.storage import open_storage
from search_spaces.study_rows import StudyExists
from service.api import api_router
from service.asgi_body import BodyTooLarge, read_body, replaying
from service.auth import InsufficientScope, MissingToken
from service.docs import router as docs_router
from service.metrics import router as metrics_router
from service.pages import router as pages_router
from service.responses import SafeJSONResponse
from service.schemas import HealthPublic
from service.security import BrowserGuard, SecurityHeaders
from service.settings import Settings
from service.spec_text import JsonDepthLimit
from service.studies import InvalidInput, StudyNotFound
from service.study_changes import BudgetConflict
from service.trials import TrialNotFound

# Where a validation error without a field of its own comes from, by exception type.
_FIELD_OF = ((SearchSpaceError, "search_space"), (TaskConfigError, "task_config"))
_MODELS: dict[tuple[Any, ...], type[BaseModel]] = {
    (): StudySpec,
    ("sampler",): SamplerSpec,
    ("pruner",): PrunerSpec,
    ("success",): SuccessSpec,
}
_SOURCES = ("body", "query", "path", "header")


def readable_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"loc", "msg"}`` with a message naming the field and what is allowed.

    The offending input is left out: it may be huge, or a NaN that JSON cannot carry.
    """
    out = []
    for e in errors:
        loc = list(e.get("loc", ()))
        where = loc[1:] if loc and loc[0] in _SOURCES else loc
        msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
        kind, ctx = e.get("type"), e.get("ctx") or {}
        if not where:
            cause = ctx.get("error")
            field = next((f for t, f in _FIELD_OF if isinstance(cause, t)), None)
            field = field or next(
                (f for f in ("metric", "sampler", "pruner", "success") if msg.startswith(f)), None
            )
            if field and loc[:1] == ["body"]:
                where, loc = [field], [*loc, field]
        if kind == "extra_forbidden" and tuple(where[:-1]) in _MODELS:
            allowed = ", ".join(_MODELS[tuple(where[:-1])].model_fields)
            msg = f"unknown field (allowed: {allowed})"
        elif kind == "string_pattern_mismatch" and where == ["name"]:
            msg = "must be 1-64 characters, each a letter, digit, '_', '.' or '-'"
        elif kind == "json_invalid":
            where = []  # the location is a character offset, not a field
            msg = f"the body is not valid JSON ({ctx.get('error', 'parse error')})"
        elif kind == "missing" and loc == ["body"]:
            msg = "a JSON body is required"
        elif kind == "model_attributes_type" and loc == ["body"]:
            msg = "the body must be a JSON object (a study spec)"
        label = ".".join(str(x) for x in where)
        out.append(
            {"loc": loc, "msg": msg if not label or msg.startswith(label) else f"{label}: {msg}"}
        )
    return out


class BodyLimit:
    """Answer 413 to bodies over `max_bytes`, by Content-Length and by counting what arrives.

    The body is buffered here (it is small by construction) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = JSONResponse(
            {"detail": f"request body is larger than {self.max_bytes} bytes"}, status_code=413
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await JSONResponse({"detail": "bad Content-Length"}, 400)(scope, receive, send)
                return
            if int(length) > self.max_bytes:
                await too_big(scope, receive, send)
                return
        try:
            body = await read_body(receive, self.max_bytes)
        except BodyTooLarge:
            await too_big(scope, receive, send)
            return
        if body is not None:
            await self.app(scope, replaying(body, receive), send)


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    # Messages may echo the input, lone surrogates included: SafeJSONResponse can carry them.
    return SafeJSONResponse({"detail": detail}, status_code=status, headers=headers)


def _add_exception_handlers(app: FastAPI) -> None:
    def handle(kind: type[Exception], status: int, **extra: Any) -> None:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return _detail(status, str(exc), **extra)

        app.add_exception_handler(kind, handler)

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _detail(422, readable_errors(exc.errors()))

    async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidInput)
        return _detail(422, [{"loc": exc.loc, "msg": exc.msg}])

    async def http_error(request: Request, exc: Exception) -> Any:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code in {204, 304}:  # no body allowed
            return Response(status_code=exc.status_code, headers=exc.headers)
        return _detail(exc.status_code, exc.detail, headers=dict(exc.headers or {}))

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        # The message may hold the database's address; it stays in the server's log.
        return _detail(503, "the database is unavailable; try again shortly")

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(InvalidInput, invalid_input)
    app.add_exception_handler(StarletteHTTPException, http_error)
    handle(StudyNotFound, 404)
    handle(TrialNotFound, 404)
    handle(StudyExists, 409)
    handle(BudgetConflict, 409)
    handle(SearchSpaceError, 422)
    handle(TaskConfigError, 422)
    handle(MissingToken, 401, headers={"WWW-Authenticate": "Bearer"})
    handle(InsufficientScope, 403)
    handle(SchemaOutOfDate, 503)  # its message says what to run
    app.add_exception_handler(sa_exc.OperationalError, database_down)
    app.add_exception_handler(sa_exc.InterfaceError, database_down)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The noisetune API on `settings.storage_url` (settings default to the environment)."""
    settings = settings or Settings()
    app = FastAPI(
        title="noisetune",
        summary="Hyperparameter search for annealed gradient-noise schedules.",
        version=version("noisetune"),
        # /docs is served by service.docs, from local files; ReDoc is not served.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.include_router(api_router)
    app.include_router(pages_router)
    app.include_router(docs_router)
    app.include_router(metrics_router)
    # The last added runs first: headers on every answer, then the Host and cross-site
    # checks before any body is read, then the body's size, then its nesting depth.
    app.add_middleware(JsonDepthLimit)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BrowserGuard, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    _add_exception_handlers(app)

    @app.get(
        "/healthz",
        tags=["health"],
        response_model=HealthPublic,
        response_model_exclude_none=True,
        responses={503: {"model": HealthPublic}},
    )
    def healthz() -> Any:
        """200 once the server can reach its database at the schema it needs, else 503."""
        try:
            storage = open_storage(settings.storage_url)
            with storage.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except SchemaOutOfDate as exc:
            body = HealthPublic(status="unavailable", detail=str(exc))
            return JSONResponse(body.model_dump(), status_code=503)
        except (sa_exc.SQLAlchemyError, OSError):
            body = HealthPublic(status="unavailable", detail="cannot reach the database")
            return JSONResponse(body.model_dump(), status_code=503)
        return HealthPublic(status="ok")

    return app
