"""The configuration: a frozen attrs tree (:mod:`.tree`) loaded from a TOML file, the
environment and command-line flags (:mod:`.load`)."""

from aiosvc.config.live import Reloaded, Settings
from aiosvc.config.load import ENV_KEYS, FLAGS, describe_config, load_config
from aiosvc.config.tree import (
    AGENT_KINDS,
    HOST_RE,
    PROMPT_ARG,
    AgentConfig,
    AgentsConfig,
    ApprovalsConfig,
    CommandAgentConfig,
    Config,
    ConfigError,
    EchoAgentConfig,
    EventsConfig,
    LimitsConfig,
    OpenAIAgentConfig,
    PeerConfig,
    ProjectConfig,
    ServerConfig,
    StorageConfig,
    StreamsConfig,
    default_db_path,
)

__all__ = [
    "AGENT_KINDS",
    "ENV_KEYS",
    "FLAGS",
    "HOST_RE",
    "PROMPT_ARG",
    "AgentConfig",
    "AgentsConfig",
    "ApprovalsConfig",
    "CommandAgentConfig",
    "Config",
    "ConfigError",
    "EchoAgentConfig",
    "EventsConfig",
    "LimitsConfig",
    "OpenAIAgentConfig",
    "PeerConfig",
    "ProjectConfig",
    "Reloaded",
    "ServerConfig",
    "Settings",
    "StorageConfig",
    "StreamsConfig",
    "default_db_path",
    "describe_config",
    "load_config",
]
