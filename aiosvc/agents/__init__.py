"""Agent backends, built by name from the configuration."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from aiosvc.agents.base import Agent, AgentError, ApprovalGate, Turn
from aiosvc.agents.command import CommandAgent
from aiosvc.agents.echo import EchoAgent
from aiosvc.agents.openai import OpenAIAgent
from aiosvc.config import AgentConfig, AgentsConfig, CommandAgentConfig, EchoAgentConfig

__all__ = ["Agent", "AgentError", "AgentRegistry", "ApprovalGate", "Turn"]


def build_agent(name: str, config: AgentConfig) -> Agent:
    """Make the agent that ``config`` describes."""
    if isinstance(config, EchoAgentConfig):
        return EchoAgent(name, delay_ms=config.delay_ms)
    if isinstance(config, CommandAgentConfig):
        return CommandAgent(name, config)
    return OpenAIAgent(name, config)


class AgentRegistry:
    """The configured agents by name, and which one a new session gets."""

    def __init__(self, agents: Mapping[str, Agent], default: str) -> None:
        self._agents = dict(agents)
        self.default = default

    @classmethod
    def from_config(cls, config: AgentsConfig) -> AgentRegistry:
        """Build every configured agent."""
        agents = {name: build_agent(name, conf) for name, conf in config.backends.items()}
        return cls(agents, config.default)

    def get(self, name: str) -> Agent | None:
        """The agent of that name, or None."""
        return self._agents.get(name)

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
        for agent in self._agents.values():
            await agent.close()
