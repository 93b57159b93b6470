"""The configured MCP servers: started with the daemon and on reload, stopped with it, and
their tools found and called by full name ``server.tool``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import orjson
import structlog

from aiosvc.agents.tools import process
from aiosvc.agents.tools.server import McpServer, ToolCallError, ToolSpec
from aiosvc.config import McpServerConfig
from aiosvc.errors import NotFound

if TYPE_CHECKING:
    import mcp_types

log = structlog.get_logger(__name__)


@attrs.frozen(kw_only=True)
class ToolOutcome:
    """What a tool call gave: its text, and whether it is an error (``code`` says which)."""

    output: str
    is_error: bool
    code: str | None = None


class McpManager:
    """Every configured MCP server, by name."""

    def __init__(self, configs: Mapping[str, McpServerConfig]) -> None:
        self._configs = dict(configs)
        self._workdir: str | None = None
        self._servers: dict[str, McpServer] = {}
        self._pending: set[asyncio.Task[None]] = set()

    def _dir(self) -> str:
        if self._workdir is None:
            self._workdir = process.private_dir()
        return self._workdir

    def start(self) -> None:
        """Start every configured server (each connects in the background)."""
        for name, config in self._configs.items():
            if name not in self._servers:
                self._servers[name] = McpServer(name, config, self._dir())
                self._servers[name].start()
                log.info("mcp_server_starting", server=name, transport=config.transport)

    def reconfigure(self, configs: Mapping[str, McpServerConfig]) -> None:
        """Take the servers of a reload: a new or changed one (re)starts, a removed one stops."""
        stopping = []
        for name, server in list(self._servers.items()):
            if configs.get(name) != server.config:
                del self._servers[name]
                stopping.append(self._later(server.stop()))
        self._configs = dict(configs)
        for name, config in configs.items():
            if name not in self._servers:
                server = self._servers[name] = McpServer(name, config, self._dir())
                self._later(self._start_after(server, stopping))

    async def _start_after(self, server: McpServer, stopping: list[asyncio.Task[None]]) -> None:
        """Start ``server`` once the servers it replaces have stopped."""
        await asyncio.gather(*stopping, return_exceptions=True)
        if self._servers.get(server.name) is server:
            server.start()
            log.info("mcp_server_starting", server=server.name, transport=server.config.transport)

    def _later(self, work: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name="aiosvc-mcp-reconfigure")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    def server(self, name: str) -> McpServer:
        """The server of that name, or :class:`NotFound`."""
        found = self._servers.get(name)
        if found is None:
            raise NotFound.of("mcp server", name)
        return found

    async def start_server(self, name: str) -> dict[str, Any]:
        """Start a stopped server (a running one is left as it is); its state."""
        server = self.server(name)
        server.start()
        return server.describe()

    async def stop_server(self, name: str) -> dict[str, Any]:
        """Stop a server until it is started again (or a reload changes it); its state."""
        server = self.server(name)
        await server.stop()
        return server.describe()

    def describe(self) -> list[dict[str, Any]]:
        """Each server's state, by name."""
        return [self._servers[name].describe() for name in sorted(self._servers)]

    def tools(self, selection: Iterable[str] | None = None) -> list[ToolSpec]:
        """The connected tools, by name: all, or those ``selection`` names (a server stands
        for all its tools)."""
        wanted = None if selection is None else set(selection)
        found = []
        for name in sorted(self._servers):
            for tool in self._servers[name].tools:
                if wanted is None or tool.server in wanted or tool.name in wanted:
                    found.append(tool)
        return found

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> ToolOutcome:
        """Run the tool ``server.tool``; every failure is an outcome, never an exception."""
        server_name, _, tool_name = name.partition(".")
        server = self._servers.get(server_name)
        if server is None or not any(t.tool == tool_name for t in server.tools):
            return ToolOutcome(output=f"unknown tool {name!r}", is_error=True, code="unknown_tool")
        try:
            result = await server.call(tool_name, arguments, timeout_s)
        except ToolCallError as exc:
            return ToolOutcome(output=exc.message, is_error=True, code=exc.code)
        return ToolOutcome(
            output=result_text(result),
            is_error=result.is_error,
            code="tool_error" if result.is_error else None,
        )

    async def close(self) -> None:
        """Stop every server and wait for their ends."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def result_text(result: mcp_types.CallToolResult) -> str:
    """A tool result as text: its text blocks, other blocks described, or its structured
    content as JSON when it has no blocks."""
    import mcp_types

    parts = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        else:
            kind = getattr(block, "type", "content")
            mime = getattr(block, "mime_type", None)
            parts.append(f"[{kind}{' ' + mime if mime else ''}]")
    if not parts and result.structured_content is not None:
        return orjson.dumps(result.structured_content).decode()
    return "\n".join(parts)
