"""The configuration tree: frozen attrs classes whose fields carry their own checks."""

from __future__ import annotations

import math
import pathlib
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, cast

import attrs
import platformdirs

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: A host as an HTTP Host header names it, lower-cased: a bracketed IPv6 literal or a name
#: (letters, digits, dots, hyphens; an IPv4 address is one), then an optional numeric port.
HOST_RE = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::[0-9]{1,5})?")
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


def _hosts(v: tuple[str, ...]) -> str | None:
    bad = [h for h in v if not HOST_RE.fullmatch(h.lower())]
    if bad:
        return f"expected host names such as 'my-laptop.local' or '[fe80::1]', got {bad[0]!r}"
    return None


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
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), metadata=_check(_hosts))
    allowed_origins: tuple[str, ...] = ()
    computer: str = attrs.field(factory=socket.gethostname, metadata=_check(_filled))
    shutdown_timeout_s: float = attrs.field(default=10.0, metadata=_bounds(0.0))
    # A browser login (the dashboard's cookie) unused this long expires (7 days).
    login_ttl_s: float = attrs.field(default=7 * 86400.0, metadata=_bounds(0.0, above=True))
    # Lines below it are not written; request lines of /health and /metrics are at debug.
    log_level: Literal["debug", "info", "warning", "error"] = "info"


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
    # TCP connections open at once, in all and per client address (loopback excepted: every
    # local client is 127.0.0.1), counted when accepted: one over is answered 503 and closed
    # before anything reads it. The total is also kept below the process's descriptor limit.
    max_connections: int = attrs.field(default=4096, metadata=_bounds(1))
    max_connections_per_client: int = attrs.field(default=2048, metadata=_bounds(1))
    # The last places of max_connections (at most half of it) that long-lived requests
    # (streams, ?wait=true) cannot take: kept for /health and short requests.
    reserved_connections: int = attrs.field(default=128, metadata=_bounds(0))
    # Long-lived requests one credential (an API key) may hold open at once (429 past it).
    max_streams_per_credential: int = attrs.field(default=2048, metadata=_bounds(1))
    # Connections the kernel queues until the daemon accepts them (capped by the kernel's
    # net.core.somaxconn): a burst beyond it waits for TCP's retransmission, a second or more.
    listen_backlog: int = attrs.field(default=4096, metadata=_bounds(1, 65535))
    # Deadlines on a connection: a request's line and headers (from the connection's start,
    # or from the first byte of a later request), its declared body (from the end of its
    # headers; 408 past it), and the wait for a next request on an idle keep-alive connection.
    header_timeout_s: float = attrs.field(default=10.0, metadata=_bounds(0.0, above=True))
    body_timeout_s: float = attrs.field(default=30.0, metadata=_bounds(0.0, above=True))
    keepalive_timeout_s: float = attrs.field(default=15.0, metadata=_bounds(0.0, above=True))
    # A request line and headers together (431 past it): what a connection may hold in
    # memory before its request is complete.
    max_header_bytes: int = attrs.field(default=32 * 1024, metadata=_bounds(1024))
    # Writes (POST, PATCH, DELETE) per API key, or per client address without keys (429).
    write_rate_per_s: float = attrs.field(default=500.0, metadata=_bounds(0.0, above=True))
    write_burst: int = attrs.field(default=1000, metadata=_bounds(1))
    # WebSocket messages from one client (error frames past it, then close 1008).
    ws_messages_per_s: float = attrs.field(default=50.0, metadata=_bounds(0.0, above=True))
    ws_burst: int = attrs.field(default=100, metadata=_bounds(1))
    # Failed authentications per client address (429 with Retry-After past them, for every
    # request of that address that needs a key, until the bucket refills).
    auth_failures_per_s: float = attrs.field(default=1.0, metadata=_bounds(0.0, above=True))
    auth_failure_burst: int = attrs.field(default=20, metadata=_bounds(1))
    # A hook event whose data, as JSON, is larger than this is refused (413).
    max_event_bytes: int = attrs.field(default=256 * 1024, metadata=_bounds(1))


@attrs.frozen(kw_only=True)
class EventsConfig(_Checked):
    """The event bus's ring buffer: the resume window is the newest events within both."""

    buffer_size: int = attrs.field(default=10_000, metadata=_bounds(1))
    max_bytes: int = attrs.field(default=64 * 1024 * 1024, metadata=_bounds(1))


@attrs.frozen(kw_only=True)
class CacheConfig(_Checked):
    """The read cache: pages of history kept for readers, least recently read dropped."""

    max_bytes: int = attrs.field(default=64 * 1024 * 1024, metadata=_bounds(0))


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
    # Low-priority events are skipped for a client that is behind and whose pending bytes pass
    # high, until they fall below low; a high-priority event that would pass limit disconnects
    # the client; an event whose data is over half of limit is sent cut (web/truncate.py).
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


#: The argv element a command agent's prompt replaces (stdin is the default, and safer).
PROMPT_ARG = "{prompt}"


def _argv(v: tuple[str, ...]) -> str | None:
    if not v:
        return "expected a non-empty list of strings"
    for arg in v:
        # Substituted inside a longer string, the prompt would become shell code
        # (["sh", "-c", "echo {prompt}"]) or part of an option: only a whole element is allowed.
        if PROMPT_ARG in arg and arg != PROMPT_ARG:
            return (
                f"{PROMPT_ARG} must be a whole argument of its own, got {arg!r}; "
                "better still, leave it out and read the prompt from stdin"
            )
    return _filled(v)


@attrs.frozen(kw_only=True)
class CommandAgentConfig(_Checked):
    """An agent that runs a program per message."""

    kind: Literal["command"] = "command"
    argv: tuple[str, ...] = attrs.field(metadata=_check(_argv))
    cwd: str | None = attrs.field(default=None, metadata=_check(_filled))
    env: Mapping[str, str] = attrs.field(factory=dict)
    timeout_s: float | None = attrs.field(default=None, metadata=_bounds(0.0, above=True))
    # After SIGTERM, how long the program's process group has before SIGKILL.
    kill_grace_s: float = attrs.field(default=3.0, metadata=_bounds(0.0))
    # Report tool use and ask for approval over a socket (AIOSVC_PROTOCOL_FD).
    protocol: bool = False


@attrs.frozen(kw_only=True)
class OpenAIAgentConfig(_Checked):
    """An agent on an OpenAI-compatible chat-completions endpoint."""

    kind: Literal["openai"] = "openai"
    base_url: str = attrs.field(metadata=_check(_http_url))
    model: str = attrs.field(metadata=_check(_filled))
    api_key_env: str | None = attrs.field(default=None, metadata=_check(_filled))
    timeout_s: float = attrs.field(default=120.0, metadata=_bounds(0.0, above=True))
    # Sent first as a system message, unless the session has its own.
    system_prompt: str | None = None


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
    cache: CacheConfig = attrs.field(factory=CacheConfig)
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


def _dotted(key: Key) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            out += f".{text}" if out else text
    return out
