"""A real MCP server for the tests, written with the SDK's server API.

Run as ``python tests/mcp_server.py`` (stdio), or with ``--http PORT`` (streamable HTTP).
Its tools: ``add`` and ``echo`` succeed, ``fail`` raises (an error result), ``hang`` waits
(with a ``sleep`` child, killed when the call is cancelled), ``spawn`` leaves a ``sleep``
child running, ``big`` returns (and writes to stderr) a lot, ``environment`` shows its
environment, ``stamp`` the time it started, ``pid`` its process id.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("aiosvc-test")
BIG_LINE = "0123456789abcdef" * 4 + "\n"


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def echo(text: str) -> str:
    """Return the text."""
    return text


@server.tool()
def fail(message: str = "it broke") -> str:
    """Always fail, with this message."""
    raise ValueError(message)


@server.tool()
async def hang(seconds: float = 600.0) -> str:
    """Wait (with a child process) for this long."""
    child = await asyncio.create_subprocess_exec("sleep", str(seconds))
    try:
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return "done"


@server.tool()
async def spawn() -> str:
    """Leave a ``sleep 600`` child running; return its pid."""
    child = await asyncio.create_subprocess_exec("sleep", "600")
    return str(child.pid)


@server.tool()
def big(kib: int = 200) -> str:
    """Return about ``kib`` KiB of text (and write as much to stderr)."""
    text = BIG_LINE * (kib * 1024 // len(BIG_LINE))
    sys.stderr.write(text)
    sys.stderr.flush()
    return text


@server.tool()
def environment() -> dict[str, str]:
    """This process's environment."""
    return dict(os.environ)


@server.tool()
def stamp() -> str:
    """The wall-clock time at which this call started (``time.time()``)."""
    return repr(time.time())


@server.tool()
def pid() -> str:
    """This process's id."""
    return str(os.getpid())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:  # streamable HTTP at http://127.0.0.1:PORT/mcp
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
