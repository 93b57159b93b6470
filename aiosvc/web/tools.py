"""Routes for MCP servers and their tools."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web

from aiosvc.web import params
from aiosvc.web.keys import AGENTS, SETTINGS
from aiosvc.web.operation import PAGING, Page, operation
from aiosvc.web.responses import ok, page

routes = web.RouteTableDef()
MCP_SERVER = {
    "name": str,
    "transport": Literal["stdio", "http"],
    "status": Literal["connected", "connecting", "failed", "stopped"],
    "error": str | None,
    "tools": list[str],
}
TOOL = {"name": str, "server": str, "description": str, "input_schema": dict[str, Any]}


@routes.get("/api/v1/mcp")
@operation(responses={200: Page(MCP_SERVER)}, params=PAGING)
async def list_mcp_servers(request: web.Request) -> web.Response:
    """The configured MCP servers, by name, with their state, last error and tools."""
    limit, offset = params.paging(request, request.app[SETTINGS].config.limits.max_page_size)
    return page(request.app[AGENTS].tools.describe(), limit=limit, offset=offset)


@routes.post("/api/v1/mcp/{name}/start")
@operation(responses={200: MCP_SERVER})
async def start_mcp_server(request: web.Request) -> web.Response:
    """Start a stopped server (it connects in the background); a running one is left as it is."""
    name = request.match_info["name"]
    return ok(await request.app[AGENTS].tools.start_server(_known(request, name)))


@routes.post("/api/v1/mcp/{name}/stop")
@operation(responses={200: MCP_SERVER})
async def stop_mcp_server(request: web.Request) -> web.Response:
    """Stop a server (its whole process group) until it is started again or a reload
    changes it; answers once it has stopped."""
    name = request.match_info["name"]
    return ok(await request.app[AGENTS].tools.stop_server(_known(request, name)))


@routes.get("/api/v1/tools")
@operation(responses={200: Page(TOOL)}, params=PAGING)
async def list_tools(request: web.Request) -> web.Response:
    """Every tool of every connected server, by full name ``server.tool``."""
    limit, offset = params.paging(request, request.app[SETTINGS].config.limits.max_page_size)
    tools = [
        {
            "name": tool.name,
            "server": tool.server,
            "description": tool.description,
            "input_schema": tool.input_schema,
        }
        for tool in request.app[AGENTS].tools.tools()
    ]
    return page(tools, limit=limit, offset=offset)


def _known(request: web.Request, name: str) -> str:
    """``name`` when it is a configured server's (404 before anything else)."""
    request.app[AGENTS].tools.server(name)
    return name
