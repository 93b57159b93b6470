"""The running configuration's core: the file-shaped document, the diff, what a reload applies
and what waits for a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog

from aiosvc.config import Config, ConfigError, Settings, load_config
from aiosvc.config.live import LIVE, diff, document, keep_running

FILE = """\
[server]
api_keys = ["alpha", "beta"]
allowed_hosts = ["dash.example"]

[agents]
default = "tool"

[agents.tool]
kind = "command"
argv = ["tool", "{prompt}"]
env = { TOKEN = "s3cret", MODE = "fast" }

[agents.remote]
kind = "openai"
base_url = "http://127.0.0.1:9"
model = "m"
api_key_env = "REMOTE_KEY"

[projects.site]
path = "/srv/site"
"""


def load(path: Path, **overrides: Any) -> Config:
    """The file with no environment, ``overrides`` as flags."""
    return load_config(path, env={}, overrides={"db": str(path.with_suffix(".db")), **overrides})


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A configuration file with secrets in it."""
    target = tmp_path / "aiosvc.toml"
    target.write_text(FILE)
    return target


def test_the_document_is_spelled_as_the_file_with_secrets_redacted(path: Path) -> None:
    shown = document(load(path), redact=True)
    assert sorted(shown) == [
        "agents",
        "approvals",
        "cache",
        "events",
        "limits",
        "log_format",
        "peers",
        "projects",
        "server",
        "storage",
        "streams",
    ]
    assert shown["server"]["api_keys"] == ["[redacted]", "[redacted]"]
    assert shown["server"]["allowed_hosts"] == ["dash.example"]
    assert shown["agents"] == {
        "default": "tool",
        "echo": {"kind": "echo", "delay_ms": 0},
        "tool": {
            "kind": "command",
            "argv": ["tool", "{prompt}"],
            "cwd": None,
            "env": {"TOKEN": "[redacted]", "MODE": "[redacted]"},
            "timeout_s": None,
            "kill_grace_s": 3.0,
            "protocol": False,
        },
        "remote": {
            "kind": "openai",
            "base_url": "http://127.0.0.1:9",
            "model": "m",
            "api_key_env": "REMOTE_KEY",  # a variable's name, not a secret
            "timeout_s": 120.0,
            "system_prompt": None,
        },
    }
    assert shown["projects"] == {"site": {"path": "/srv/site"}}
    assert shown["storage"] == {"db": str(path.with_suffix(".db"))}
    assert "s3cret" not in repr(shown) and "alpha" not in repr(shown)
    # unredacted, for comparing two configurations
    assert document(load(path))["server"]["api_keys"] == ["alpha", "beta"]


def test_diff_names_leaves_and_whole_tables_added_or_removed() -> None:
    old = {"a": {"x": 1, "y": [1]}, "agents": {"one": {"kind": "echo"}}, "z": None}
    new = {"a": {"x": 2, "y": [1]}, "agents": {"two": {"kind": "echo"}}, "z": None}
    assert diff(old, new) == ["a.x", "agents.one", "agents.two"]
    assert diff(new, new) == []


def test_keep_running_takes_only_live_settings_from_the_file(path: Path) -> None:
    running = load(path)
    text = FILE.replace('["dash.example"]', '["dash.example"]\nport = 9999\ncomputer = "elsewhere"')
    path.write_text(text + "\n[limits]\nmax_page_size = 7\n\n[events]\nbuffer_size = 5\n")
    new = load(path)
    effective = keep_running(running, new)
    assert effective.limits.max_page_size == 7
    assert (effective.server.port, effective.server.computer) == (8420, running.server.computer)
    assert effective.events.buffer_size == running.events.buffer_size
    assert diff(document(effective), document(new)) == [
        "events.buffer_size",
        "server.computer",
        "server.port",
    ]


def test_every_setting_is_live_or_waits_for_a_restart() -> None:
    """A setting added to the tree is a restart's until it is listed in LIVE and applied."""
    names: list[str] = []

    def walk(cls: type, at: str) -> None:
        for field in attrs.fields(cls):
            key = f"{at}.{field.name}" if at else field.name
            if key in LIVE:
                continue
            if isinstance(field.type, type) and attrs.has(field.type):
                walk(field.type, key)
            else:
                names.append(key)

    attrs.resolve_types(Config)
    for cls in attrs.fields(Config):
        if isinstance(cls.type, type) and attrs.has(cls.type):
            attrs.resolve_types(cls.type)
    walk(Config, "")
    assert sorted(names) == [
        "events.buffer_size",
        "events.max_bytes",
        "log_format",
        "server.computer",
        "server.host",
        "server.login_ttl_s",
        "server.port",
        "server.shutdown_timeout_s",
        "source",
        "storage.db",
    ]


def test_a_reload_applies_reports_and_tells_the_holders(path: Path) -> None:
    settings = Settings(load(path), lambda: load(path))
    applied: list[Config] = []
    settings.on_change(applied.append)
    heard: list[Any] = []
    settings.on_reload(heard.append)
    with structlog.testing.capture_logs() as logs:
        nothing = settings.reload()
    assert (nothing.changed, nothing.restart_required) == ((), ())
    assert applied == []  # nothing changed: nobody is bothered
    path.write_text(FILE.replace('"fast"', '"slow"') + '[agents.more]\nkind = "echo"\n')
    before = settings.config
    outcome = settings.reload()
    assert outcome.changed == ("agents.more", "agents.tool.env.MODE")
    assert outcome.restart_required == ()
    assert applied == [settings.config] and settings.config is not before
    assert heard == [nothing, outcome]
    assert logs == [
        {
            "event": "config_reloaded",
            "log_level": "info",
            "changed": [],
            "restart_required": [],
            "file": str(path),
        }
    ]


def test_an_invalid_file_changes_nothing_and_says_why(path: Path) -> None:
    settings = Settings(load(path), lambda: load(path))
    running = settings.config
    path.write_text(FILE + "\n[limits]\nmax_page_size = 0\n")
    with structlog.testing.capture_logs() as logs, pytest.raises(ConfigError) as refused:
        settings.reload()
    errors = [f"{path}: limits.max_page_size: expected an integer >= 1, got 0"]
    assert list(refused.value.errors) == errors
    assert settings.config is running
    assert logs == [
        {
            "event": "config_reload_failed",
            "log_level": "error",
            "errors": errors,
            "file": str(path),
        }
    ]


def test_a_check_of_the_running_process_can_refuse_a_reload(path: Path) -> None:
    settings = Settings(load(path), lambda: load(path))
    settings.add_check(lambda c: [] if c.server.api_keys else ["keys are needed here"])
    path.write_text(FILE.replace('api_keys = ["alpha", "beta"]\n', ""))
    with pytest.raises(ConfigError) as refused:
        settings.reload()
    assert refused.value.errors == ("keys are needed here",)
    assert settings.config.server.api_keys == ("alpha", "beta")


def test_without_a_loader_a_reload_finds_nothing_new(path: Path) -> None:
    config = load(path)
    settings = Settings(config)
    assert settings.reload().changed == ()
    assert settings.config is config
