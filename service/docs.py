"""``/docs``: Swagger UI served from this server, with nothing loaded from another host.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script, which
the pages' Content-Security-Policy forbids. Here the assets come from the installed
``fastapi-offline`` package and the start-up script is a static file (static/docs.js).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from service.pages import templates

ASSETS = Path(fastapi_offline.__file__).parent / "static"
# Served by name only, like the dashboard's static files.
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    openapi_url = request.app.openapi_url or "/openapi.json"
    return templates.TemplateResponse(
        request, "docs.html", {"root": root, "openapi_url": root + openapi_url}
    )


@router.get("/static/swagger/{filename}")
def swagger_asset(filename: str) -> Response:
    media = SWAGGER_FILES.get(filename)
    if media is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        ASSETS / filename, media_type=media, headers={"Cache-Control": "public, max-age=86400"}
    )
