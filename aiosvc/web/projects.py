"""Routes for projects, their todos, and the statistics of the last days."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from aiohttp import web

from aiosvc.convert import unstructure
from aiosvc.errors import InvalidParameter
from aiosvc.projects import Project, Todo
from aiosvc.rules import MAX_FILTER_CHARS
from aiosvc.store.stats import MAX_DAYS, Stats
from aiosvc.web import params
from aiosvc.web.keys import PROJECTS, SETTINGS, STORE
from aiosvc.web.operation import PAGING, Page, Param, operation
from aiosvc.web.responses import ok, page, raw_page

routes = web.RouteTableDef()
DEFAULT_DAYS = 30


@routes.get("/api/v1/projects")
@operation(responses={200: Page(Project)}, params=PAGING)
async def list_projects(request: web.Request) -> web.Response:
    """The configured projects by name, with their session count and open todos."""
    limit, offset = params.paging(request, request.app[SETTINGS].config.limits.max_page_size)
    return page(await request.app[PROJECTS].describe(), limit=limit, offset=offset)


@routes.get("/api/v1/todos")
@operation(
    responses={200: Page(Todo)},
    params=[
        Param(
            "project",
            str,
            "The project whose TODO.md is read (required).",
            {"minLength": 1, "maxLength": MAX_FILTER_CHARS},
        ),
        Param("all", bool, "Done items too (open ones only by default)."),
        *PAGING,
    ],
    errors={404: "not_found"},
)
async def list_todos(request: web.Request) -> web.Response:
    """A project's ``TODO.md`` checklist items, in the file's order."""
    project = params.text(request, "project")
    if project is None:
        raise InvalidParameter("project", "is required")
    include_done = params.boolean(request, "all")
    limit, offset = params.paging(request, request.app[SETTINGS].config.limits.max_page_size)
    todos, total = await request.app[PROJECTS].todos(
        project, include_done=include_done, limit=limit, offset=offset
    )
    shown = [orjson.dumps(unstructure(todo)) for todo in todos]
    return raw_page(shown, total=total, limit=limit, offset=offset)


@routes.get("/api/v1/stats")
@operation(
    responses={200: Stats},
    params=[
        Param(
            "days",
            int,
            f"Days covered, today (UTC) included; {DEFAULT_DAYS} by default.",
            {"minimum": 1, "maximum": MAX_DAYS},
        )
    ],
)
async def get_stats(request: web.Request) -> web.Response:
    """Sessions, messages, replies and tokens per day, and replies per agent."""
    days = params.integer(request, "days", DEFAULT_DAYS, 1, MAX_DAYS)
    today = datetime.now(UTC).date()
    return ok(await request.app[STORE].stats(days, today))
