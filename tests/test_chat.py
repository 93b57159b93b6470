"""``aiosvc chat`` as a real process on pipes, against a real server: the exact lines it prints,
approvals, cancel, history, exit codes, and reconnecting across a server restart."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from aiosvc.app import create_app
from aiosvc.config import Config
from tests import installed
from tests.conftest import ClientFactory
from tests.serving import Server, free_port, rest, serving
from tests.test_large_events_process import config as printer_config
from tests.test_large_events_process import printed

#: Bound on every wait for output; replies take milliseconds, a process start about a second.
TIMEOUT = 30.0
CREATED = re.compile(r"session (ses_[A-Za-z0-9_-]+) created \(agent (\S+)\)")
APPROVAL = re.compile(
    r"\[approval (apr_[A-Za-z0-9_-]+)\] tool (\S+) input (.*): answer with /approve or /deny"
)
SERVER_CONFIG = '[agents.slow]\nkind = "echo"\ndelay_ms = 400\n'

Match = str | re.Pattern[str] | Callable[[str], bool]


def chat_env(url: str) -> dict[str, str]:
    """The test's environment without aiosvc's variables, pointing the client at ``url``."""
    return installed.environ(AIOSVC_URL=url)


def _matches(match: Match, line: str) -> bool:
    if isinstance(match, str):
        return line == match
    if isinstance(match, re.Pattern):
        return match.fullmatch(line) is not None
    return match(line)


class Chat:
    """One installed ``aiosvc chat`` process with its stdin and stdout on pipes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []  # every line read from stdout so far
        self.stderr = ""

    async def send(self, line: str) -> None:
        """Type one line."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, match: Match, timeout: float = TIMEOUT) -> str:
        """Read lines until one is ``match`` (a line, a pattern, or a predicate); return it."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.process.stdout.readline()
                assert raw, f"end of output before the line; got {self.lines}"
                line = raw.decode().removesuffix("\n")
                self.lines.append(line)
                if _matches(match, line):
                    return line

    async def expect_groups(self, pattern: re.Pattern[str]) -> tuple[str, ...]:
        """Read lines until one matches ``pattern``; return its groups."""
        found = pattern.fullmatch(await self.expect(pattern))
        assert found is not None
        return found.groups()

    async def finish(self, quit: bool = True, timeout: float = TIMEOUT) -> int:
        """``/quit`` (or just end the input), read the rest of the output; the exit status."""
        assert self.process.stdin is not None
        if quit:
            await self.send("/quit")
        self.process.stdin.close()
        return await self.wait(timeout)

    async def wait(self, timeout: float = TIMEOUT) -> int:
        """Wait for the exit, collecting the rest of stdout and stderr."""
        assert self.process.stdout is not None and self.process.stderr is not None
        async with asyncio.timeout(timeout):
            rest, errors = await asyncio.gather(
                self.process.stdout.read(), self.process.stderr.read()
            )
            code = await self.process.wait()
        self.lines += rest.decode().splitlines()
        self.stderr += errors.decode()
        return code


StartChat = Callable[..., Awaitable[Chat]]
"""``start_chat(url, *args, env=None)``: a running chat process."""


@pytest.fixture
async def start_chat() -> AsyncIterator[StartChat]:
    """Start chat processes; any still running at the end are killed and reaped."""
    started: list[Chat] = []

    async def start(url: str, *args: str, env: dict[str, str] | None = None) -> Chat:
        process = await asyncio.create_subprocess_exec(
            *installed.argv("chat", *args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=chat_env(url) | (env or {}),
        )
        chat = Chat(process)
        started.append(chat)
        return chat

    yield start
    for chat in started:
        if chat.process.returncode is None:
            chat.process.kill()
        await chat.wait()


@pytest.fixture
async def server(db_path: Path) -> AsyncIterator[Server]:
    """A real ``aiosvc serve`` with a slow echo agent beside the default one."""
    async with serving(db_path, SERVER_CONFIG) as running:
        yield running


LABELLED = re.compile(r"(\w+)> (.*)")


def replies(lines: list[str]) -> list[str]:
    """The agent's lines without their label: neither the session line, the user's lines nor
    bracketed notices."""
    found = []
    for line in lines[1:]:
        labelled = LABELLED.fullmatch(line)
        if line.startswith("[") or (labelled is not None and labelled.group(1) == "you"):
            continue
        found.append(labelled.group(2) if labelled is not None else line)
    return found


# ---- a new session


async def test_a_new_session_streams_the_echo_and_quits(
    server: Server, start_chat: StartChat
) -> None:
    chat = await start_chat(server.url)
    session_id, _ = await chat.expect_groups(CREATED)
    await chat.send("hello there, echo")
    await chat.expect("echo> hello there, echo")
    await chat.expect("[status idle]")
    assert await chat.finish() == 0
    assert chat.lines == [
        f"session {session_id} created (agent echo)",
        "[status running]",
        "echo> hello there, echo",
        "[status idle]",
    ]
    assert chat.stderr == ""
    history = await rest(server.url, "GET", f"/api/v1/sessions/{session_id}/messages")
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "hello there, echo"),
        ("assistant", "hello there, echo"),
    ]


async def test_end_of_input_waits_for_every_reply(server: Server, start_chat: StartChat) -> None:
    chat = await start_chat(server.url, "--title", "piped")
    assert chat.process.stdin is not None
    chat.process.stdin.write(b"one\n\n   \ntwo words\nthree\n")  # blank lines are not sent
    assert await chat.finish(quit=False) == 0
    assert CREATED.fullmatch(chat.lines[0])
    assert replies(chat.lines) == ["one", "two words", "three"]  # (the last one ends it)
    assert not any("\x1b" in line for line in chat.lines)  # no ANSI on a pipe
    session_id = chat.lines[0].split()[1]
    session = await rest(server.url, "GET", f"/api/v1/sessions/{session_id}")
    assert (session["title"], session["message_count"]) == ("piped", 6)


async def test_tool_approvals_are_shown_and_answered(server: Server, start_chat: StartChat) -> None:
    chat = await start_chat(server.url)
    await chat.expect(CREATED)
    await chat.send('//tool ls {"path": "/tmp"}')  # "//": the agent's slash word, sent
    first, tool, tool_input = await chat.expect_groups(APPROVAL)
    assert (tool, tool_input) == ("ls", '{"path": "/tmp"}')
    await chat.expect("[status waiting_approval]")
    await chat.send("/approve")  # the newest pending one
    await chat.expect(f"[approval {first} approved]")
    await chat.expect("echo> tool ls approved")
    await chat.send("//tool rm {}")
    second, _, _ = await chat.expect_groups(APPROVAL)
    await chat.send(f"/deny {second}")
    await chat.expect(f"[approval {second} denied]")
    await chat.expect("echo> tool rm denied")
    await chat.send(f"/approve {second}")  # too late
    await chat.expect(
        f"[error already_resolved: approval '{second}' is already denied (/approve {second})]"
    )
    await chat.send("/deny")
    await chat.expect("[no pending approval]")
    assert await chat.finish() == 0
    assert replies(chat.lines) == ["tool ls approved", "tool rm denied"]


async def test_messages_queue_behind_a_running_reply_and_cancel_stops_it(
    server: Server, start_chat: StartChat
) -> None:
    chat = await start_chat(server.url, "--agent", "slow")
    _, agent = await chat.expect_groups(CREATED)
    assert agent == "slow"
    await chat.send("one two three")  # three deltas, 400 ms apart
    await chat.expect("[status running]")
    await chat.send("four")  # typed while the reply runs: sent, and answered after it
    await chat.expect("slow> four")
    await chat.expect("[status idle]")
    assert replies(chat.lines) == ["one two three", "four"]
    long = "a b c d e f g h"  # eight deltas: about three seconds
    await chat.send(long)
    await chat.expect("[status running]")
    await chat.send("/cancel")
    await chat.expect("[cancelled]")
    await chat.expect("[status idle]")
    await chat.send("/cancel")
    await chat.expect("[nothing to cancel]")
    await chat.send("after")
    await chat.expect("slow> after")
    assert await chat.finish() == 0
    partial = replies(chat.lines)[2:-1]  # what streamed before the cancel: a prefix, or nothing
    assert len(partial) <= 1
    assert long.startswith("".join(partial)) and "".join(partial) != long


# ---- attaching


async def test_attaching_shows_the_last_twenty_messages_then_chats(
    server: Server, start_chat: StartChat
) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={})
    base = f"/api/v1/sessions/{session['id']}/messages?wait=true"
    for n in range(11):  # 22 messages: the first two are not shown
        await rest(server.url, "POST", base, json={"content": f"message {n}"})
    chat = await start_chat(server.url, session["id"])
    await chat.expect(f"session {session['id']} (agent echo, idle, 22 messages)")
    await chat.expect("echo> message 10")
    await chat.send("one more")
    await chat.expect("echo> one more")
    await chat.expect("[status idle]")
    assert await chat.finish() == 0
    shown = []
    for n in range(1, 11):
        shown += [f"you> message {n}", f"echo> message {n}"]
    assert chat.lines[1:21] == shown
    assert chat.lines[21:] == ["[status running]", "echo> one more", "[status idle]"]


# What a hostile message would do to a terminal: clear it, set its title, write the clipboard
# (OSC 52), move back over a line and redraw it, reverse the text's direction.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\rfake\u202etxt\x9b1m"
HOSTILE_SHOWN = "\\x1b[2J\\x1b]0;owned\\x07\\x1b]52;c;ZXZpbA==\\x07\\x0dfake\\u202etxt\\x9b1m"


async def test_control_characters_from_the_wire_are_shown_escaped_never_sent(
    server: Server, start_chat: StartChat
) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={})
    base = f"/api/v1/sessions/{session['id']}/messages?wait=true"
    await rest(server.url, "POST", base, json={"content": HOSTILE + "\n[approval apr_x approved]"})
    chat = await start_chat(server.url, session["id"])
    await chat.expect(f"session {session['id']} (agent echo, idle, 2 messages)")
    await chat.send(HOSTILE)  # streamed back by the echo agent
    await chat.expect("[status idle]")
    assert await chat.finish() == 0
    shown = "\n".join(chat.lines)
    assert not any(c in shown for c in "\x1b\x07\r\x9b\u202e")
    # every line of a message is labelled: the fake notice cannot pass for the client's own
    assert chat.lines[1:3] == [f"you> {HOSTILE_SHOWN}", "you> [approval apr_x approved]"]
    assert chat.lines[3:5] == [f"echo> {HOSTILE_SHOWN}", "echo> [approval apr_x approved]"]
    assert chat.lines[-3:] == ["[status running]", f"echo> {HOSTILE_SHOWN}", "[status idle]"]


async def test_an_unknown_session_exits_1(server: Server, start_chat: StartChat) -> None:
    chat = await start_chat(server.url, "ses_nope")
    assert await chat.finish(quit=False) == 1
    assert chat.lines == []
    assert chat.stderr == "aiosvc chat: no session 'ses_nope'\n"


async def test_a_session_deleted_while_attached_ends_the_chat(
    server: Server, start_chat: StartChat
) -> None:
    session = await rest(server.url, "POST", "/api/v1/sessions", json={})
    chat = await start_chat(server.url, session["id"])
    await chat.send("still here")
    await chat.expect("echo> still here")
    await rest(server.url, "DELETE", f"/api/v1/sessions/{session['id']}")
    await chat.expect("[session deleted]")
    assert await chat.wait() == 1
    assert chat.stderr == f"aiosvc chat: session '{session['id']}' was deleted\n"


# ---- failures at start


async def test_an_unreachable_server_exits_1(start_chat: StartChat) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    chat = await start_chat(url)
    assert await chat.finish(quit=False) == 1
    assert chat.lines == []
    assert chat.stderr.startswith(f"aiosvc chat: cannot reach {url}: ")
    assert chat.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--url", "ftp://example.org"],
            "aiosvc chat: --url: expected an http:// or https:// URL, got 'ftp://example.org'",
        ),
        (["ses_x", "--agent", "echo"], "aiosvc chat: --agent and --title apply to a new session"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["a", "b"], "unrecognized arguments: b"),
    ],
    ids=["bad-url", "agent-with-session", "unknown-flag", "two-sessions"],
)
async def test_bad_arguments_exit_2(start_chat: StartChat, args: list[str], message: str) -> None:
    chat = await start_chat(f"http://127.0.0.1:{free_port()}", *args)
    assert await chat.finish(quit=False) == 2
    assert chat.lines == []
    assert message in chat.stderr


# ---- resilience


async def test_a_server_restart_is_survived_and_a_line_typed_meanwhile_is_sent_once(
    db_path: Path, start_chat: StartChat
) -> None:
    first = Server(db_path)
    await first.start()
    second: Server | None = None
    try:
        chat = await start_chat(first.url)
        session_id, _ = await chat.expect_groups(CREATED)
        await chat.send("before")
        await chat.expect("echo> before")
        await chat.expect("[status idle]")
        first.kill()
        await chat.expect(lambda line: line.startswith("[disconnected: "))
        await chat.send("after the restart")  # kept until the server is back
        second = Server(db_path, port=first.port)
        await second.start()
        await chat.expect("[reconnected]")
        await chat.expect("echo> after the restart")
        await chat.send("and once more")
        await chat.expect("echo> and once more")
        assert await chat.finish() == 0
        assert replies(chat.lines) == ["before", "after the restart", "and once more"]
        # The new server could not replay the old one's events: a reset, and a refetch.
        assert (await second.settled_log()).count("/messages?limit=20") == 2
        history = await rest(second.url, "GET", f"/api/v1/sessions/{session_id}/messages")
        assert [m["content"] for m in history if m["role"] == "user"] == [
            "before",
            "after the restart",
            "and once more",
        ]
    finally:
        if second is not None:
            await second.stop()
        elif first.process is not None and first.process.poll() is None:
            await first.stop()


class Proxy:
    """A TCP relay in front of a server whose connections the test can cut, as a network
    failure would (no close frame), while the server itself stays up."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.transports: list[asyncio.WriteTransport] = []
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.transports += [writer.transport, up_writer.transport]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(upstream, writer))

    def cut(self) -> None:
        """Drop every relayed connection at once."""
        for transport in self.transports:
            transport.abort()
        self.cuts += len(self.transports)
        self.transports.clear()

    async def close(self) -> None:
        """Stop listening and drop what is still relayed."""
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()


async def test_a_dropped_connection_resumes_from_the_last_event_without_gap_or_repeat(
    server: Server, start_chat: StartChat
) -> None:
    proxy = Proxy(server.port)
    await proxy.start()
    try:
        chat = await start_chat(f"http://127.0.0.1:{proxy.port}", "--agent", "slow")
        await chat.expect(CREATED)
        text = "a b c d e f g h"  # eight deltas, 400 ms apart
        await chat.send(text)
        await chat.expect("[status running]")
        await asyncio.sleep(0.6)  # a delta or two shown, the rest still to come
        proxy.cut()
        await chat.expect(lambda line: line.startswith("[disconnected: "))
        await chat.expect("[reconnected]")
        await chat.expect("[status idle]")
        assert await chat.finish() == 0
    finally:
        await proxy.close()
    assert proxy.cuts >= 2
    assert "".join(replies(chat.lines)) == text  # every delta once, in order
    assert not any(line.startswith("[no answer") for line in chat.lines)
    # Resumed from its last event, not reset: the history was fetched once, at the start.
    assert (await server.settled_log()).count("/messages?limit=20") == 1


async def test_a_reply_cut_for_the_stream_is_shown_whole_once(
    db_path: Path, tmp_path: Path, start_chat: StartChat
) -> None:
    # outbox limit 256 KiB: a reply over 128 KiB comes cut, its content kept to 16 KiB
    limits = "outbox_low_bytes = 16384\noutbox_high_bytes = 65536\noutbox_limit_bytes = 262144\n"
    server = Server(db_path, config=printer_config(tmp_path, streams=limits))
    await server.start()
    try:
        chat = await start_chat(server.url, "--agent", "printer")
        await chat.expect(CREATED)
        await chat.send("200000")
        await chat.expect("[status idle]", timeout=60)
        assert await chat.finish() == 0
    finally:
        assert await server.stop() == 0
    assert replies(chat.lines) == printed(200_000).splitlines()
    assert '"truncated":true' not in "".join(chat.lines)


def server_url(client: Any) -> str:
    """The base URL of a test client's server."""
    return str(client.make_url("")).rstrip("/")


async def test_the_api_key_goes_in_a_header_and_in_the_socket_query(
    aiohttp_client: ClientFactory, config: Config, start_chat: StartChat
) -> None:
    seen: list[tuple[str, str | None, str | None]] = []

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        header, token = request.headers.get("X-API-Key"), request.query.get("token")
        seen.append((request.path, header, token))
        given = token if request.path.endswith("/ws") else header
        if given != "s3cret":
            error = {"code": "unauthorized", "message": "an API key is needed", "status": 401}
            return web.json_response({"error": error}, status=401)
        return await handler(request)

    app = create_app(config)
    app.middlewares.append(require_key)
    client = await aiohttp_client(app)
    chat = await start_chat(server_url(client), "--api-key", "s3cret")
    await chat.expect(CREATED)
    await chat.send("with a key")
    await chat.expect("echo> with a key")
    assert await chat.finish() == 0
    ws = [s for s in seen if s[0].endswith("/ws")]
    assert ws and all(s[1:] == (None, "s3cret") for s in ws)
    assert all(s[1:] == ("s3cret", None) for s in seen if s not in ws)
    refused = await start_chat(server_url(client))
    assert await refused.finish(quit=False) == 1
    assert refused.stderr == "aiosvc chat: an API key is needed (unauthorized)\n"


async def test_a_server_with_api_keys_takes_the_key_from_the_environment(
    db_path: Path, start_chat: StartChat
) -> None:
    config = db_path.with_name("keyed.toml")
    config.write_text('[server]\napi_keys = ["k-one"]\n')
    keyed = Server(db_path, config=config)
    await keyed.start()
    try:
        refused = await start_chat(keyed.url)
        assert await refused.finish(quit=False) == 1
        assert refused.stderr == "aiosvc chat: an API key is required (unauthorized)\n"
        chat = await start_chat(keyed.url, env={"AIOSVC_API_KEY": "k-one"})
        await chat.expect(CREATED)
        await chat.send("keyed")
        await chat.expect("echo> keyed")
        assert await chat.finish() == 0
        assert "k-one" not in await keyed.settled_log()
    finally:
        await keyed.stop()
