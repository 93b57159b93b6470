"""The ``command`` agent: runs a configured program per message and streams its stdout.

The program finds the conversation so far in the JSON file ``AIOSVC_CONVERSATION`` names
(:mod:`aiosvc.agents.conversation_file`) and, with ``protocol = true``, reports tool use and
asks for approval over a socket (:mod:`aiosvc.agents.line_protocol`).

The program runs in its own process group. However the reply ends (finished, failed, timed
out, cancelled, or the daemon stopping), the group gets SIGTERM, then SIGKILL after a grace
period, and the program is reaped: no zombie or orphan is left behind.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import socket
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from aiosvc.agents.base import Agent, AgentError, Turn
from aiosvc.agents.conversation_file import remove, write_conversation
from aiosvc.agents.environment import child_environment
from aiosvc.agents.line_protocol import LineProtocol
from aiosvc.config import PROMPT_ARG, CommandAgentConfig

READ_SIZE = 64 * 1024
STDERR_TAIL_BYTES = 4096


class CommandAgent(Agent):
    """Runs ``argv`` per message: the prompt on stdin, or as the ``{prompt}`` argument."""

    kind = "command"

    def __init__(self, name: str, config: CommandAgentConfig) -> None:
        super().__init__(name)
        self.config = config

    def describe(self) -> Mapping[str, Any]:
        """argv, cwd, timeout and the names (not the values) of the extra environment."""
        return {
            "argv": list(self.config.argv),
            "cwd": self.config.cwd,
            "env": sorted(self.config.env),
            "timeout_s": self.config.timeout_s,
            "protocol": self.config.protocol,
        }

    async def reply(self, turn: Turn) -> AsyncGenerator[str, None]:
        """Stream the program's stdout as it comes; a non-zero exit fails the reply."""
        conversation = await write_conversation(turn)
        pair = socket.socketpair() if self.config.protocol else None
        try:
            async with contextlib.aclosing(self._run(turn, conversation, pair)) as output:
                async for text in output:
                    yield text
        finally:
            remove(conversation)
            for end in pair or ():
                end.close()

    async def _run(
        self,
        turn: Turn,
        conversation: os.PathLike[str],
        pair: tuple[socket.socket, socket.socket] | None,
    ) -> AsyncGenerator[str, None]:
        config = self.config
        # The config allows the prompt only as a whole element: it is never parsed by a shell
        # or joined into another argument (see CommandAgentConfig).
        in_argv = PROMPT_ARG in config.argv
        argv = [turn.prompt if arg == PROMPT_ARG else arg for arg in config.argv]
        extra = {
            **config.env,
            "AIOSVC_SESSION_ID": turn.session.id,
            "AIOSVC_REPLY_ID": turn.reply_id,
            "AIOSVC_CONVERSATION": os.fspath(conversation),
        }
        passed: tuple[int, ...] = ()
        if pair is not None:
            passed = (pair[1].fileno(),)
            extra["AIOSVC_PROTOCOL_FD"] = str(passed[0])
        env = child_environment(extra)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL if in_argv else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=config.cwd,
                env=env,
                start_new_session=True,  # its own process group, to stop it whole
                pass_fds=passed,
            )
        except OSError as exc:
            raise AgentError(
                "spawn_failed",
                f"cannot run {argv[0]!r}: {exc.strerror}",
                program=argv[0],
                os_error=exc.strerror,
            ) from None
        group = Group(process, config.kill_grace_s)
        protocol: asyncio.Task[None] | None = None
        if pair is not None:
            pair[1].close()  # the program's end: only the program holds it now
            serving = LineProtocol(pair[0], turn.approvals, argv[0]).serve()
            protocol = asyncio.get_running_loop().create_task(serving)
        try:
            async with asyncio.timeout(config.timeout_s):
                group.start(None if in_argv else turn.prompt.encode())
                async with contextlib.aclosing(group.output()) as output:
                    async for text in output:
                        yield text
                status = await process.wait()
                if protocol is not None:
                    await _finish(protocol)
        except TimeoutError:
            raise AgentError(
                "timeout",
                f"the program did not finish within {config.timeout_s:g} s",
                program=argv[0],
                timeout_s=config.timeout_s,
            ) from None
        finally:
            await asyncio.shield(group.stop())
            if protocol is not None and not protocol.done():
                protocol.cancel()
                await asyncio.gather(protocol, return_exceptions=True)
        if status != 0:
            tail = group.stderr_tail()
            raise AgentError(
                "exit_status",
                _exit_message(status, tail),
                program=argv[0],
                exit_status=status,
                stderr_tail=tail,
            )


class Group:
    """The program's process group: feeding stdin, keeping stderr's tail, stopping it."""

    def __init__(self, process: asyncio.subprocess.Process, grace_s: float) -> None:
        self.process = process
        self.grace_s = grace_s
        self._stderr: deque[bytes] = deque()
        self._stderr_size = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, stdin: bytes | None) -> None:
        """Start writing stdin (if any) and collecting stderr."""
        loop = asyncio.get_running_loop()
        if stdin is not None:
            self._tasks.append(loop.create_task(self._feed(stdin)))
        self._tasks.append(loop.create_task(self._collect_stderr()))

    async def output(self) -> AsyncGenerator[str, None]:
        """The program's stdout as text, as it comes, until the pipe closes.

        When the program exits while something it started still holds the pipe open, the
        group is stopped so the reply ends with the program rather than hanging on a leftover.
        """
        stdout = self.process.stdout
        assert stdout is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        exited = self.exited()
        leftovers: asyncio.Task[None] | None = None
        read: asyncio.Future[bytes] | None = None
        try:
            while True:
                read = asyncio.ensure_future(stdout.read(READ_SIZE))
                if not exited.done():
                    either: set[asyncio.Future[Any]] = {read, exited}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if exited.done() and leftovers is None:
                    leftovers = asyncio.get_running_loop().create_task(self._end_leftovers())
                chunk = await read
                if not chunk:
                    break
                if text := decoder.decode(chunk):
                    yield text
            if tail := decoder.decode(b"", final=True):
                yield tail
        finally:
            for future in (read, exited):
                if future is not None and not future.done():
                    future.cancel()
            if leftovers is not None:
                await leftovers

    def exited(self) -> asyncio.Future[None]:
        """A future done when the program exits, even while something it started keeps its
        pipes open (``Process.wait`` waits for the pipes too). Uses a pidfd: no polling."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self.process.returncode is not None:
            done.set_result(None)
            return done
        try:
            fd = os.pidfd_open(self.process.pid)
        except ProcessLookupError:  # already gone
            done.set_result(None)
            return done

        def release(_: object = None) -> None:
            loop.remove_reader(fd)
            os.close(fd)

        def ready() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, ready)
        done.add_done_callback(release)
        return done

    async def _end_leftovers(self) -> None:
        """The program exited: stop whatever it left running in its group."""
        pgid = self.process.pid
        if self._signal(pgid, signal.SIGTERM):
            await self._wait_empty(pgid)
            self._signal(pgid, signal.SIGKILL)

    async def _wait_empty(self, pgid: int) -> None:
        """Wait up to the grace period for the group to empty."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace_s):
                await self.exited()
                # Its other members are not our children: nothing tells when they are gone.
                while self._signal(pgid, 0):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

    async def _feed(self, data: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        # A program that exits without reading its input is not an error.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(data)
            await stdin.drain()
            stdin.close()
            await stdin.wait_closed()

    async def _collect_stderr(self) -> None:
        stderr = self.process.stderr
        assert stderr is not None
        while chunk := await stderr.read(READ_SIZE):
            self._stderr.append(chunk)
            self._stderr_size += len(chunk)
            while self._stderr_size - len(self._stderr[0]) >= STDERR_TAIL_BYTES:
                self._stderr_size -= len(self._stderr.popleft())

    def stderr_tail(self) -> str:
        """The last few KiB the program wrote to stderr."""
        raw = b"".join(self._stderr)[-STDERR_TAIL_BYTES:]
        return raw.decode("utf-8", errors="replace").strip()

    async def stop(self) -> None:
        """SIGTERM the group, SIGKILL it after the grace period, then read the pipes to their
        end (``Process.wait`` only returns once they are closed) and reap the program."""
        pgid = self.process.pid  # start_new_session: the group's id is the leader's pid
        if self._signal(pgid, signal.SIGTERM):
            await self._wait_empty(pgid)
            self._signal(pgid, signal.SIGKILL)
        assert self.process.stdout is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.grace_s + 1):
                while await self.process.stdout.read(READ_SIZE):
                    pass  # what is left of a reply that is over
                await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.process.wait()

    @staticmethod
    def _signal(pgid: int, signum: int) -> bool:
        """Signal the group; False when nothing in it is left."""
        try:
            os.killpg(pgid, signum)
        except ProcessLookupError:
            return False
        except PermissionError:  # the group id was reused by someone else's process
            return False
        return True


async def _finish(protocol: asyncio.Task[None]) -> None:
    """The program exited: its protocol requests are over (a leftover of its group still
    holding the socket is stopped with the group). A failure of the daemon's own (the
    store, say) fails the reply."""
    if not protocol.done():
        protocol.cancel()
    await asyncio.gather(protocol, return_exceptions=True)
    if not protocol.cancelled() and (error := protocol.exception()) is not None:
        raise error


def _exit_message(status: int, stderr: str) -> str:
    how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
    return f"the program {how}" + (f": {stderr}" if stderr else "")
