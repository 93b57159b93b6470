"""Agent backends, built by name from the configuration."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

from aiosvc.agents.base import Agent, AgentError, ApprovalGate, ReplyRecorder, Turn
from aiosvc.agents.command import CommandAgent
from aiosvc.agents.echo import EchoAgent
from aiosvc.agents.openai_compat import OpenAIAgent
from aiosvc.agents.tools import McpManager
from aiosvc.config import AgentConfig, AgentsConfig, CommandAgentConfig, EchoAgentConfig

__all__ = [
    "Agent",
    "AgentError",
    "AgentRegistry",
    "ApprovalGate",
    "McpManager",
    "ReplyRecorder",
    "Turn",
]


def build_agent(name: str, config: AgentConfig, tools: McpManager | None = None) -> Agent:
    """Make the agent that ``config`` describes (``tools``: the MCP servers it may use)."""
    if isinstance(config, EchoAgentConfig):
        return EchoAgent(name, delay_ms=config.delay_ms)
    if isinstance(config, CommandAgentConfig):
        return CommandAgent(name, config)
    return OpenAIAgent(name, config, tools)


class AgentRegistry:
    """The configured agents by name, and which one a new session gets.

    A reload swaps the agents (:meth:`reconfigure`); a reply holds its agent from start to end
    (:meth:`acquire`, :meth:`release`), so an agent removed or changed meanwhile finishes that
    reply and is closed afterwards.
    """

    def __init__(
        self,
        agents: Mapping[str, Agent],
        default: str,
        configs: Mapping[str, AgentConfig] | None = None,
        tools: McpManager | None = None,
    ) -> None:
        self._agents = dict(agents)
        self.tools = tools or McpManager({})
        self._configs = dict(configs or {})  # what each agent was built from
        self.default = default
        self._in_use: dict[Agent, int] = {}
        self._retired: set[Agent] = set()  # replaced while in use: closed when released
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: AgentsConfig, tools: McpManager | None = None) -> AgentRegistry:
        """Build every configured agent (``tools``: the MCP servers they may use)."""
        tools = tools or McpManager({})
        agents = {name: build_agent(name, conf, tools) for name, conf in config.backends.items()}
        return cls(agents, config.default, config.backends, tools)

    def reconfigure(self, config: AgentsConfig) -> None:
        """Take the agents of ``config``: an unchanged one is kept, a new or changed one built;
        one removed or replaced is closed once no running reply uses it."""
        agents = {
            name: self._agents[name]
            if name in self._agents and self._configs.get(name) == conf
            else build_agent(name, conf, self.tools)
            for name, conf in config.backends.items()
        }
        gone = [agent for name, agent in self._agents.items() if agents.get(name) is not agent]
        self._agents, self._configs = agents, dict(config.backends)
        self.default = config.default
        for agent in gone:
            if agent in self._in_use:
                self._retired.add(agent)
            else:
                self._close_soon(agent)

    def get(self, name: str) -> Agent | None:
        """The agent of that name, or None."""
        return self._agents.get(name)

    def acquire(self, name: str) -> Agent | None:
        """The agent of that name for one reply (give it back with :meth:`release`)."""
        agent = self._agents.get(name)
        if agent is not None:
            self._in_use[agent] = self._in_use.get(agent, 0) + 1
        return agent

    async def release(self, agent: Agent) -> None:
        """One reply is done with ``agent``; close it if a reload replaced it meanwhile."""
        left = self._in_use.pop(agent, 1) - 1
        if left:
            self._in_use[agent] = left
        elif agent in self._retired:
            self._retired.discard(agent)
            await agent.close()

    def _close_soon(self, agent: Agent) -> None:
        task = asyncio.get_running_loop().create_task(agent.close(), name="aiosvc-agent-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._agents.values())

    def describe(self) -> list[dict[str, Any]]:
        """Name, kind, default flag and non-secret settings of each agent, by name."""
        return [
            {
                "name": agent.name,
                "kind": agent.kind,
                "default": agent.name == self.default,
                "config": dict(agent.describe()),
            }
            for agent in sorted(self._agents.values(), key=lambda a: a.name)
        ]

    async def close(self) -> None:
        """Release every agent's resources."""
        for agent in [*self._agents.values(), *self._retired]:
            await agent.close()
        self._retired.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
