"""The dashboard's HTML pages and their static files, served by the API's own app.

Pages are rendered on the server with what the API would answer, then kept current by
small scripts that poll the JSON API. Nothing is loaded from another host: plotly.js comes
from the installed plotly package. When reads need a token, pages render empty and the
scripts fetch the data once the browser holds one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import plotly
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine

from search_spaces import BUILTIN_SPACES, task_definitions
from service import auth, studies, trials
from service.api.workers import live_workers
from service.deps import EngineDep, SettingsDep, StorageDep, authorize_request
from service.notes import render_notes
from service.plots import PLOT_KINDS, TITLES
from service.plots._trial import trial_detail
from service.settings import Settings

HERE = Path(__file__).parent
STATIC = HERE / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
# Served by name only: a request can never reach a file outside this list.
STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
MEDIA = {".css": "text/css", ".js": "text/javascript"}

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["num"] = lambda v: _num(v)
router = APIRouter(include_in_schema=False)

# The study page's grid of plots, in PLOT_KINDS' order (importance first), two to a row
# except the wide ones; the effect plot has a section of its own, with its table.
EFFECT = "effect"
PAGE_PLOTS = tuple(k for k in PLOT_KINDS if k != EFFECT)
WIDE_PLOTS = frozenset({"parallel", "slice"})


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _reads_open(request: Request, settings: Settings, engine: Engine) -> bool:
    """Whether this request may read without a token (browsers send none on navigation)."""
    try:
        authorize_request(request, settings, engine, "read")
    except auth.AuthError:
        return False
    return True


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return templates.TemplateResponse(
        request, template, {"root": root, **context}, status_code=status_code
    )


def _not_found(request: Request, message: str) -> HTMLResponse:
    return _page(request, "not_found.html", 404, nav="", message=message)


@router.get("/", response_class=HTMLResponse)
def studies_page(request: Request, settings: SettingsDep, storage: StorageDep) -> HTMLResponse:
    listed = None
    if _reads_open(request, settings, storage.engine):
        listed = studies.list_studies(storage).model_dump(mode="json")["data"]
    return _page(request, "studies.html", nav="studies", studies=listed)


@router.get("/studies/{name}", response_class=HTMLResponse)
def study_page(
    request: Request, name: str, settings: SettingsDep, storage: StorageDep
) -> HTMLResponse:
    study = None
    if _reads_open(request, settings, storage.engine):
        try:
            study = studies.get_study(storage, name).model_dump(mode="json")
        except studies.StudyNotFound as exc:
            return _not_found(request, str(exc))
    plots = [{"kind": k, "title": TITLES[k], "wide": k in WIDE_PLOTS} for k in PAGE_PLOTS]
    return _page(
        request,
        "study.html",
        nav="studies",
        name=name,
        study=study,
        plots=plots,
        states=studies.TRIAL_STATES,
        notes=render_notes(study["notes"] if study else None),
    )


@router.get("/studies/{name}/trials/{number}", response_class=HTMLResponse)
def trial_page(
    request: Request,
    name: str,
    number: Annotated[int, PathParam(ge=0, le=2**31 - 1)],
    settings: SettingsDep,
    storage: StorageDep,
) -> HTMLResponse:
    detail = log = None
    if _reads_open(request, settings, storage.engine):
        try:
            detail = trial_detail(storage, name, number)
            log = trials.trial_log(storage, name, number)
        except studies.StudyNotFound as exc:
            return _not_found(request, str(exc))
        except LookupError as exc:
            return _not_found(request, str(exc))
    return _page(
        request, "trial.html", nav="studies", name=name, number=number, trial=detail, log=log
    )


@router.get("/workers", response_class=HTMLResponse)
def workers_page(request: Request, settings: SettingsDep, engine: EngineDep) -> HTMLResponse:
    workers = None
    if _reads_open(request, settings, engine):
        workers = [w.model_dump(mode="json") for w in live_workers(engine)]
    return _page(request, "workers.html", nav="workers", workers=workers)


@router.get("/submit", response_class=HTMLResponse)
def submit_page(request: Request) -> HTMLResponse:
    example = {
        "name": "paper-digits",
        "task": "deep_mlp",
        "task_config": {"dataset": "digits", "epochs": 150},
        "search_space": "paper-baseline",
        "n_trials": 40,
        "sampler": {"type": "tpe", "seed": 0},
        "pruner": {"type": "median"},
    }
    tasks = [
        {
            "name": d.name,
            "description": d.description,
            "metric": d.primary_metric,
            "direction": d.direction,
        }
        for d in task_definitions().values()
    ]
    spaces = {name: json.dumps(space) for name, space in BUILTIN_SPACES.items()}
    return _page(
        request, "submit.html", nav="submit", example=_yaml(example), tasks=tasks, spaces=spaces
    )


def _yaml(spec: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(spec, sort_keys=False)


@router.get("/static/plotly.min.js")
def plotly_js() -> FileResponse:
    # The copy inside the installed plotly package: its version always matches the figures.
    return FileResponse(
        PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get("/static/{filename}")
def static_file(filename: str) -> Response:
    path = STATIC_FILES.get(filename)
    if path is None:
        return Response("not found", status_code=404, media_type="text/plain")
    return FileResponse(
        path,
        media_type=MEDIA.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "no-cache"},
    )
