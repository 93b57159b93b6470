"""``aiosvc chat [SESSION]``: talk to a session from a terminal, or from a script through pipes.

Each line read is sent as a message; replies stream to standard output, each line labelled
with its author (``you> ``, ``echo> ``), the client's notices in brackets. Slash words are the
client's commands (:mod:`aiosvc.client.slash`): ``/approve [ID]``, ``/deny [ID]`` (the newest
pending approval when no id is given), ``/cancel``, ``/help`` and ``/quit``; ``//TEXT`` sends
``/TEXT``. At ``/quit`` or end of input the client leaves once what it sent is answered and the
reply in flight has finished, or after :data:`QUIT_WAIT_S` at most; if that reply waits for an
approval, at once, with exit status :data:`EXIT_PENDING`.

On a terminal the input line is prompt_toolkit's (editing, history), below the conversation;
on pipes and dumb terminals lines are read as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Protocol, TextIO

import aiohttp
import attrs

from aiosvc.client import prompt, slash
from aiosvc.client.api import Api, ApiError, Unreachable
from aiosvc.client.display import Display
from aiosvc.client.link import Fatal, Link
from aiosvc.client.options import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_server_arguments,
    fail,
    server_from,
)
from aiosvc.client.pending import PendingOps
from aiosvc.client.stdin import LineReader
from aiosvc.client.transcript import Transcript

QUIT_WAIT_S = 30.0
#: Input ended (or /quit) while the reply waited for an approval nobody here had answered.
EXIT_PENDING = 3
EXIT_INTERRUPTED = 130


@attrs.frozen(kw_only=True)
class Options:
    """What ``aiosvc chat`` was asked to do, from flags and the environment."""

    url: str
    api_key: str | None
    session: str | None
    agent: str | None
    title: str | None


class Reader(Protocol):
    """Where typed lines come from: a prompt on a terminal, else standard input as it is."""

    interrupted: bool

    def start(self) -> None:
        """Start reading."""

    async def get(self) -> str | None:
        """The next line, or None at its end."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chat`` subcommand's arguments to ``parser``."""
    parser.description = (
        "Without SESSION, create a session; with it, show its last messages and attach. "
        "Each line typed is sent as a message."
    )
    parser.epilog = (
        "Commands: /approve [ID], /deny [ID] (the newest pending approval without ID), "
        "/cancel, /help, /quit; //TEXT sends /TEXT. End of input quits too, once the reply in "
        f"flight has finished; at once, with exit status {EXIT_PENDING}, if it waits for an "
        "approval."
    )
    parser.add_argument("session", nargs="?", metavar="SESSION", help="attach to this session")
    add_server_arguments(parser)
    parser.add_argument("--agent", help="agent of the new session (default: the server's)")
    parser.add_argument("--title", help="title of the new session")


def options_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> Options:
    """Resolve flags and environment into :class:`Options`; UsageError when they are wrong."""
    url, api_key = server_from(args, env)
    if args.session is not None and (args.agent is not None or args.title is not None):
        raise UsageError("--agent and --title apply to a new session, not to SESSION")
    if args.session is not None and not args.session.strip():
        raise UsageError("SESSION is empty")
    return Options(
        url=url, api_key=api_key, session=args.session, agent=args.agent, title=args.title
    )


def run(args: argparse.Namespace) -> int:
    """Run the chat for parsed arguments; return the exit status."""
    try:
        options = options_from(args)
    except UsageError as exc:
        return fail("chat", str(exc), EXIT_USAGE)
    try:
        if prompt.usable():
            with prompt.above_prompt():
                return asyncio.run(chat(options, tty=True))
        return asyncio.run(chat(options))
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)
        return EXIT_INTERRUPTED


def _header(session: dict[str, Any], created: bool) -> str:
    """The first line: the session, and on attaching its title and state."""
    if created:
        return f"session {session['id']} created (agent {session['agent']})"
    title = f' "{session["title"]}"' if session.get("title") else ""
    return (
        f"session {session['id']}{title} (agent {session['agent']}, {session['status']}, "
        f"{session['message_count']} messages)"
    )


async def chat(
    options: Options, *, stdin_fd: int = 0, out: TextIO | None = None, tty: bool = False
) -> int:
    """Open or create the session, then chat until ``/quit``, end of input or a fatal error."""
    display = Display(out if out is not None else sys.stdout, whole_lines=tty)
    async with aiohttp.ClientSession() as http:
        api = Api(http, options.url, options.api_key)
        try:
            if options.session is None:
                session = await api.create_session(options.agent, options.title)
            else:
                session = await api.session(options.session)
        except Unreachable as exc:
            return fail("chat", f"cannot reach {options.url}: {exc}")
        except ApiError as exc:
            if exc.status == 404 and options.session is not None:
                return fail("chat", f"no session '{options.session}'")
            return fail("chat", f"{exc.message} ({exc.code})")
        display.line(_header(session, created=options.session is None))
        outbox = PendingOps()
        agent = str(session.get("agent") or "agent")
        transcript = Transcript(display, outbox, status=session.get("status"), agent=agent)
        link = Link(api, str(session["id"]), transcript, outbox, display)
        reader: Reader = prompt.PromptReader(display) if tty else LineReader(stdin_fd)
        try:
            return await Chat(link, transcript, outbox, reader).run()
        finally:
            display.end_line()


class Chat:
    """Reads the user's lines and turns them into ops while the link keeps the socket up."""

    def __init__(
        self, link: Link, transcript: Transcript, outbox: PendingOps, reader: Reader
    ) -> None:
        self.link = link
        self.transcript = transcript
        self.outbox = outbox
        self.reader = reader
        self.display = link.display

    async def run(self) -> int:
        """Chat until the user leaves (0, or 3 with an approval pending) or the link gives up."""
        self.reader.start()
        link = asyncio.create_task(self.link.run(), name="aiosvc-chat-link")
        typing = asyncio.create_task(self._read_lines(), name="aiosvc-chat-input")
        try:
            await asyncio.wait({link, typing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.link.closing = True
            typing.cancel()
            link.cancel()
            await asyncio.wait({typing, link})
        for task in (link, typing):
            error = None if task.cancelled() else task.exception()
            if isinstance(error, Fatal):
                self.display.end_line()
                return fail("chat", str(error))
            if error is not None:
                raise error
        return typing.result() if not typing.cancelled() else EXIT_OK

    async def _read_lines(self) -> int:
        # Lines wait for the session's history: what is pending is known before a line acts
        # (a piped "/approve" finds the approval that was waiting)
        await self.link.ready.wait()
        while (line := await self.reader.get()) is not None:
            if not await self._on_line(line):
                break
        if self.reader.interrupted:
            return EXIT_INTERRUPTED
        try:
            async with asyncio.timeout(QUIT_WAIT_S):
                await self.transcript.settled()
        except TimeoutError:
            self.display.end_line()
            fail("chat", f"stopped waiting for the reply after {QUIT_WAIT_S:.0f} s")
            return EXIT_OK
        if self.transcript.blocked:
            return self._left_pending()
        return EXIT_OK

    def _left_pending(self) -> int:
        """Nothing more will be typed and the reply waits for an approval: say so and leave."""
        self.display.end_line()
        waiting = ", ".join(
            f"{approval_id} (tool {approval.get('tool')})"
            for approval_id, approval in self.transcript.approvals.items()
        )
        return fail(
            "chat",
            f"input ended with an approval pending: {waiting}; not waiting for it "
            f"(it stays pending: attach with `aiosvc chat {self.link.session_id}` to answer)",
            EXIT_PENDING,
        )

    async def _on_line(self, line: str) -> bool:
        """Act on one line; False when it asks to quit."""
        parsed = slash.parse(line)
        if parsed is None:
            return True
        if isinstance(parsed, slash.Refused):
            self.display.notice(parsed.message)
            return True
        if isinstance(parsed, slash.Send):
            self.outbox.add("send_message", content=parsed.text)
        elif parsed.name == "/quit":
            return False
        elif parsed.name == "/help":
            for help_line in slash.help_lines():
                self.display.notice(help_line)
            return True
        elif parsed.name in ("/approve", "/deny"):
            self._approve(parsed.name, list(parsed.args))
        elif parsed.name == "/cancel":
            self.outbox.add("cancel")
        self.transcript.changed.set()
        await self.link.flush()
        return True

    def _approve(self, word: str, rest: list[str]) -> None:
        if len(rest) > 1:
            self.display.notice(f"usage: {word} [APPROVAL_ID]")
            return
        approval_id = rest[0] if rest else self.transcript.latest_approval
        if approval_id is None:
            self.display.notice("no pending approval")
            return
        decision = "approve" if word == "/approve" else "deny"
        fields: dict[str, Any] = {"approval_id": approval_id, "decision": decision}
        self.outbox.add("approve", **fields)
