"""``aiosvc chat [SESSION]``: talk to a session from a terminal, or from a script through pipes.

Each line read from standard input is sent as a message; replies stream to standard output.
Commands: ``/approve [ID]``, ``/deny [ID]`` (the newest pending approval when no id is given),
``/cancel`` and ``/quit``. At ``/quit`` or end of input the client leaves once what it sent is
answered and the reply in flight has finished, or after :data:`QUIT_WAIT_S` at most.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, TextIO

import aiohttp
import attrs

from aiosvc.client.api import Api, ApiError, Unreachable, check_base_url
from aiosvc.client.display import Display, terminal_safe
from aiosvc.client.link import Fatal, Link
from aiosvc.client.pending import PendingOps
from aiosvc.client.stdin import LineReader
from aiosvc.client.transcript import Transcript

DEFAULT_URL = "http://127.0.0.1:8420"
QUIT_WAIT_S = 30.0
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@attrs.frozen(kw_only=True)
class Options:
    """What ``aiosvc chat`` was asked to do, from flags and the environment."""

    url: str
    api_key: str | None
    session: str | None
    agent: str | None
    title: str | None


class UsageError(Exception):
    """Arguments that do not make sense together (exit status 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chat`` subcommand's arguments to ``parser``."""
    parser.description = (
        "Without SESSION, create a session; with it, show its last messages and attach. "
        "Each line typed is sent as a message."
    )
    parser.epilog = (
        "Commands: /approve [ID], /deny [ID] (the newest pending approval without ID), "
        "/cancel, /quit. End of input quits too, once the reply in flight has finished."
    )
    parser.add_argument("session", nargs="?", metavar="SESSION", help="attach to this session")
    parser.add_argument("--url", help=f"the server (default: $AIOSVC_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", help="API key (default: $AIOSVC_API_KEY)")
    parser.add_argument("--agent", help="agent of the new session (default: the server's)")
    parser.add_argument("--title", help="title of the new session")


def options_from(args: argparse.Namespace, env: dict[str, str] | None = None) -> Options:
    """Resolve flags and environment into :class:`Options`; UsageError when they are wrong."""
    env = dict(os.environ) if env is None else env
    try:
        url = check_base_url(args.url or env.get("AIOSVC_URL") or DEFAULT_URL)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None
    if args.session is not None and (args.agent is not None or args.title is not None):
        raise UsageError("--agent and --title apply to a new session, not to SESSION")
    if args.session is not None and not args.session.strip():
        raise UsageError("SESSION is empty")
    return Options(
        url=url,
        api_key=args.api_key or env.get("AIOSVC_API_KEY") or None,
        session=args.session,
        agent=args.agent,
        title=args.title,
    )


def run(args: argparse.Namespace) -> int:
    """Run the chat for parsed arguments; return the exit status."""
    try:
        options = options_from(args)
    except UsageError as exc:
        print(f"aiosvc chat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(chat(options))
    except KeyboardInterrupt:
        print(file=sys.stdout, flush=True)
        return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    # the message may quote the server's words: never let them act on the terminal
    print(f"aiosvc chat: {terminal_safe(message)}", file=sys.stderr, flush=True)
    return EXIT_FAILED


async def chat(options: Options, *, stdin_fd: int = 0, out: TextIO | None = None) -> int:
    """Open or create the session, then chat until ``/quit``, end of input or a fatal error."""
    display = Display(out if out is not None else sys.stdout)
    async with aiohttp.ClientSession() as http:
        api = Api(http, options.url, options.api_key)
        try:
            if options.session is None:
                session = await api.create_session(options.agent, options.title)
                display.line(f"session {session['id']} created (agent {session['agent']})")
            else:
                session = await api.session(options.session)
                display.line(
                    f"session {session['id']} (agent {session['agent']}, {session['status']}, "
                    f"{session['message_count']} messages)"
                )
        except Unreachable as exc:
            return _fail(f"cannot reach {options.url}: {exc}")
        except ApiError as exc:
            if exc.status == 404 and options.session is not None:
                return _fail(f"no session '{options.session}'")
            return _fail(f"{exc.message} ({exc.code})")
        outbox = PendingOps()
        transcript = Transcript(display, outbox, status=session.get("status"))
        link = Link(api, str(session["id"]), transcript, outbox, display)
        try:
            return await Chat(link, transcript, outbox, LineReader(stdin_fd)).run()
        finally:
            display.end_line()


class Chat:
    """Reads the user's lines and turns them into ops while the link keeps the socket up."""

    def __init__(
        self, link: Link, transcript: Transcript, outbox: PendingOps, reader: LineReader
    ) -> None:
        self.link = link
        self.transcript = transcript
        self.outbox = outbox
        self.reader = reader
        self.display = link.display

    async def run(self) -> int:
        """Chat until the user leaves (0) or the link gives up (1)."""
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
                return _fail(str(error))
            if error is not None:
                raise error
        return EXIT_OK

    async def _read_lines(self) -> None:
        while (line := await self.reader.get()) is not None:
            if not await self._on_line(line):
                break
        try:
            async with asyncio.timeout(QUIT_WAIT_S):
                await self.transcript.settled()
        except TimeoutError:
            self.display.end_line()
            print(
                f"aiosvc chat: stopped waiting for the reply after {QUIT_WAIT_S:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    async def _on_line(self, line: str) -> bool:
        """Act on one line; False when it asks to quit."""
        if not line.strip():
            return True
        word, *rest = line.split()
        if word == "/quit":
            return False
        if word in ("/approve", "/deny"):
            self._approve(word, rest)
        elif word == "/cancel":
            self.outbox.add("cancel")
        else:
            self.outbox.add("send_message", content=line)
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
