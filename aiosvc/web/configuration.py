"""Routes for the configuration: read it, reload it."""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from aiosvc.config import ConfigError
from aiosvc.config.live import document
from aiosvc.errors import InvalidConfig
from aiosvc.web.keys import SETTINGS
from aiosvc.web.operation import operation
from aiosvc.web.responses import ok

routes = web.RouteTableDef()
# Answers that are plain dicts, described for the OpenAPI document.
CONFIG_VIEW = {"file": str | None, "config": dict[str, Any], "restart_required": list[str]}
RELOADED = {"changed": list[str], "restart_required": list[str]}


@routes.get("/api/v1/config")
@operation(responses={200: CONFIG_VIEW})
async def get_config(request: web.Request) -> web.Response:
    """The configuration in effect, as the file spells it, secrets as ``"[redacted]"``."""
    settings = request.app[SETTINGS]
    source = settings.config.source
    return ok(
        {
            "file": None if source is None else os.fspath(source),
            "config": document(settings.config, redact=True),
            "restart_required": list(settings.restart_required),
        }
    )


@routes.post("/api/v1/config/reload")
@operation(responses={200: RELOADED}, errors={400: "invalid_config"})
async def reload_config(request: web.Request) -> web.Response:
    """Read the configuration file again and apply what can change live (as SIGHUP does)."""
    try:
        outcome = request.app[SETTINGS].reload()
    except ConfigError as exc:
        raise InvalidConfig(exc.errors) from None
    return ok(
        {"changed": list(outcome.changed), "restart_required": list(outcome.restart_required)}
    )
