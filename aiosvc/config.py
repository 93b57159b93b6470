"""The configuration tree: a TOML file, then environment variables, then command-line flags."""

from __future__ import annotations

import math
import os
import pathlib
import re
import socket
import tomllib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, cast, get_args, get_origin

import attrs
import cattrs
import platformdirs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
NO_FILE, ENVIRONMENT, COMMAND_LINE = "<defaults>", "<environment>", "<command line>"
Key = tuple[str | int, ...]
Check = Callable[[Any], "str | None"]


class ConfigError(Exception):
    """The configuration is unusable; one line per problem, each naming its source and key."""

    def __init__(self, *errors: str) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def default_db_path() -> pathlib.Path:
    """The SQLite file in the user's state directory (not created here)."""
    return platformdirs.user_state_path("aiosvc") / "aiosvc.db"


# ---- value checks live in field metadata so that direct construction, the file and the
# environment share them, and so that one pass can report every bad field of an object.


class _Problems(ValueError):
    """One or more bad values, as (key below the object, message) pairs."""

    def __init__(self, problems: list[tuple[Key, str]]) -> None:
        super().__init__("; ".join(f"{_dotted(k)}: {m}" if k else m for k, m in problems))
        self.problems = problems


def _expected(wanted: str, value: object, at: Key = ()) -> _Problems:
    return _Problems([(at, f"expected {wanted}, got {_show(value)}")])


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return repr(value)
    names: dict[type, str] = {list: "an array", dict: "a table"}
    return names.get(type(value), f"a {type(value).__name__}")


def _check(fn: Check) -> dict[str, Check]:
    return {"check": fn}


def _bounds(low: float, high: float | None = None, *, above: bool = False) -> dict[str, Check]:
    what = "an integer" if isinstance(low, int) else "a number"
    wanted = f"{what} {'>' if above else '>='} {low:g}"
    if high is not None:
        wanted = f"{what} from {low} to {high}"

    def check(v: float | None) -> str | None:  # None passes: such a field is optional
        in_range = v is None or (
            math.isfinite(v) and (v > low if above else v >= low) and (high is None or v <= high)
        )
        return None if in_range else f"expected {wanted}, got {v!r}"

    return _check(check)


def _filled(v: str | tuple[str, ...] | None) -> str | None:
    if isinstance(v, str):
        return None if v.strip() else "expected a non-empty string"
    return "expected non-empty strings" if any(not s.strip() for s in v or ()) else None


def _http_url(v: str) -> str | None:
    ok = re.match(r"https?://[^/\s]+", v) is not None
    return None if ok else f"expected an http:// or https:// URL, got {v!r}"


def _names(v: Mapping[str, object], *within: str) -> Iterator[tuple[Key, str]]:
    for name in v:
        if not NAME_RE.fullmatch(name):
            yield (
                (*within, name),
                f"expected a name of 1 to 64 letters, digits, '-' or '_', got {name!r}",
            )


class _Checked:
    """Runs every field check after ``__init__`` and raises them all together."""

    __slots__ = ()

    def __attrs_post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise _Problems(problems)

    def _problems(self) -> Iterator[tuple[Key, str]]:
        for field in attrs.fields(cast("type[attrs.AttrsInstance]", type(self))):
            check = field.metadata.get("check")
            message = check(getattr(self, field.name)) if check else None
            if message:
                yield (field.name,), message


# ---- the tree


@attrs.frozen(kw_only=True)
class ServerConfig(_Checked):
    """Where and how the HTTP server listens."""

    host: str = attrs.field(default="127.0.0.1", metadata=_check(_filled))
    port: int = attrs.field(default=8420, metadata=_bounds(0, 65535))
    api_keys: tuple[str, ...] = attrs.field(default=(), metadata=_check(_filled))
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    computer: str = attrs.field(factory=socket.gethostname, metadata=_check(_filled))
    shutdown_timeout_s: float = attrs.field(default=10.0, metadata=_bounds(0.0))


@attrs.frozen(kw_only=True)
class StorageConfig(_Checked):
    """Where the database lives."""

    db: pathlib.Path = attrs.field(factory=default_db_path)


@attrs.frozen(kw_only=True)
class LimitsConfig(_Checked):
    """Size limits on requests, messages and pages."""

    max_body_bytes: int = attrs.field(default=1024 * 1024, metadata=_bounds(1))
    max_content_chars: int = attrs.field(default=262_144, metadata=_bounds(1))
    max_title_chars: int = attrs.field(default=200, metadata=_bounds(1))
    max_ws_frame_bytes: int = attrs.field(default=1024 * 1024, metadata=_bounds(1))
    max_page_size: int = attrs.field(default=500, metadata=_bounds(1))
    # An agent's reply longer than this fails (reply_too_large) with the text cut there.
    max_reply_chars: int = attrs.field(default=4 * 1024 * 1024, metadata=_bounds(1))
    # Requests and streams open at once, in all and per client address (503 / close 1013).
    max_connections: int = attrs.field(default=4096, metadata=_bounds(1))
    max_connections_per_client: int = attrs.field(default=2048, metadata=_bounds(1))
    # Writes (POST, PATCH, DELETE) per API key, or per client address without keys (429).
    write_rate_per_s: float = attrs.field(default=500.0, metadata=_bounds(0.0, above=True))
    write_burst: int = attrs.field(default=1000, metadata=_bounds(1))
    # WebSocket messages from one client (error frames past it, then close 1008).
    ws_messages_per_s: float = attrs.field(default=50.0, metadata=_bounds(0.0, above=True))
    ws_burst: int = attrs.field(default=100, metadata=_bounds(1))


@attrs.frozen(kw_only=True)
class EventsConfig(_Checked):
    """The event bus."""

    buffer_size: int = attrs.field(default=10_000, metadata=_bounds(1))


@attrs.frozen(kw_only=True)
class ApprovalsConfig(_Checked):
    """Tool-use approvals."""

    # An approval nobody answers in this time expires, and the reply goes on as denied.
    timeout_s: float = attrs.field(default=900.0, metadata=_bounds(0.0, above=True))


@attrs.frozen(kw_only=True)
class StreamsConfig(_Checked):
    """Live streams (WebSocket and SSE): heartbeats and each client's bounded outbox."""

    heartbeat_s: float = attrs.field(default=30.0, metadata=_bounds(0.0, above=True))
    sse_ping_s: float = attrs.field(default=15.0, metadata=_bounds(0.0, above=True))
    # Low-priority events are skipped for a client whose pending bytes pass high, until they
    # fall below low; a high-priority event that would pass limit disconnects the client.
    outbox_low_bytes: int = attrs.field(default=16 * 1024, metadata=_bounds(1))
    outbox_high_bytes: int = attrs.field(default=64 * 1024, metadata=_bounds(1))
    outbox_limit_bytes: int = attrs.field(default=1024 * 1024, metadata=_bounds(1))

    def _problems(self) -> Iterator[tuple[Key, str]]:
        yield from super()._problems()
        if not self.outbox_low_bytes < self.outbox_high_bytes < self.outbox_limit_bytes:
            yield (
                ("outbox_high_bytes",),
                "expected outbox_low_bytes < outbox_high_bytes < outbox_limit_bytes",
            )


@attrs.frozen(kw_only=True)
class EchoAgentConfig(_Checked):
    """The built-in agent that streams the user's text back."""

    kind: Literal["echo"] = "echo"
    delay_ms: int = attrs.field(default=0, metadata=_bounds(0))


@attrs.frozen(kw_only=True)
class CommandAgentConfig(_Checked):
    """An agent that runs a program per message."""

    kind: Literal["command"] = "command"
    argv: tuple[str, ...] = attrs.field(
        metadata=_check(lambda v: _filled(v) if v else "expected a non-empty list of strings")
    )
    cwd: str | None = attrs.field(default=None, metadata=_check(_filled))
    env: Mapping[str, str] = attrs.field(factory=dict)
    timeout_s: float | None = attrs.field(default=None, metadata=_bounds(0.0, above=True))
    # After SIGTERM, how long the program's process group has before SIGKILL.
    kill_grace_s: float = attrs.field(default=3.0, metadata=_bounds(0.0))


@attrs.frozen(kw_only=True)
class OpenAIAgentConfig(_Checked):
    """An agent on an OpenAI-compatible chat-completions endpoint."""

    kind: Literal["openai"] = "openai"
    base_url: str = attrs.field(metadata=_check(_http_url))
    model: str = attrs.field(metadata=_check(_filled))
    api_key_env: str | None = attrs.field(default=None, metadata=_check(_filled))
    timeout_s: float = attrs.field(default=120.0, metadata=_bounds(0.0, above=True))


AgentConfig = EchoAgentConfig | CommandAgentConfig | OpenAIAgentConfig
AGENT_KINDS: dict[str, type[AgentConfig]] = {
    "command": CommandAgentConfig,
    "echo": EchoAgentConfig,
    "openai": OpenAIAgentConfig,
}


def _default_backends() -> dict[str, AgentConfig]:
    return {"echo": EchoAgentConfig()}


@attrs.frozen(kw_only=True)
class AgentsConfig(_Checked):
    """The configured agents by name, and which one a new session gets."""

    default: str = "echo"
    backends: Mapping[str, AgentConfig] = attrs.field(factory=_default_backends)

    def _problems(self) -> Iterator[tuple[Key, str]]:
        yield from _names(self.backends)  # the file spells them agents.NAME, not backends
        if self.default not in self.backends:
            names = ", ".join(self.backends) or "none"
            yield ("default",), f"expected a configured agent ({names}), got {self.default!r}"


@attrs.frozen(kw_only=True)
class ProjectConfig(_Checked):
    """A project directory (not checked for existence when loading)."""

    path: pathlib.Path


@attrs.frozen(kw_only=True)
class PeerConfig(_Checked):
    """Another aiosvc instance."""

    url: str = attrs.field(metadata=_check(_http_url))
    api_key_env: str | None = attrs.field(default=None, metadata=_check(_filled))


@attrs.frozen(kw_only=True)
class Config(_Checked):
    """The whole configuration."""

    server: ServerConfig = attrs.field(factory=ServerConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    events: EventsConfig = attrs.field(factory=EventsConfig)
    streams: StreamsConfig = attrs.field(factory=StreamsConfig)
    approvals: ApprovalsConfig = attrs.field(factory=ApprovalsConfig)
    agents: AgentsConfig = attrs.field(factory=AgentsConfig)
    projects: Mapping[str, ProjectConfig] = attrs.field(factory=dict)
    peers: Mapping[str, PeerConfig] = attrs.field(factory=dict)
    log_format: Literal["json", "console"] | None = None
    source: pathlib.Path | None = None

    def _problems(self) -> Iterator[tuple[Key, str]]:
        yield from super()._problems()
        yield from _names(self.projects, "projects")
        yield from _names(self.peers, "peers")


# ---- structuring: strict hooks, because cattrs would otherwise turn "7" into 7 and 5 into "5"


def _origin(t: Any) -> object:
    return get_origin(t)


def _describe(t: Any) -> str:
    if _origin(t) is tuple:
        return "a list of strings"
    if _origin(t) is Literal:
        return "one of: " + ", ".join(sorted(map(str, get_args(t))))
    simple: dict[Any, str] = {str: "a string", int: "an integer", float: "a number"}
    return simple.get(t, "a path" if t is pathlib.Path else "a table")


def _strict(
    convert: Callable[[Any], Any], wanted: str, ok: Callable[[Any], bool]
) -> Callable[[object, Any], Any]:
    def hook(value: object, _: Any) -> Any:
        if not ok(value):
            raise _expected(wanted, value)
        return convert(value)

    return hook


def _number(t: type | tuple[type, ...]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, t) and not isinstance(v, bool)  # True is an int too


def _noted(exc: Exception, note: str) -> Exception:
    exc.add_note(note)
    return exc


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(str, _strict(str, "a string", lambda v: isinstance(v, str)))
    conv.register_structure_hook(int, _strict(int, "an integer", _number(int)))
    conv.register_structure_hook(float, _strict(float, "a number", _number((int, float))))
    conv.register_structure_hook(
        bool, _strict(bool, "true or false", lambda v: isinstance(v, bool))
    )
    to_path = lambda v: pathlib.Path(v).expanduser()  # noqa: E731
    conv.register_structure_hook(
        pathlib.Path, _strict(to_path, "a path", lambda v: isinstance(v, str) and v != "")
    )

    def literal(t: Any) -> Callable[[object, Any], Any]:
        allowed = get_args(t)
        ok = lambda v: any(type(v) is type(a) and v == a for a in allowed)  # noqa: E731
        return _strict(lambda v: v, _describe(t), ok)

    def collection(t: Any) -> Callable[[object, Any], Any]:
        # TOML arrays and tables, strictly: a string is not a list of characters
        is_map = _origin(t) is Mapping
        item = get_args(t)[-1 if is_map else 0]

        def hook(value: object, _: Any) -> Any:
            if not isinstance(value, Mapping if is_map else list | tuple):
                raise _expected(_describe(t), value)
            pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
            result, errors = {}, []
            for k, v in pairs:
                try:
                    result[k] = conv.structure(v, item)
                except Exception as exc:
                    errors.append(_noted(exc, IterableValidationNote(f"@ {k!r}", k, item)))
            if errors:
                raise IterableValidationError(f"While structuring {t}", errors, t)
            return result if is_map else tuple(result.values())

        return hook

    def table(cls: Any) -> Callable[[object, Any], Any]:
        inner = (
            make_dict_structure_fn(cls, conv, source=override(omit=True))  # a file can't set it
            if cls is Config
            else make_dict_structure_fn(cls, conv)
        )

        def hook(value: object, _: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _expected("a table", value)
            return inner(value, cls)

        return hook

    def agent(value: object, _: Any) -> AgentConfig:
        if not isinstance(value, Mapping):
            raise _expected("a table", value)
        wanted = "one of: " + ", ".join(sorted(AGENT_KINDS))
        kind = value.get("kind")
        if "kind" not in value:
            raise _Problems([(("kind",), f"missing required key, expected {wanted}")])
        if not isinstance(kind, str):
            raise _expected(wanted, kind, ("kind",))
        if kind not in AGENT_KINDS:
            raise _Problems([(("kind",), f"unknown agent kind {kind!r}, expected {wanted}")])
        result: AgentConfig = conv.structure(value, AGENT_KINDS[kind])
        return result

    conv.register_structure_hook_factory(lambda t: _origin(t) is Literal, literal)
    conv.register_structure_hook_factory(lambda t: _origin(t) in (tuple, Mapping), collection)
    conv.register_structure_hook_factory(attrs.has, table)
    conv.register_structure_hook_func(lambda t: t == AgentConfig, agent)
    return conv


_converter = _make_converter()


def _dotted(key: Key) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{text}" if out else text
    return out


def _walk(exc: BaseException, key: Key, t: Any) -> Iterator[tuple[Key, str | None]]:
    """Yield (key, message) per problem; a None message means an unknown key."""
    if isinstance(exc, BaseValidationError):
        for sub in exc.exceptions:
            note = next(
                (n for n in reversed(getattr(sub, "__notes__", ())) if hasattr(n, "type")), None
            )
            if isinstance(note, AttributeValidationNote):
                # the file spells agents.backends.NAME as agents.NAME (see _read_file)
                skip = key == ("agents",) and note.name == "backends"
                yield from _walk(sub, key if skip else (*key, note.name), note.type)
            elif isinstance(note, IterableValidationNote):
                yield from _walk(sub, (*key, note.index), note.type)
            else:
                yield from _walk(sub, key, t)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for name in sorted(exc.extra_fields):
            yield (*key, name), None
    elif isinstance(exc, _Problems):
        for sub_key, message in exc.problems:
            yield (*key, *sub_key), message
    elif isinstance(exc, KeyError):
        yield key, f"missing required key, expected {_describe(t)}"
    else:
        yield key, f"invalid value ({exc})"


def _expected_keys(raw: Mapping[str, Any], key: Key) -> str:
    """What the table holding an unknown key accepts, as ``, expected one of: ...``."""
    parent = key[:-1]
    if parent == ("agents",):
        return ", expected 'default' or an agent's table [agents.NAME]"
    table: Any = None
    if len(parent) == 2 and parent[0] == "agents":
        spec = raw.get("agents", {}).get("backends", {}).get(parent[1], {})
        kind = spec.get("kind") if isinstance(spec, dict) else None
        table = AGENT_KINDS.get(kind) if isinstance(kind, str) else None
    elif len(parent) == 2 and parent[0] in ("projects", "peers"):
        table = ProjectConfig if parent[0] == "projects" else PeerConfig
    elif len(parent) <= 1:
        table = Config
        for part in parent:
            found = {f.name: f.type for f in attrs.fields(table)}.get(part)
            table = found if isinstance(found, type) and attrs.has(found) else None
    if table is None:
        return ""
    names = sorted(f.name for f in attrs.fields(table) if f.name != "source")
    return f", expected one of: {', '.join(names)}"


def _structure(
    raw: Mapping[str, Any], source: str, labels: Mapping[Key, str]
) -> tuple[Config | None, list[str]]:
    """Structure one layer; on failure, one line per problem, keys named as in ``labels``."""
    try:
        return _converter.structure(raw, Config), []
    except Exception as exc:
        lines = []
        for key, message in _walk(exc, (), Config):
            label = next((v for k, v in labels.items() if key[: len(k)] == k), _dotted(key))
            if message is None:
                lines.append(f"{source}: unknown key {_dotted(key)!r}{_expected_keys(raw, key)}")
            else:
                lines.append(f"{source}: {label}: {message}")
        return None, lines


# ---- loading

ENV_KEYS: dict[str, Key] = {
    "AIOSVC_HOST": ("server", "host"),
    "AIOSVC_PORT": ("server", "port"),
    "AIOSVC_DB": ("storage", "db"),
    "AIOSVC_API_KEYS": ("server", "api_keys"),
    "AIOSVC_LOG_FORMAT": ("log_format",),
}
FLAGS: dict[str, Key] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "db": ("storage", "db"),
    "log_format": ("log_format",),
}


def _read_file(path: pathlib.Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    # relative paths in a file mean "next to this file", whatever the daemon's cwd
    projects = data.get("projects")
    tables = [(data.get("storage"), "db")]
    tables += [(p, "path") for p in projects.values()] if isinstance(projects, dict) else []
    for table, key in tables:
        if isinstance(table, dict) and isinstance(table.get(key), str) and table[key]:
            table[key] = str(path.parent / pathlib.Path(table[key]).expanduser())
    agents = data.get("agents")
    if isinstance(agents, dict):
        # [agents] mixes `default` with one table per agent; the built-in echo is always there
        named = [k for k, v in agents.items() if isinstance(v, dict) or k == "backends"]
        agents["backends"] = {"echo": {"kind": "echo"}} | {k: agents.pop(k) for k in named}
    return data


def _put(raw: dict[str, Any], key: Key, value: object) -> None:
    table = raw.setdefault(str(key[0]), {}) if len(key) > 1 else raw
    table[str(key[-1])] = value


Layer = tuple[dict[str, Any], dict[Key, str], list[str]]  # raw values, their labels, errors


def _env_layer(env: Mapping[str, str]) -> Layer:
    raw: dict[str, Any] = {}
    labels: dict[Key, str] = {}
    errors = []
    for name, key in ENV_KEYS.items():
        text = env.get(name, "").strip()
        value: object = text
        if name == "AIOSVC_PORT" and not re.fullmatch(r"[0-9]*", text):
            errors.append(f"{ENVIRONMENT}: {name}: expected an integer, got {text!r}")
            continue
        if name == "AIOSVC_PORT" and text:
            value = int(text)
        elif name == "AIOSVC_API_KEYS":
            value = [k.strip() for k in text.split(",") if k.strip()]
        if text and value != []:  # blank is unset: it must not silently drop the file's keys
            _put(raw, key, value)
            labels[key] = name
    return raw, labels, errors


def _cli_layer(overrides: Mapping[str, object]) -> Layer:
    raw: dict[str, Any] = {}
    labels: dict[Key, str] = {}
    errors = []
    for name, value in overrides.items():
        if name not in FLAGS:
            errors.append(f"{COMMAND_LINE}: unknown setting {name!r}")
        elif value is not None:
            _put(raw, FLAGS[name], os.fspath(value) if isinstance(value, os.PathLike) else value)
            labels[FLAGS[name]] = "--" + name.replace("_", "-")
    return raw, labels, errors


def load_config(
    path: pathlib.Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Read the file (``path`` or $AIOSVC_CONFIG), then apply the environment and ``overrides``."""
    env = os.environ if env is None else env
    if path is None and env.get("AIOSVC_CONFIG", "").strip():
        path = pathlib.Path(env["AIOSVC_CONFIG"].strip())
    path = None if path is None else pathlib.Path(path)
    source = str(path or NO_FILE)
    raw = {} if path is None else _read_file(path)
    # each layer is checked on its own, so that every message names its real source and a bad
    # file is reported even where the environment happens to override the bad value
    errors = _structure(raw, source, {})[1]
    for (layer, labels, layer_errors), name in (
        (_env_layer(env), ENVIRONMENT),
        (_cli_layer(overrides or {}), COMMAND_LINE),
    ):
        errors += layer_errors + _structure(layer, name, labels)[1]
        for section, value in layer.items():
            if isinstance(value, dict) and isinstance(raw.get(section), dict):
                raw[section] = raw[section] | value
            else:
                raw[section] = value
    config, more = (None, []) if errors else _structure(raw, source, {})
    if config is None:
        raise ConfigError(*errors, *more)
    return attrs.evolve(config, source=path)


def describe_config(config: Config) -> str:
    """A short summary for ``aiosvc check-config``; never shows the API keys themselves."""
    server = config.server
    host = f"[{server.host}]" if ":" in server.host else server.host
    keys = len(server.api_keys)
    agents = ", ".join(
        f"{name} ({agent.kind}{', default' if name == config.agents.default else ''})"
        for name, agent in config.agents.backends.items()
    )
    lines = [
        f"config OK ({config.source or 'no file, defaults'})",
        f"listening on http://{host}:{server.port} as computer {server.computer!r}",
        f"api keys: {keys} configured" if keys else "api keys: none (loopback only)",
        f"database: {config.storage.db}",
        f"agents: {agents}",
        f"log format: {config.log_format or 'auto (json unless stderr is a terminal)'}",
    ]
    if config.projects:
        lines.append("projects: " + ", ".join(config.projects))
    if config.peers:
        lines.append("peers: " + ", ".join(config.peers))
    return "\n".join(lines)
