"""All routers under one ``/api/v1`` router, plus the read-only catalog of tasks and spaces."""

from __future__ import annotations

from fastapi import APIRouter

from search_spaces import BUILTIN_SPACES, task_definitions
from service.api import plots, studies, study_edits, workers
from service.deps import ReadAccess
from service.schemas import SearchSpacePublic, SearchSpacesPublic, TaskPublic, TasksPublic

API_PREFIX = "/api/v1"

catalog = APIRouter(tags=["catalog"], dependencies=[ReadAccess])


@catalog.get("/tasks")
def list_tasks() -> TasksPublic:
    """Registered tasks: what a study's `task` may name, and each task's config schema."""
    data = [
        TaskPublic(
            name=d.name,
            description=d.description,
            primary_metric=d.primary_metric,
            direction=d.direction,
            metrics=dict(d.metrics),
            config_schema=d.config_model.model_json_schema(),
        )
        for d in task_definitions().values()
    ]
    return TasksPublic(data=data, count=len(data))


@catalog.get("/search-spaces")
def list_search_spaces() -> SearchSpacesPublic:
    """Built-in search spaces: what a study's `search_space` may name instead of a mapping."""
    data = [SearchSpacePublic(name=n, space=s) for n, s in BUILTIN_SPACES.items()]
    return SearchSpacesPublic(data=data, count=len(data))


api_router = APIRouter(prefix=API_PREFIX)
api_router.include_router(studies.router)
api_router.include_router(study_edits.router)
api_router.include_router(workers.router)
api_router.include_router(plots.router)
api_router.include_router(catalog)
