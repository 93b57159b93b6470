"""``[mcp.NAME]`` and the ``openai`` agent's tool settings: loaded, checked and reported like
the rest of the configuration; secrets in a server's ``env`` redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiosvc.config import ConfigError, McpServerConfig, OpenAIAgentConfig, load_config
from aiosvc.config.live import document

AGENT = '[agents.coder]\nkind = "openai"\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "m"\n'


def load(tmp_path: Path, text: str) -> list[str]:
    """The error lines of loading ``text`` (the file shown as FILE); [] when it loads."""
    path = tmp_path / "aiosvc.toml"
    path.write_text(text)
    try:
        load_config(path, env={})
    except ConfigError as exc:
        return [line.replace(str(path), "FILE") for line in exc.errors]
    return []


def test_a_stdio_and_an_http_server_with_an_agent_that_uses_them(tmp_path: Path) -> None:
    path = tmp_path / "aiosvc.toml"
    path.write_text(
        '[mcp.files]\ncommand = ["python", "-m", "files"]\nenv = { ROOT = "/src", TOKEN = "s" }\n'
        '[mcp.web]\nurl = "http://127.0.0.1:9000/mcp"\n'
        + AGENT
        + 'tools = ["files", "web.fetch"]\nauto_approve = ["files.read_file"]\n'
        "max_tool_rounds = 3\ntool_timeout_s = 5\n"
    )
    config = load_config(path, env={})
    files, web = config.mcp["files"], config.mcp["web"]
    assert files == McpServerConfig(
        command=("python", "-m", "files"), env={"ROOT": "/src", "TOKEN": "s"}
    )
    assert (files.transport, web.transport, web.url) == (
        "stdio",
        "http",
        "http://127.0.0.1:9000/mcp",
    )
    agent = config.agents.backends["coder"]
    assert isinstance(agent, OpenAIAgentConfig)
    assert (agent.tools, agent.auto_approve) == (("files", "web.fetch"), ("files.read_file",))
    assert (agent.max_tool_rounds, agent.tool_timeout_s) == (3, 5.0)
    shown = document(config, redact=True)
    assert shown["mcp"]["files"]["env"] == {"ROOT": "[redacted]", "TOKEN": "[redacted]"}
    assert shown["mcp"]["files"]["command"] == ["python", "-m", "files"]


def test_the_defaults_offer_no_tools() -> None:
    agent = OpenAIAgentConfig(base_url="http://x", model="m")
    assert (agent.tools, agent.auto_approve, agent.max_tool_rounds, agent.tool_timeout_s) == (
        (),
        (),
        8,
        60.0,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[mcp.x]\ncommand = ["a"]\nurl = "http://h/mcp"\n',
            "FILE: mcp.x.command: expected either command (a list of strings) or url, not both",
        ),
        (
            "[mcp.x]\n",
            "FILE: mcp.x.command: expected either command (a list of strings) or url, not both",
        ),
        ("[mcp.x]\ncommand = []\n", "FILE: mcp.x.command: expected a non-empty list of strings"),
        (
            '[mcp.x]\ncommand = "python -m x"\n',
            "FILE: mcp.x.command: expected a list of strings, got 'python -m x'",
        ),
        (
            '[mcp.x]\nurl = "ftp://h"\n',
            "FILE: mcp.x.url: expected an http:// or https:// URL, got 'ftp://h'",
        ),
        (
            '[mcp.x]\ncommand = ["a"]\nenv = { "A B" = "1" }\n',
            "FILE: mcp.x.env.\"A B\": expected an environment variable name, got 'A B'",
        ),
        (
            '[mcp.x]\ncommand = ["a"]\nport = 1\n',
            "FILE: unknown key 'mcp.x.port', expected one of: command, cwd, env, url",
        ),
        (
            '["mcp"."a b"]\ncommand = ["a"]\n',
            "FILE: mcp.\"a b\": expected a name of 1 to 64 letters, digits, '-' or '_', got 'a b'",
        ),
        (
            AGENT + 'tools = ["files"]\n',
            "FILE: agents.coder.tools[0]: expected a configured MCP server (none), got 'files'",
        ),
        (
            '[mcp.files]\ncommand = ["a"]\n' + AGENT + 'auto_approve = ["other.read"]\n',
            "FILE: agents.coder.auto_approve[0]: expected a configured MCP server (files), "
            "got 'other'",
        ),
        (
            '[mcp.files]\ncommand = ["a"]\n' + AGENT + 'tools = ["files."]\n',
            "FILE: agents.coder.tools: expected MCP server names or 'server.tool' names, "
            "got 'files.'",
        ),
        (
            '[mcp.files]\ncommand = ["a"]\n' + AGENT + "max_tool_rounds = 0\n",
            "FILE: agents.coder.max_tool_rounds: expected an integer >= 1, got 0",
        ),
    ],
)
def test_bad_mcp_and_tool_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert load(tmp_path, text) == [message]
