"""Log output: JSON lines, stdlib loggers in the same format, and redaction of secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from aiosvc import logs
from aiosvc.logs import configure_logging, get_logger, redact_query, redact_secrets


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Undo each test's logging setup (structlog caches loggers on first use)."""
    root = logging.getLogger()
    access = logging.getLogger("aiohttp.access")
    saved = (root.handlers[:], root.level, access.level)
    saved_access = logs.access
    saved_writers = {level: channel.write for level, channel in logs.ACCESS_LOGS.items()}
    saved_format = logs._format
    structlog.reset_defaults()
    yield
    logs.access = saved_access
    for level, write in saved_writers.items():
        logs.ACCESS_LOGS[level].write = write
    logs._format = saved_format
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:], root.level = saved[0], saved[1]
    access.setLevel(saved[2])


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every line of ``text`` as one JSON object."""
    lines = text.splitlines()
    assert lines, "nothing was logged"
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(item, dict) for item in parsed)
    return parsed


def test_json_lines_carry_event_level_timestamp_and_context(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    structlog.contextvars.bind_contextvars(request_id="r-1")
    log = get_logger("aiosvc.test")
    log.info("hello", n=1)
    log.warning("second")
    first, second = json_lines(capsys.readouterr().err)
    assert first["event"] == "hello"
    assert first["level"] == "info"
    assert first["n"] == 1
    assert first["request_id"] == "r-1"
    assert first["logger"] == "aiosvc.test"
    assert first["timestamp"].endswith("Z")
    assert first["timestamp"][:4].isdigit()
    assert second["event"] == "second"
    assert second["level"] == "warning"


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", level="warning")
    log = get_logger("aiosvc.test")
    log.info("quiet")
    log.error("loud")
    logging.getLogger("aiohttp.server").info("quiet too")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["loud"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'chatty'"):
        configure_logging("json", level="chatty")


def test_exceptions_are_rendered_in_json(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    try:
        raise RuntimeError("bad thing")
    except RuntimeError:
        get_logger("aiosvc.test").exception("failed")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["level"] == "error"
    assert "RuntimeError: bad thing" in line["exception"]


def test_stdlib_loggers_come_out_in_the_same_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    structlog.contextvars.bind_contextvars(request_id="r-2")
    logging.getLogger("aiohttp.server").error("boom %s", "here")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["event"] == "boom here"
    assert line["level"] == "error"
    assert line["logger"] == "aiohttp.server"
    assert line["request_id"] == "r-2"
    assert line["timestamp"].endswith("Z")


def test_aiohttp_access_log_is_silenced(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    logging.getLogger("aiohttp.access").info("GET / 200")
    assert capsys.readouterr().err == ""


def test_reconfiguring_replaces_our_root_handler() -> None:
    before = len(logging.getLogger().handlers)
    configure_logging("json")
    configure_logging("console")
    assert len(logging.getLogger().handlers) == before + 1


def test_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console")
    structlog.contextvars.bind_contextvars(request_id="r-3")
    get_logger("aiosvc.test").info("hello", token="s3cret")
    err = capsys.readouterr().err
    assert "hello" in err
    assert "request_id=r-3" in err
    assert "s3cret" not in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)


def test_auto_format_is_json_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(None)
    get_logger("aiosvc.test").info("auto")
    assert json_lines(capsys.readouterr().err)[0]["event"] == "auto"


def test_secrets_are_redacted_in_output(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json")
    structlog.contextvars.bind_contextvars(api_key="ctx-secret")
    get_logger("aiosvc.test").info(
        "request",
        path="/api/v1/events?token=tok-secret&since=5",
        password="pw-secret",
        headers={"Authorization": "Bearer hdr-secret", "Accept": "*/*"},
    )
    err = capsys.readouterr().err
    assert "secret" not in err
    first = json_lines(err)[0]
    assert first["path"] == "/api/v1/events?token=[redacted]&since=5"
    assert first["api_key"] == first["password"] == "[redacted]"
    assert first["headers"] == {"Authorization": "[redacted]", "Accept": "*/*"}


def test_redact_secrets_keys() -> None:
    headers = {"authorization": "Bearer x"}
    event = {
        "event": "e",
        "api_key": "a",
        "token": "t",
        "ticket": None,
        "authorization": "b",
        "password": "p",
        "user": "kept",
        "headers": headers,
    }
    assert redact_secrets(None, "info", event) == {
        "event": "e",
        "api_key": "[redacted]",
        "token": "[redacted]",
        "ticket": "[redacted]",
        "authorization": "[redacted]",
        "password": "[redacted]",
        "user": "kept",
        "headers": {"authorization": "[redacted]"},
    }
    assert headers == {"authorization": "Bearer x"}  # the caller's dict is left alone


def test_redact_secrets_query_strings() -> None:
    event = {
        "path": "/api/v1/ws?ticket=T1&x=1",
        "query": "token=T2&api_key=T3",
        "url": "http://h/api?api_key=T4#frag",
        "other": "/x?token=kept-because-the-key-is-not-a-url-key",
    }
    assert redact_secrets(None, "info", event) == {
        "path": "/api/v1/ws?ticket=[redacted]&x=1",
        "query": "token=[redacted]&api_key=[redacted]",
        "url": "http://h/api?api_key=[redacted]#frag",
        "other": "/x?token=kept-because-the-key-is-not-a-url-key",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/a", "/a"),
        ("/a?", "/a?"),
        ("/a?token=", "/a?token=[redacted]"),
        ("/a?token=abc", "/a?token=[redacted]"),
        ("/a?x=1&token=abc&y=2", "/a?x=1&token=[redacted]&y=2"),
        ("/a?token=a&token=b", "/a?token=[redacted]&token=[redacted]"),
        ("/a?TOKEN=abc", "/a?TOKEN=[redacted]"),
        ("/a?%74oken=abc", "/a?%74oken=[redacted]"),
        ("/a?tokens=abc&mytoken=x", "/a?tokens=abc&mytoken=x"),
        ("/a?ticket=t;x=1", "/a?ticket=[redacted]"),
        ("/a?token", "/a?token"),
        ("/token=abc", "/token=abc"),
    ],
)
def test_redact_query(text: str, expected: str) -> None:
    assert redact_query(text) == expected


def test_redact_query_bare_query_string() -> None:
    assert redact_query("token=abc&x=1", whole=True) == "token=[redacted]&x=1"
    assert redact_query("token=abc&x=1") == "token=abc&x=1"


def test_the_request_line_has_the_fields_of_any_line_and_is_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    get_logger("aiosvc.test").info("other", request_id="r1")
    logs.access("r1", "GET", "/api/v1/events?ticket=T&x=1", "/api/v1/events", 200, 1.5, "::1")
    other, line = json_lines(capsys.readouterr().err)
    assert set(line) == {*set(other), "method", "path", "route", "status", "duration_ms", "remote"}
    assert line["event"] == "request"
    assert (line["level"], line["logger"], line["request_id"]) == ("info", "aiosvc.access", "r1")
    assert line["path"] == "/api/v1/events?ticket=[redacted]&x=1"
    assert (line["route"], line["status"], line["duration_ms"], line["remote"]) == (
        "/api/v1/events",
        200,
        1.5,
        "::1",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])


def test_a_path_that_is_not_valid_unicode_is_logged_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json")
    logs.access("r1", "GET", "/a\udcff?token=x", None, 404, 0.5, None)
    (line,) = json_lines(capsys.readouterr().err)
    assert line["path"] == "/a\\udcff?token=[redacted]"


def test_the_request_line_follows_the_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", level="warning")
    logs.access("r1", "GET", "/", "/", 200, 1.0, None)
    assert capsys.readouterr().err == ""


class CountingStderr:
    """A stand-in for the process's unbuffered stderr that counts its writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes | memoryview) -> int:
        self.writes.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


async def test_request_lines_of_one_loop_turn_share_one_write_and_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = CountingStderr()
    monkeypatch.setattr("sys.stderr", type("Err", (), {"buffer": raw, "isatty": lambda: False}))
    configure_logging("json")
    for n in range(3):
        logs.access(f"r{n}", "GET", "/", "/", 200, 1.0, None)
    assert raw.writes == []  # held until the loop's turn is over
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(raw.writes) == 1
    logs.access("r3", "GET", "/", "/", 200, 1.0, None)
    get_logger("aiosvc.test").info("other")  # any other line flushes the request lines first
    logging.getLogger("aiohttp.server").warning("stdlib")
    lines = [json.loads(line) for write in raw.writes for line in write.splitlines()]
    assert [line.get("request_id", line["event"]) for line in lines] == [
        "r0",
        "r1",
        "r2",
        "r3",
        "other",
        "stdlib",
    ]


def test_the_level_changes_while_running_request_lines_included(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", level="info")
    log = get_logger("aiosvc.test")
    quiet, loud = logs.access_log("debug"), logs.access_log("info")
    log.debug("hidden")
    quiet.write("r1", "GET", "/health", "/health", 200, 1.0, None)
    loud.write("r2", "GET", "/", "/", 200, 1.0, None)
    log.info("shown")
    assert [
        line.get("request_id", line["event"]) for line in json_lines(capsys.readouterr().err)
    ] == [
        "r2",
        "shown",
    ]
    logs.set_level("debug")
    assert logs.current_level() == "debug"
    log.debug("now shown")
    quiet.write("r3", "GET", "/health", "/health", 200, 1.0, None)
    logging.getLogger("aiohttp.server").debug("stdlib too")
    first, second, third = json_lines(capsys.readouterr().err)
    assert (first["event"], first["level"]) == ("now shown", "debug")
    assert (second["request_id"], second["level"], second["event"]) == ("r3", "debug", "request")
    assert (third["event"], third["level"]) == ("stdlib too", "debug")
    logs.set_level("warning")
    log.info("hidden again")
    loud.write("r4", "GET", "/", "/", 200, 1.0, None)
    log.warning("warned")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["warned"]
    with pytest.raises(ValueError, match="unknown log level 'chatty'"):
        logs.set_level("chatty")
    assert logs.current_level() == "warning"


def test_console_request_lines_follow_the_level_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", level="info")
    logs.access_log("debug").write("r1", "GET", "/health", "/health", 200, 1.0, None)
    assert capsys.readouterr().err == ""
    logs.set_level("debug")
    logs.access_log("debug").write("r2", "GET", "/health", "/health", 200, 1.0, None)
    err = capsys.readouterr().err
    assert "request" in err
    assert "request_id=r2" in err
    assert "debug" in err
