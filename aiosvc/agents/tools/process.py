"""What the MCP SDK's stdio transport leaves to us: the server's exact environment, its
stderr, and the end of its whole process group.

The SDK's ``stdio_client`` spawns the server in a new session (its pid is its process group)
with ``HOME, LOGNAME, PATH, SHELL, TERM, USER`` of the daemon merged under the given
environment, and, on exit, kills the group only when the server outlives its closed stdin by
two seconds: a tool's child process then survives a server that exits at once. So the
server is started through :data:`LAUNCHER`, a few lines of Python that record its pid and
replace themselves (``exec``, same pid and group) with the configured command in exactly the
environment we give; and :func:`kill_group` ends whatever of its group is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence

from aiosvc.agents.environment import child_environment

#: Read by the launcher, and removed from the environment it passes on.
KEEP_VAR, PIDFILE_VAR = "AIOSVC_MCP_KEEP", "AIOSVC_MCP_PIDFILE"
#: Besides the configured ``env``, what a server gets from the daemon's environment.
PASSED = ("PATH", "HOME", "LANG")
LAUNCHER = """\
import os, sys
keep = set(os.environ.pop("AIOSVC_MCP_KEEP").split(","))
with open(os.environ.pop("AIOSVC_MCP_PIDFILE"), "w") as f:
    f.write(str(os.getpid()))
env = {k: v for k, v in os.environ.items() if k in keep}
try:
    os.execvpe(sys.argv[1], sys.argv[1:], env)
except OSError as exc:
    sys.stderr.write(f"cannot start {sys.argv[1]!r}: {exc.strerror or exc}\\n")
    sys.exit(127)
"""
#: After SIGTERM, how long a group has before SIGKILL.
TERM_GRACE_S = 1.0
STDERR_TAIL = 2048


def launch(
    command: Sequence[str], env: Mapping[str, str], pidfile: str
) -> tuple[str, list[str], dict[str, str]]:
    """The executable, arguments and environment that start ``command`` through the launcher."""
    base = child_environment({}, inherited=os.environ)
    wanted = {k: base[k] for k in PASSED if k in base} | dict(env)
    control = {KEEP_VAR: ",".join(sorted(wanted)), PIDFILE_VAR: pidfile}
    return sys.executable, ["-I", "-c", LAUNCHER, *command], wanted | control


def read_pid(pidfile: str) -> int | None:
    """The pid the launcher recorded, or None when it never ran."""
    try:
        with open(pidfile) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def group_alive(pgid: int) -> bool:
    """Tell whether any process of the group is left (a zombie counts until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def kill_group(pgid: int, grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + grace_s
        while group_alive(pgid) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110  # no event tells a group's end
            await asyncio.sleep(0.02)
        os.killpg(pgid, signal.SIGKILL)


def kill_group_now(pgid: int) -> None:
    """SIGKILL the process group at once (when there is no time left to wait)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class StderrTail:
    """A pipe for a server's stderr: its last bytes kept, to say why it failed."""

    def __init__(self) -> None:
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        self.file = os.fdopen(write, "w")  # handed to the transport as its errlog
        self._tail = b""
        asyncio.get_running_loop().add_reader(self._read, self._drain)
        self._open = True

    def _drain(self) -> bool:
        """Read what is there; tell whether anything was."""
        if not self._open:
            return False
        try:
            data = os.read(self._read, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._stop_reading()
            return False
        self._tail = (self._tail + data)[-STDERR_TAIL:]
        return True

    def _stop_reading(self) -> None:
        if self._open:
            self._open = False
            asyncio.get_running_loop().remove_reader(self._read)
            os.close(self._read)

    def spawned(self) -> None:
        """Close our copy of the write end (the server holds its own)."""
        if not self.file.closed:
            self.file.close()

    def text(self) -> str:
        """The last lines the server wrote to stderr."""
        self._drain_now()
        lines = self._tail.decode("utf-8", errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])[-500:]

    def _drain_now(self) -> None:
        while self._drain():
            pass

    def close(self) -> None:
        """Release both ends of the pipe."""
        self.spawned()
        self._stop_reading()


def private_dir() -> str:
    """A directory only this user can read, for the servers' pid files."""
    return tempfile.mkdtemp(prefix="aiosvc-mcp-")
