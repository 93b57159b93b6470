"""Routes for health, metrics, agents, tickets, hooks, commands and the API document."""

from __future__ import annotations

import time
from typing import Any, Literal

from aiohttp import hdrs, web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from aiosvc import __version__
from aiosvc.commands.types import PublishHook
from aiosvc.errors import NotFound, Unavailable
from aiosvc.models import Command, is_valid_id
from aiosvc.store import StorageFull
from aiosvc.web import openapi, params
from aiosvc.web.bodies import HookCreate
from aiosvc.web.front_door import credential
from aiosvc.web.keys import (
    ACCESS_GATE,
    AGENTS,
    CACHE,
    COMMAND_SERVICE,
    DATABASE,
    METRICS_REGISTRY,
    SETTINGS,
    STARTED_AT,
)
from aiosvc.web.operation import PAGING, Page, Raw, Text, operation
from aiosvc.web.responses import JSON, ok, page

routes = web.RouteTableDef()
# Answers that are plain dicts, described for the OpenAPI document.
HEALTH = {"status": Literal["ok"], "version": str, "uptime_s": float, "db": Literal["ok"]}
AGENT = {"name": str, "kind": str, "default": bool, "config": dict[str, Any]}
MODEL = {"id": str, "owned_by": str | None}


@routes.get("/health", public=True)
@routes.get("/api/v1/health")
@operation(responses={200: HEALTH}, errors={503: "unavailable"})
async def health(request: web.Request) -> web.Response:
    """Liveness and readiness: 200 when the database takes writes, else 503 saying why
    (``db``: ``degraded`` when it is full and reads still work, ``error`` otherwise)."""
    report: dict[str, Any] = {
        "status": "ok",
        "version": __version__,
        "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 3),
        "db": "ok",
    }
    problem = await request.app[DATABASE].check() or request.app[COMMAND_SERVICE].not_ready
    if problem is not None:
        degraded = isinstance(problem, StorageFull)
        report.update(status="unavailable", db="degraded" if degraded else "error")
        report["db_error"] = str(problem)
        raise Unavailable("the database cannot store changes now", details=report)
    return ok(report)


@routes.get("/metrics")
@operation(responses={200: Text("text/plain")})
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics, in the text exposition format (version 0.0.4)."""
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_PLAIN_0_0_4})


@routes.get("/api/v1/agents")
@operation(responses={200: Page(AGENT)}, params=PAGING)
async def list_agents(request: web.Request) -> web.Response:
    """The configured agents with their kind and non-secret settings."""
    limit, offset = params.paging(request, request.app[SETTINGS].config.limits.max_page_size)
    return page(request.app[AGENTS].describe(), limit=limit, offset=offset)


@routes.get("/api/v1/agents/{name}/models")
@operation(
    responses={200: Page(MODEL)},
    params=PAGING,
    errors={404: "not_found", 422: "unsupported_option", 502: "upstream_error"},
)
async def list_models(request: web.Request) -> web.Response:
    """The models an ``openai`` agent's upstream lists (``GET {base_url}/models``)."""
    name = request.match_info["name"]
    agent = request.app[AGENTS].get(name)
    if agent is None:
        raise NotFound.of("agent", name)
    limit, offset = params.paging(request, request.app[SETTINGS].config.limits.max_page_size)
    return page(await agent.models(), limit=limit, offset=offset)


@routes.post("/api/v1/tickets")
@operation(responses={201: {"ticket": str, "expires_at": str}})
async def issue_ticket(request: web.Request) -> web.Response:
    """A single-use ticket for a WebSocket or EventSource URL (``?ticket=``), valid 60 s."""
    ticket, expires_at = request.app[ACCESS_GATE].tickets.issue(credential.get())
    return ok({"ticket": ticket, "expires_at": expires_at}, status=201)


@routes.post("/api/v1/hooks")
@operation(
    body=HookCreate,
    responses={202: {"event_id": int, "type": str}},
    errors={404: "not_found"},  # the session_id it names
)
async def post_hook(request: web.Request) -> web.Response:
    """Publish an external event as ``hook.<type>``; answers 202 with its event id."""
    body = await params.body(request, HookCreate)
    event = await request.app[COMMAND_SERVICE].execute(
        PublishHook(type=body.type, session_id=body.session_id, data=body.data)
    )
    return ok({"event_id": event.id, "type": event.type}, status=202)


@routes.get("/api/v1/commands/{id}")
@operation(responses={200: Command})
async def get_command(request: web.Request) -> web.Response:
    """A command's state."""
    command_id = request.match_info["id"]
    command = await request.app[CACHE].command(command_id) if is_valid_id(command_id) else None
    if command is None:
        raise NotFound.of("command", command_id)
    return ok(command)


@routes.get("/api/v1/openapi.json")
@operation(responses={200: Raw(dict[str, Any])})
async def openapi_document(request: web.Request) -> web.Response:
    """This document: OpenAPI 3.1, generated from the routes and the models."""
    return web.Response(body=openapi.document_json(request.app), content_type=JSON)
