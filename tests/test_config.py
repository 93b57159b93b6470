"""Loading the configuration: defaults, the file, precedence, and the exact error messages."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aiosvc.config import (
    AgentsConfig,
    CacheConfig,
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
    default_db_path,
    describe_config,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "aiosvc.example.toml"

SERVER_KEYS = (
    "expected one of: allowed_hosts, allowed_origins, api_keys, computer, host, log_level, "
    "login_ttl_s, port, shutdown_timeout_s"
)
TOP_KEYS = (
    "expected one of: agents, approvals, cache, events, limits, log_format, peers, projects, "
    "server, storage, streams"
)
AGENT_TABLES = "expected 'default' or an agent's table [agents.NAME]"


def write(tmp_path: Path, text: str) -> Path:
    """Write ``text`` as the test's config file and return its path."""
    path = tmp_path / "aiosvc.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(
    tmp_path: Path,
    text: str,
    env: dict[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> list[str]:
    """The error lines that loading ``text`` produces, with the file shown as FILE."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, overrides=overrides)
    assert str(info.value) == "\n".join(info.value.errors)
    return [line.replace(str(path), "FILE") for line in info.value.errors]


# ---- defaults and the happy paths


def test_defaults_without_a_file() -> None:
    config = load_config(None, env={})
    assert config.server == ServerConfig(
        host="127.0.0.1", port=8420, computer=socket.gethostname(), shutdown_timeout_s=10.0
    )
    assert config.server.api_keys == config.server.allowed_hosts == ()
    assert config.storage.db == default_db_path()
    assert default_db_path().name == "aiosvc.db"
    assert config.limits == LimitsConfig(
        max_body_bytes=1024 * 1024,
        max_content_chars=262_144,
        max_title_chars=200,
        max_ws_frame_bytes=1024 * 1024,
        max_page_size=500,
    )
    assert config.events.buffer_size == 10_000
    assert config.agents == AgentsConfig(default="echo", backends={"echo": EchoAgentConfig()})
    assert config.projects == {}
    assert config.peers == {}
    assert config.log_format is None
    assert config.source is None
    assert config == Config(server=config.server)


def test_empty_file_gives_defaults_and_records_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path, env={})
    assert config.source == path
    assert config == Config(server=config.server, source=path)


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n")
    config = load_config(env={"AIOSVC_CONFIG": str(path)})
    assert config.server.port == 9000
    assert config.source == path


def test_path_argument_beats_aiosvc_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n")
    config = load_config(path, env={"AIOSVC_CONFIG": str(tmp_path / "other.toml")})
    assert config.server.port == 9000


def test_full_file_round_trip(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
log_format = "console"

[server]
host = "0.0.0.0"
port = 9001
api_keys = ["k1", "k2"]
allowed_hosts = ["box.lan"]
allowed_origins = ["http://box.lan:3000"]
computer = "box"
shutdown_timeout_s = 2.5

[storage]
db = "/srv/aiosvc/data.db"

[limits]
max_body_bytes = 10
max_content_chars = 11
max_title_chars = 12
max_ws_frame_bytes = 13
max_page_size = 14

[events]
buffer_size = 15

[agents]
default = "shell"

[agents.echo]
kind = "echo"
delay_ms = 5

[agents.shell]
kind = "command"
argv = ["agent", "{prompt}"]
cwd = "/srv"
env = { A = "1" }
timeout_s = 30

[agents.llm]
kind = "openai"
base_url = "https://llm.example/v1"
model = "m"
api_key_env = "LLM_KEY"
timeout_s = 60.5

[projects.site]
path = "/src/site"

[peers.desk]
url = "http://192.0.2.10:8420"
api_key_env = "DESK_KEY"
""",
    )
    assert load_config(path, env={}) == Config(
        server=ServerConfig(
            host="0.0.0.0",
            port=9001,
            api_keys=("k1", "k2"),
            allowed_hosts=("box.lan",),
            allowed_origins=("http://box.lan:3000",),
            computer="box",
            shutdown_timeout_s=2.5,
        ),
        storage=StorageConfig(db=Path("/srv/aiosvc/data.db")),
        limits=LimitsConfig(
            max_body_bytes=10,
            max_content_chars=11,
            max_title_chars=12,
            max_ws_frame_bytes=13,
            max_page_size=14,
        ),
        events=EventsConfig(buffer_size=15),
        agents=AgentsConfig(
            default="shell",
            backends={
                "echo": EchoAgentConfig(delay_ms=5),
                "shell": CommandAgentConfig(
                    argv=("agent", "{prompt}"), cwd="/srv", env={"A": "1"}, timeout_s=30.0
                ),
                "llm": OpenAIAgentConfig(
                    base_url="https://llm.example/v1",
                    model="m",
                    api_key_env="LLM_KEY",
                    timeout_s=60.5,
                ),
            },
        ),
        projects={"site": ProjectConfig(path=Path("/src/site"))},
        peers={"desk": PeerConfig(url="http://192.0.2.10:8420", api_key_env="DESK_KEY")},
        log_format="console",
        source=path,
    )


def test_floats_accept_integers(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nshutdown_timeout_s = 3\n"), env={})
    assert config.server.shutdown_timeout_s == 3.0
    assert isinstance(config.server.shutdown_timeout_s, float)


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.server.computer == "my-laptop"
    assert config.storage.db == Path("/var/lib/aiosvc/aiosvc.db")
    assert {name: agent.kind for name, agent in config.agents.backends.items()} == {
        "echo": "echo",
        "slow-echo": "echo",
        "shell": "command",
        "local-llm": "openai",
    }
    assert config.agents.backends["slow-echo"] == EchoAgentConfig(delay_ms=200)
    assert config.agents.backends["shell"] == CommandAgentConfig(argv=("my-agent", "--stdin"))
    assert config.projects == {"website": ProjectConfig(path=Path("/home/me/src/website"))}
    assert config.peers["desktop"].api_key_env == "DESKTOP_KEY"
    # the example documents every default; apart from what it sets on purpose, they match
    assert config.limits == LimitsConfig()
    assert config.events == EventsConfig()
    assert config.cache == CacheConfig()
    assert config.agents.backends["echo"] == EchoAgentConfig()


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    text = '[storage]\ndb = "data/a.db"\n[projects.p]\npath = "src/p"\n'
    config = load_config(write(tmp_path, text), env={})
    assert config.storage.db == tmp_path / "data" / "a.db"
    assert config.projects["p"].path == tmp_path / "src" / "p"


def test_project_paths_are_not_checked(tmp_path: Path) -> None:
    text = '[projects.ghost]\npath = "/does/not/exist"\n'
    assert load_config(write(tmp_path, text), env={}).projects["ghost"].path.as_posix() == (
        "/does/not/exist"
    )


# ---- agents


def test_echo_is_always_present(tmp_path: Path) -> None:
    text = '[agents]\ndefault = "shell"\n[agents.shell]\nkind = "command"\nargv = ["a"]\n'
    config = load_config(write(tmp_path, text), env={})
    assert list(config.agents.backends) == ["echo", "shell"]
    assert config.agents.backends["echo"] == EchoAgentConfig()
    assert config.agents.default == "shell"


def test_file_may_redefine_echo(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[agents.echo]\nkind = "echo"\ndelay_ms = 50\n'), env={})
    assert config.agents.backends == {"echo": EchoAgentConfig(delay_ms=50)}


def test_default_agent_must_exist(tmp_path: Path) -> None:
    assert errors_of(tmp_path, '[agents]\ndefault = "nope"\n') == [
        "FILE: agents.default: expected a configured agent (echo), got 'nope'"
    ]


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError, match=r"default: expected a configured agent \(echo\)"):
        AgentsConfig(default="missing")
    with pytest.raises(ValueError, match=r"port: expected an integer from 0 to 65535, got -1"):
        ServerConfig(port=-1)


# ---- precedence: file < environment < command line


def test_environment_beats_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nhost = "10.0.0.1"\nport = 1\napi_keys = ["f"]\n[storage]\ndb = "/f.db"\n',
    )
    env = {
        "AIOSVC_HOST": "10.0.0.2",
        "AIOSVC_PORT": "2",
        "AIOSVC_DB": "/e.db",
        "AIOSVC_API_KEYS": " a, ,b ,",
        "AIOSVC_LOG_FORMAT": "console",
    }
    config = load_config(path, env=env)
    assert config.server.host == "10.0.0.2"
    assert config.server.port == 2
    assert config.server.api_keys == ("a", "b")
    assert config.storage.db == Path("/e.db")
    assert config.log_format == "console"


def test_overrides_beat_environment(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_format = "json"\n[server]\nhost = "10.0.0.1"\nport = 1\n')
    env = {"AIOSVC_HOST": "10.0.0.2", "AIOSVC_PORT": "2", "AIOSVC_DB": "/e.db"}
    overrides: dict[str, object] = {"host": "10.0.0.3", "port": 3, "db": "/o.db"}
    config = load_config(path, env=env, overrides={**overrides, "log_format": "console"})
    assert config.server.host == "10.0.0.3"
    assert config.server.port == 3
    assert config.storage.db == Path("/o.db")
    assert config.log_format == "console"


def test_none_overrides_and_blank_variables_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 1\napi_keys = ["f"]\n')
    env = {"AIOSVC_PORT": "2", "AIOSVC_HOST": " ", "AIOSVC_API_KEYS": " , "}
    config = load_config(path, env=env, overrides={"port": None, "host": None, "db": None})
    assert config.server.port == 2
    assert config.server.host == "127.0.0.1"
    assert config.server.api_keys == ("f",)  # a blank variable does not drop the file's keys


def test_environment_without_a_file() -> None:
    config = load_config(None, env={"AIOSVC_PORT": "0", "AIOSVC_DB": "x.db"})
    assert config.server.port == 0
    assert config.storage.db == Path("x.db")
    assert config.source is None


def test_override_db_may_be_a_path(tmp_path: Path) -> None:
    config = load_config(None, env={}, overrides={"db": tmp_path / "o.db"})
    assert config.storage.db == tmp_path / "o.db"


# ---- errors: the file


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: file not found"


def test_missing_file_named_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(env={"AIOSVC_CONFIG": str(path)})
    assert str(info.value) == f"{path}: file not found"


def test_invalid_toml_gives_line_and_column(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "[server]\nport = \n") == [
        "FILE: invalid TOML: Invalid value (at line 2, column 8)"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[server]\nprot = 1\n",
            f"FILE: unknown key 'server.prot', {SERVER_KEYS}",
        ),
        (
            "colour = 1\n",
            f"FILE: unknown key 'colour', {TOP_KEYS}",
        ),
        (
            'source = "x"\n',
            f"FILE: unknown key 'source', {TOP_KEYS}",
        ),
        (
            '[agents]\ndefualt = "echo"\n',
            f"FILE: unknown key 'agents.defualt', {AGENT_TABLES}",
        ),
        (
            '[agents.e]\nkind = "echo"\nargv = ["a"]\n',
            "FILE: unknown key 'agents.e.argv', expected one of: delay_ms, kind",
        ),
        (
            '[projects.p]\npath = "/p"\nurl = "x"\n',
            "FILE: unknown key 'projects.p.url', expected one of: path",
        ),
        ('[server]\nport = "80"\n', "FILE: server.port: expected an integer, got '80'"),
        ("[server]\nport = true\n", "FILE: server.port: expected an integer, got true"),
        ("[server]\nport = 80.0\n", "FILE: server.port: expected an integer, got 80.0"),
        ("[server]\nhost = 5\n", "FILE: server.host: expected a string, got 5"),
        (
            '[server]\nshutdown_timeout_s = "1"\n',
            "FILE: server.shutdown_timeout_s: expected a number, got '1'",
        ),
        (
            '[server]\napi_keys = "k"\n',
            "FILE: server.api_keys: expected a list of strings, got 'k'",
        ),
        (
            '[server]\nallowed_hosts = ["a", 1]\n',
            "FILE: server.allowed_hosts[1]: expected a string, got 1",
        ),
        ("server = 1\n", "FILE: server: expected a table, got 1"),
        ("[storage]\ndb = 1\n", "FILE: storage.db: expected a path, got 1"),
        ('log_format = "xml"\n', "FILE: log_format: expected one of: console, json, got 'xml'"),
        (
            "[server]\nport = 70000\n",
            "FILE: server.port: expected an integer from 0 to 65535, got 70000",
        ),
        (
            "[limits]\nmax_page_size = 0\n",
            "FILE: limits.max_page_size: expected an integer >= 1, got 0",
        ),
        (
            "[events]\nbuffer_size = -5\n",
            "FILE: events.buffer_size: expected an integer >= 1, got -5",
        ),
        (
            "[server]\nshutdown_timeout_s = -1\n",
            "FILE: server.shutdown_timeout_s: expected a number >= 0, got -1.0",
        ),
        (
            "[server]\nshutdown_timeout_s = nan\n",
            "FILE: server.shutdown_timeout_s: expected a number >= 0, got nan",
        ),
        ('[server]\napi_keys = [" "]\n', "FILE: server.api_keys: expected non-empty strings"),
        ('[server]\nhost = ""\n', "FILE: server.host: expected a non-empty string"),
    ],
)
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    assert errors_of(tmp_path, text) == [message]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[agents.x]\nkind = "foo"\n',
            "FILE: agents.x.kind: unknown agent kind 'foo', expected one of: command, echo, openai",
        ),
        (
            "[agents.x]\ndelay_ms = 1\n",
            "FILE: agents.x.kind: missing required key, expected one of: command, echo, openai",
        ),
        (
            "[agents.x]\nkind = 1\n",
            "FILE: agents.x.kind: expected one of: command, echo, openai, got 1",
        ),
        (
            '[agents.shell]\nkind = "command"\n',
            "FILE: agents.shell.argv: missing required key, expected a list of strings",
        ),
        (
            '[agents.shell]\nkind = "command"\nargv = []\n',
            "FILE: agents.shell.argv: expected a non-empty list of strings",
        ),
        (
            '[agents.shell]\nkind = "command"\nargv = ["a", 5]\n',
            "FILE: agents.shell.argv[1]: expected a string, got 5",
        ),
        (
            '[agents.shell]\nkind = "command"\nargv = ["a"]\nenv = { A = 1 }\n',
            "FILE: agents.shell.env.A: expected a string, got 1",
        ),
        (
            '[agents.shell]\nkind = "command"\nargv = ["a"]\ntimeout_s = 0\n',
            "FILE: agents.shell.timeout_s: expected a number > 0, got 0.0",
        ),
        (
            '[agents.llm]\nkind = "openai"\nmodel = "m"\n',
            "FILE: agents.llm.base_url: missing required key, expected a string",
        ),
        (
            '[agents.llm]\nkind = "openai"\nmodel = "m"\nbase_url = "ftp://x"\n',
            "FILE: agents.llm.base_url: expected an http:// or https:// URL, got 'ftp://x'",
        ),
        (
            '[agents.e]\nkind = "echo"\ndelay_ms = -1\n',
            "FILE: agents.e.delay_ms: expected an integer >= 0, got -1",
        ),
        (
            '[agents]\nshell = "x"\n',
            f"FILE: unknown key 'agents.shell', {AGENT_TABLES}",
        ),
        ("agents = 1\n", "FILE: agents: expected a table, got 1"),
        ("[agents]\ndefault = 1\n", "FILE: agents.default: expected a string, got 1"),
        (
            '[agents."a b"]\nkind = "echo"\n',
            "FILE: agents.\"a b\": expected a name of 1 to 64 letters, digits, '-' or '_', "
            "got 'a b'",
        ),
        (
            f'[agents.{"x" * 65}]\nkind = "echo"\n',
            f"FILE: agents.{'x' * 65}: expected a name of 1 to 64 letters, digits, '-' or '_', "
            f"got '{'x' * 65}'",
        ),
        ("[projects.p]\n", "FILE: projects.p.path: missing required key, expected a path"),
        ("[projects]\np = 1\n", "FILE: projects.p: expected a table, got 1"),
        (
            '[projects."p.q"]\npath = "/p"\n',
            "FILE: projects.\"p.q\": expected a name of 1 to 64 letters, digits, '-' or '_', "
            "got 'p.q'",
        ),
        ("[peers.d]\n", "FILE: peers.d.url: missing required key, expected a string"),
        (
            '[peers.d]\nurl = "x"\n',
            "FILE: peers.d.url: expected an http:// or https:// URL, got 'x'",
        ),
    ],
)
def test_agent_project_and_peer_errors(tmp_path: Path, text: str, message: str) -> None:
    assert errors_of(tmp_path, text) == [message]


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    text = """
[server]
prot = 1
port = "80"
[limits]
max_page_size = 0
max_title_chars = 0
[agents.x]
kind = "foo"
[agents.shell]
kind = "command"
"""
    assert errors_of(tmp_path, text) == [
        "FILE: server.port: expected an integer, got '80'",
        f"FILE: unknown key 'server.prot', {SERVER_KEYS}",
        "FILE: limits.max_title_chars: expected an integer >= 1, got 0",
        "FILE: limits.max_page_size: expected an integer >= 1, got 0",
        "FILE: agents.x.kind: unknown agent kind 'foo', expected one of: command, echo, openai",
        "FILE: agents.shell.argv: missing required key, expected a list of strings",
    ]


# ---- errors: environment and command line


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIOSVC_PORT": "80a"}, "<environment>: AIOSVC_PORT: expected an integer, got '80a'"),
        ({"AIOSVC_PORT": "-1"}, "<environment>: AIOSVC_PORT: expected an integer, got '-1'"),
        (
            {"AIOSVC_PORT": "70000"},
            "<environment>: AIOSVC_PORT: expected an integer from 0 to 65535, got 70000",
        ),
        (
            {"AIOSVC_LOG_FORMAT": "xml"},
            "<environment>: AIOSVC_LOG_FORMAT: expected one of: console, json, got 'xml'",
        ),
    ],
)
def test_environment_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env=env)
    assert info.value.errors == (message,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, "<command line>: --port: expected an integer from 0 to 65535, got 70000"),
        ({"port": "80"}, "<command line>: --port: expected an integer, got '80'"),
        ({"host": ""}, "<command line>: --host: expected a non-empty string"),
        (
            {"log_format": "xml"},
            "<command line>: --log-format: expected one of: console, json, got 'xml'",
        ),
        ({"colour": "red"}, "<command line>: unknown setting 'colour'"),
    ],
)
def test_override_errors_name_the_flag(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides=overrides)
    assert info.value.errors == (message,)


def test_errors_from_every_source_together(tmp_path: Path) -> None:
    # the file's bad port is reported even though the environment overrides it
    lines = errors_of(
        tmp_path,
        '[server]\nport = "80"\n',
        env={"AIOSVC_PORT": "x"},
        overrides={"port": 70000},
    )
    assert lines == [
        "FILE: server.port: expected an integer, got '80'",
        "<environment>: AIOSVC_PORT: expected an integer, got 'x'",
        "<command line>: --port: expected an integer from 0 to 65535, got 70000",
    ]


# ---- describe_config


def test_describe_config_never_shows_api_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\napi_keys = ["s3cret-key", "other-key"]\n')
    text = describe_config(load_config(path, env={}))
    assert "s3cret" not in text
    assert "other-key" not in text
    assert "api keys: 2 configured" in text


def test_describe_config_summary() -> None:
    text = describe_config(load_config(EXAMPLE, env={}))
    assert text.splitlines() == [
        f"config OK ({EXAMPLE})",
        "listening on http://127.0.0.1:8420 as computer 'my-laptop'",
        "api keys: none (loopback only)",
        "database: /var/lib/aiosvc/aiosvc.db",
        "agents: echo (echo, default), slow-echo (echo), shell (command), local-llm (openai)",
        "log format: auto (json unless stderr is a terminal)",
        "log level: info",
        "projects: website",
        "peers: desktop",
    ]


def test_describe_config_brackets_ipv6() -> None:
    config = load_config(None, env={"AIOSVC_HOST": "::1"})
    assert "listening on http://[::1]:8420" in describe_config(config)
