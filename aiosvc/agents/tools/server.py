"""One MCP server, kept connected: started, watched, restarted with backoff, stopped.

Everything the SDK opens for a connection (the transport, its task groups, the client
session) is entered and left by one long-lived task, :meth:`McpServer._run`, as anyio's
task groups require; other tasks only call :meth:`McpServer.call` on the session it holds.
Stopping cancels that task's anyio cancel scope (not the asyncio task), so that the SDK's
shielded shutdown of a stdio server runs to its end.

The SDK is imported when the first server starts, in a thread (it takes about a second, which
would hold the event loop, and a daemon without MCP servers never pays it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

import anyio
import attrs
import structlog
from anyio.abc import ObjectSendStream

from aiosvc.agents.tools import process
from aiosvc.config import McpServerConfig

if TYPE_CHECKING:
    import mcp_types
    from mcp import ClientSession

log = structlog.get_logger(__name__)

Status = Literal["connected", "connecting", "failed", "stopped"]
#: Waits between restarts: doubled after each failure, from the first to the last.
BACKOFF_S = (1.0, 30.0)
#: A connection that lasted this long resets the backoff.
STABLE_S = 30.0
#: Starting (the handshake and the tool list) may take this long.
START_TIMEOUT_S = 30.0
#: An HTTP server is pinged this often (a stdio server's end is seen on its pipe).
PING_EVERY_S, PING_TIMEOUT_S = 15.0, 10.0
#: Stopping may take this long before the process group is killed outright.
STOP_TIMEOUT_S = 8.0


@attrs.frozen(kw_only=True)
class ToolSpec:
    """A tool of a connected server, by its full name ``server.tool``."""

    name: str
    server: str
    tool: str  # its name on the server
    description: str
    input_schema: dict[str, Any]


class ToolCallError(Exception):
    """A call that did not run to a result: ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class McpServer:
    """A configured MCP server and the task that keeps it connected."""

    def __init__(self, name: str, config: McpServerConfig, workdir: str) -> None:
        self.name = name
        self.config = config
        self.status: Status = "stopped"
        self.error: str | None = None
        self.tools: tuple[ToolSpec, ...] = ()
        self._pidfile = os.path.join(workdir, f"{name}.pid")
        self._session: ClientSession | None = None
        self._scope: anyio.CancelScope | None = None
        self._task: asyncio.Task[None] | None = None
        self._pgid: int | None = None

    @property
    def running(self) -> bool:
        """Tell whether its task runs (connected, connecting, or waiting to retry)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start keeping it connected (nothing when it already is)."""
        if self.running:
            return
        self.status, self.error = "connecting", None
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"aiosvc-mcp-{self.name}"
        )

    async def stop(self) -> None:
        """Disconnect and stop the server (its whole process group); wait for the end."""
        task = self._task
        if task is not None and not task.done():
            if self._scope is not None:
                self._scope.cancel()
            else:
                task.cancel()
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
            if not done:  # a shutdown stuck past every bound: end it the hard way
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        if self._pgid is not None:
            process.kill_group_now(self._pgid)
            self._pgid = None
        self._task = None
        self.status, self.tools = "stopped", ()

    def describe(self) -> dict[str, Any]:
        """Its state as ``GET /api/v1/mcp`` shows it."""
        return {
            "name": self.name,
            "transport": self.config.transport,
            "status": self.status,
            "error": self.error,
            "tools": [tool.name for tool in self.tools],
        }

    async def call(
        self, tool: str, arguments: dict[str, Any], timeout_s: float
    ) -> mcp_types.CallToolResult:
        """Run one of its tools; :class:`ToolCallError` when it cannot run to a result."""
        import mcp_types
        from mcp.shared.exceptions import MCPError

        session = self._session
        if session is None or self.status != "connected":
            raise ToolCallError("server_unavailable", f"MCP server {self.name!r} is {self.status}")
        try:
            # The SDK's own timeout also tells the server to stop (a courtesy cancel); the
            # outer one bounds what the SDK cannot (a write to a stuck pipe).
            async with asyncio.timeout(timeout_s + 5.0):
                return await session.call_tool(tool, arguments, read_timeout_seconds=timeout_s)
        except MCPError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                raise ToolCallError(
                    "tool_timeout", f"the tool ran longer than {timeout_s:g} s"
                ) from None
            raise ToolCallError("tool_failed", exc.message or "the tool call failed") from None
        except TimeoutError:
            raise ToolCallError(
                "tool_timeout", f"the tool ran longer than {timeout_s:g} s"
            ) from None

    # ---- the task that owns the connection

    async def _run(self) -> None:
        delay = BACKOFF_S[0]
        with anyio.CancelScope() as scope:
            self._scope = scope
            await asyncio.to_thread(_load_sdk)
            while True:
                self.status = "connecting"
                began = time.monotonic()
                try:
                    await self._connect_once()
                    error = "the server closed the connection"
                except Exception as exc:  # whatever went wrong, it is reported and retried
                    error = _describe(exc)
                if time.monotonic() - began >= STABLE_S:
                    delay = BACKOFF_S[0]
                self.status, self.error, self.tools = "failed", error, ()
                log.warning("mcp_server_failed", server=self.name, error=error, retry_in_s=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, BACKOFF_S[1])
        self._scope = None

    async def _connect_once(self) -> None:
        """Connect, list the tools, then wait until the connection ends."""
        from mcp import ClientSession, StdioServerParameters, stdio_client
        from mcp.client.streamable_http import streamable_http_client

        async with contextlib.AsyncExitStack() as stack:
            stderr: process.StderrTail | None = None
            if self.config.command is not None:
                stderr = process.StderrTail()
                stack.callback(stderr.close)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._pidfile)
                stack.push_async_callback(self._end_group)  # after the transport's own end
                executable, args, env = process.launch(
                    self.config.command, self.config.env, self._pidfile
                )
                params = StdioServerParameters(
                    command=executable, args=args, env=env, cwd=self.config.cwd
                )
                read, write = await stack.enter_async_context(
                    stdio_client(params, errlog=stderr.file)
                )
                stderr.spawned()
                self._pgid = process.read_pid(self._pidfile)
            else:
                assert self.config.url is not None
                read, write = await stack.enter_async_context(
                    streamable_http_client(self.config.url)
                )
            # A relay between the transport and the session: its end is the connection's end
            # (the session itself tells nobody that its stream closed).
            closed = anyio.Event()
            relay_send, relay_receive = anyio.create_memory_object_stream[Any](0)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)
            group.start_soon(_relay, read, relay_send, closed)
            session = await stack.enter_async_context(ClientSession(relay_receive, write))
            try:
                with anyio.fail_after(START_TIMEOUT_S):
                    await session.initialize()
                    tools = [tool async for tool in _list_tools(session)]
            except Exception as exc:
                if stderr is not None and stderr.text():
                    raise ServerFailed(f"{_describe(exc)}: {stderr.text()}") from None
                raise
            if self._pgid is None:
                self._pgid = process.read_pid(self._pidfile)
            self.tools = tuple(
                ToolSpec(
                    name=f"{self.name}.{tool.name}",
                    server=self.name,
                    tool=tool.name,
                    description=tool.description or "",
                    input_schema=dict(tool.input_schema),
                )
                for tool in tools
            )
            self._session = session
            self.status, self.error = "connected", None
            log.info("mcp_server_connected", server=self.name, tools=len(self.tools))
            try:
                await self._watch(session, closed)
            finally:
                self._session = None
            if stderr is not None and stderr.text():
                raise ServerFailed(f"the server closed the connection: {stderr.text()}")

    async def _watch(self, session: ClientSession, closed: anyio.Event) -> None:
        """Until the connection ends (or, over HTTP, the server stops answering pings)."""
        if self.config.command is not None:
            await closed.wait()
            return
        while not closed.is_set():
            with anyio.move_on_after(PING_EVERY_S):
                await closed.wait()
                return
            with anyio.fail_after(PING_TIMEOUT_S):
                await session.send_ping()

    async def _end_group(self) -> None:
        """Kill what is left of the server's process group (a tool's children, say)."""
        pgid = self._pgid or process.read_pid(self._pidfile)
        self._pgid = None
        if pgid is not None:
            with anyio.CancelScope(shield=True):
                await process.kill_group(pgid)


class ServerFailed(Exception):
    """The server failed, with what it wrote to stderr."""


async def _relay(source: Any, sink: ObjectSendStream[Any], closed: anyio.Event) -> None:
    """Pass the transport's messages on to the session; set ``closed`` when they end."""
    try:
        async with sink:
            async for item in source:
                await sink.send(item)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    finally:
        closed.set()


def _load_sdk() -> None:
    """Import the parts of the SDK used here (then each import is a lookup)."""
    import mcp
    import mcp.client.streamable_http
    import mcp.shared.exceptions
    import mcp_types

    del mcp, mcp_types


async def _list_tools(session: ClientSession) -> AsyncIterator[mcp_types.Tool]:
    import mcp_types

    cursor: str | None = None
    while True:
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        for tool in page.tools:
            yield tool
        cursor = page.next_cursor
        if not cursor:
            return


def _describe(exc: BaseException) -> str:
    """A one-line reason, from the innermost exception of a group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return f"no answer within {START_TIMEOUT_S:g} s"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError) else text
