"""Loading the configuration: a TOML file, then environment variables, then command-line flags,
each checked strictly, every problem reported with its source and key."""

from __future__ import annotations

import os
import pathlib
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from aiosvc.config.tree import (
    AGENT_KINDS,
    COMMAND_LINE,
    ENVIRONMENT,
    NO_FILE,
    AgentConfig,
    Config,
    ConfigError,
    Key,
    McpServerConfig,
    PeerConfig,
    ProjectConfig,
    _dotted,
    _expected,
    _Problems,
)

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
    elif len(parent) == 2 and parent[0] in ("projects", "peers", "mcp"):
        tables = {"projects": ProjectConfig, "peers": PeerConfig, "mcp": McpServerConfig}
        table = tables[str(parent[0])]
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
    "AIOSVC_LOG_LEVEL": ("server", "log_level"),
}
FLAGS: dict[str, Key] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "db": ("storage", "db"),
    "log_format": ("log_format",),
    "log_level": ("server", "log_level"),
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
        f"log level: {server.log_level}",
    ]
    if config.projects:
        lines.append("projects: " + ", ".join(config.projects))
    if config.peers:
        lines.append("peers: " + ", ".join(config.peers))
    if config.mcp:
        lines.append("mcp servers: " + ", ".join(config.mcp))
    return "\n".join(lines)
