"""The running configuration and its reload: what changed, what applies live, what waits for a
restart, and who must hear about it.

A reload reads the file again with the environment and flags of the start (the loader given to
:class:`Settings`), validates it fully, and keeps the running value of every setting that
cannot change while the process runs (:data:`LIVE` lists those that can; any other, including
one added later, waits for a restart until it is wired). Then every holder of a setting gets
the new configuration through the callback it registered. An invalid file changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import structlog

from aiosvc.config.tree import Config, ConfigError

log = structlog.get_logger(__name__)

REDACTED = "[redacted]"
#: The settings applied while running (dotted, as attrs fields): everything under these.
LIVE = frozenset(
    {
        "server.api_keys",
        "server.allowed_hosts",
        "server.allowed_origins",
        "server.log_level",
        "limits",
        "streams",
        "approvals",
        "cache",
        "agents",
        "projects",
        "peers",
        "mcp",
    }
)

Document = dict[str, Any]
Check = Callable[[Config], Iterable[str]]


@attrs.frozen
class Reloaded:
    """The outcome of a reload, as dotted keys spelled as in the file."""

    changed: tuple[str, ...]  # applied
    restart_required: tuple[str, ...]  # different in the file, not applied until a restart


class Settings:
    """The configuration in effect, replaced as a whole by each successful reload."""

    def __init__(self, config: Config, load: Callable[[], Config] | None = None) -> None:
        self.config = config
        #: Reads the configuration again as at start; without one there is no file to re-read.
        self._load = load or (lambda: config)
        self._holders: list[Callable[[Config], None]] = []
        self._checks: list[Check] = []
        self._listeners: list[Callable[[Reloaded], object]] = []
        #: Keys whose file value differs from the running one (found at the last reload).
        self.restart_required: tuple[str, ...] = ()

    def on_change(self, apply: Callable[[Config], None]) -> None:
        """Call ``apply`` with the new configuration whenever a reload changes something."""
        self._holders.append(apply)

    def add_check(self, check: Check) -> None:
        """Refuse a reload for which ``check`` yields problems (one line each), beyond the
        file's own validation: what only the running process can know."""
        self._checks.append(check)

    def on_reload(self, listener: Callable[[Reloaded], object]) -> None:
        """Call ``listener`` after every successful reload."""
        self._listeners.append(listener)

    def reload(self) -> Reloaded:
        """Read, validate and apply the configuration; :class:`ConfigError` changes nothing."""
        try:
            new = self._load()
            effective = keep_running(self.config, new)
            problems = [line for check in self._checks for line in check(effective)]
            if problems:
                raise ConfigError(*problems)
        except ConfigError as exc:
            log.error("config_reload_failed", errors=list(exc.errors), file=self._file())
            raise
        changed = tuple(diff(document(self.config), document(effective)))
        pending = tuple(diff(document(effective), document(new)))
        if changed:
            self.config = effective
            for apply in self._holders:
                apply(effective)
        self.restart_required = pending
        outcome = Reloaded(changed, pending)
        log.info(
            "config_reloaded",
            changed=list(changed),
            restart_required=list(pending),
            file=self._file(),
        )
        for listener in self._listeners:
            listener(outcome)
        return outcome

    def _file(self) -> str | None:
        source = self.config.source
        return None if source is None else os.fspath(source)


def keep_running(running: Any, new: Any, at: str = "") -> Any:
    """``new`` with the running value of every setting not under :data:`LIVE`."""
    if at in LIVE:
        return new
    if attrs.has(type(new)) and type(running) is type(new):
        fields = attrs.fields(type(new))
        values = {
            f.name: keep_running(getattr(running, f.name), getattr(new, f.name), _join(at, f.name))
            for f in fields
        }
        if all(values[f.name] is getattr(new, f.name) for f in fields):
            return new
        return attrs.evolve(new, **values)
    return running


def _join(at: str, name: str) -> str:
    return f"{at}.{name}" if at else name


def document(config: Config, *, redact: bool = False) -> Document:
    """The configuration as the file spells it (``[agents.NAME]``), paths as strings; with
    ``redact``, API keys and the values of agents' and MCP servers' ``env`` tables as
    ``"[redacted]"``."""
    tree: Document = _plain(config)
    tree.pop("source")
    agents = tree.pop("agents")
    tree["agents"] = {"default": agents["default"], **agents["backends"]}
    if redact:
        server = tree["server"]
        server["api_keys"] = [REDACTED for _ in server["api_keys"]]
        for name, agent in tree["agents"].items():
            if name != "default" and isinstance(agent.get("env"), dict):
                agent["env"] = dict.fromkeys(agent["env"], REDACTED)
        for server in tree["mcp"].values():
            server["env"] = dict.fromkeys(server["env"], REDACTED)
    return tree


def _plain(value: Any) -> Any:
    """attrs trees, mappings and tuples as JSON-ready dicts and lists."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def diff(old: Mapping[str, Any], new: Mapping[str, Any], at: str = "") -> list[str]:
    """The dotted keys whose values differ, sorted; a table present on one side only is one
    key (``agents.coder``), not one per setting in it."""
    keys: list[str] = []
    for name in sorted(old.keys() | new.keys()):
        key = _join(at, name)
        before, after = old.get(name, _ABSENT), new.get(name, _ABSENT)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            keys += diff(before, after, key)
        elif before != after:
            keys.append(key)
    return keys


_ABSENT = object()
