"""Tools for agents: MCP servers kept connected (:mod:`.server`), found and called by name
(:mod:`.manager`)."""

from aiosvc.agents.tools.manager import McpManager, ToolOutcome
from aiosvc.agents.tools.server import ToolSpec

__all__ = ["McpManager", "ToolOutcome", "ToolSpec"]
