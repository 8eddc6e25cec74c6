"""``/studies/{name}/plots/{kind}`` (Plotly figures as JSON) and ``/specs/parse`` (YAML specs).

A figure is answered as the JSON text cached by `service.plots`, with an ETag, so a page
that polls gets a 304 until the study changes.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from search_spaces import StudySpec
from service import plots
from service.deps import ReadAccess, StorageDep
from service.plots._ratios import empty_ratio_series, ratio_series, trial_ratio_figure
from service.plots._trial import load_trial, trial_curve_figure, trial_curve_info
from service.responses import SafeJSONResponse
from service.schemas import DEFAULT_EVALUATOR, Evaluator
from service.spec_text import SpecTextError, load_yaml
from service.studies import InvalidInput

router = APIRouter(tags=["plots"], dependencies=[ReadAccess])

# A spec is a few hundred bytes; parsing YAML costs far more per byte than reading JSON.
MAX_SPEC_BYTES = 64 * 1024


@router.get(
    "/studies/{name}/plots/{kind}",
    responses={
        200: {
            "description": "a Plotly figure: `{data, layout}`",
            "content": {"application/json": {}},
        },
        404: {"description": "no such study, or an unknown plot kind (the kinds are listed)"},
    },
)
def read_plot(
    name: str,
    kind: str,
    request: Request,
    storage: StorageDep,
    evaluator: Evaluator = DEFAULT_EVALUATOR,
    params: Annotated[
        str | None, Query(description="contour axes, two parameter names: `params=eta,gamma`")
    ] = None,
) -> Response:
    """One plot of the study as a Plotly figure; kinds: importance, history, parallel,
    contour, intermediate, noise_schedule, noise_ratio, timeline, slice, effect
    (service.plots.PLOT_KINDS)."""
    if kind not in plots.PLOT_KINDS:
        raise HTTPException(
            404, f"unknown plot kind {kind!r}; kinds are {', '.join(plots.PLOT_KINDS)}"
        )
    names = [p.strip() for p in params.split(",") if p.strip()] if params else None
    try:
        text, etag = plots.plot_json(storage, name, kind, evaluator=evaluator, params=names)
    except plots.PlotQueryError as exc:
        raise InvalidInput(["query", "params"], str(exc)) from None
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(content=text, media_type="application/json", headers=headers)


@router.get("/studies/{name}/trials/{number}/plots/curve")
def read_trial_curve(
    name: str, number: Annotated[int, Path(ge=0, le=2**31 - 1)], storage: StorageDep
) -> Response:
    """Every per-epoch metric one trial recorded, as a Plotly figure."""
    trial, metric = load_trial(storage, name, number)  # TrialNotFound: 404 (service.app)
    fig = trial_curve_figure(trial_curve_info(trial, metric))
    return Response(content=fig.to_json(), media_type="application/json")


@router.get("/studies/{name}/trials/{number}/plots/ratio")
def read_trial_ratio(
    name: str, number: Annotated[int, Path(ge=0, le=2**31 - 1)], storage: StorageDep
) -> Response:
    """The trial's noise-to-gradient ratio per layer over epochs, as a Plotly figure (one
    with a note and no data when its curve has none: tasks without torch, or no epoch yet)."""
    trial, _ = load_trial(storage, name, number)  # TrialNotFound: 404 (service.app)
    fig = trial_ratio_figure(ratio_series(trial) or empty_ratio_series(trial.number))
    return Response(content=fig.to_json(), media_type="application/json")


def _finite(value: Any, loc: list[str | int]) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(loc, f"{'.'.join(map(str, loc[1:]))}: must be a finite number")
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        _finite(item, [*loc, key])


def parse_spec_text(text: str) -> dict[str, Any]:
    """A study spec from YAML or JSON text, validated like ``POST /studies`` validates it."""
    try:
        raw = load_yaml(text)
    except SpecTextError as exc:
        raise InvalidInput(["body"], str(exc)) from None
    if not isinstance(raw, dict):
        raise InvalidInput(["body"], "the spec must be a mapping (name: ..., task: ..., ...)")
    _finite(raw, ["body"])
    try:
        StudySpec.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None
    # JSON round trip: YAML may give dates or other types that JSON cannot carry.
    return json.loads(json.dumps(raw, default=str))


@router.post(
    "/specs/parse",
    response_model=dict[str, Any],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/yaml": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def parse_spec(request: Request) -> Response:
    """Turn a YAML (or JSON) study spec into the JSON body ``POST /studies`` takes.

    Answers ``{"spec": {...}}``, or 422 with the same messages ``POST /studies`` gives;
    413 for a spec over 64 KiB.
    """
    body = await request.body()
    if len(body) > MAX_SPEC_BYTES:
        raise HTTPException(413, f"a spec to parse may be at most {MAX_SPEC_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(["body"], "the spec must be UTF-8 text") from None
    # Parsing is CPU work: in a thread, so that the server keeps answering meanwhile.
    spec = await run_in_threadpool(parse_spec_text, text)
    # Safe for any string the YAML held (a lone surrogate, by Python's YAML parser).
    return SafeJSONResponse({"spec": spec})
