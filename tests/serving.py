"""Running the installed ``aiosvc serve`` as a real process for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
import orjson

from tests import installed


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One ``aiosvc serve`` process on a loopback port, with its log in a file."""

    def __init__(
        self,
        db: Path,
        *,
        port: int | None = None,
        config: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port_flag: bool = True,
        wrapper: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.config = config
        #: False: no --port on the command line (the config file sets ``port``).
        self.port_flag = port_flag
        #: A test's script around the installed aiosvc's command line, run in its environment.
        self.wrapper = wrapper
        self.args = list(args)  # more arguments for ``serve``
        self.log_path = (log_dir or db.parent) / f"{db.stem}.{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0, *, status: int = 200) -> None:
        """Start the process and wait until ``/health`` answers (with ``status``)."""
        port = ["--port", str(self.port)] if self.port_flag else []
        argv = installed.argv("serve", *port, "--db", str(self.db))
        if self.wrapper is not None:
            argv = [str(installed.install_dir() / "bin" / "python"), str(self.wrapper), *argv[1:]]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        argv += self.args
        # (AIOSVC_LOG_FORMAT is json unless the test's env sets it)
        env = installed.environ(AIOSVC_LOG_FORMAT="json", **self.extra_env)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=self._log, env=env)
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(timeout):
                while True:
                    if self.process.poll() is not None:
                        self._close_log()
                        raise RuntimeError(f"aiosvc exited early: {self.log()}")
                    try:
                        async with http.get(self.url + "/health") as response:
                            if response.status == status:
                                return
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.05)

    def log(self) -> str:
        """Everything the process has logged so far."""
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines so far, parsed (anything else the process wrote is skipped)."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                found.append(orjson.loads(line))
        return found

    async def settled_log(self) -> str:
        """The log once the request lines of the responses seen so far are out (they are
        flushed at the end of the event loop's turn that answered; other lines at once)."""
        await asyncio.sleep(0.2)
        return self.log()

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._close_log()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        loop = asyncio.get_running_loop()
        code = await asyncio.wait_for(loop.run_in_executor(None, self.process.wait), timeout)
        self._close_log()
        return code

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def slow_echo_config(tmp_path: Path, *, delay_ms: int = 0, shutdown_timeout_s: float = 10) -> Path:
    """A config file whose default agent is an echo agent ``delay_ms`` slow."""
    path = tmp_path / "aiosvc.toml"
    path.write_text(
        f"[server]\nshutdown_timeout_s = {shutdown_timeout_s}\n\n"
        '[agents]\ndefault = "slow"\n\n'
        f'[agents.slow]\nkind = "echo"\ndelay_ms = {delay_ms}\n',
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def serving(db_path: Path, config_text: str) -> AsyncIterator[Server]:
    """A started ``aiosvc serve`` on ``db_path`` with ``config_text`` as its config file (beside
    the database), stopped on the way out."""
    config = db_path.with_name("aiosvc.toml")
    config.write_text(config_text)
    running = Server(db_path, config=config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a loop of its own in a thread, away from the tests' loops (and from
    Playwright's sync API, which owns the test's thread); its error is raised here."""
    result: list[T] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed back to the test
            errors.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def served_for_module(server: Server) -> Iterator[Server]:
    """Start ``server`` for a module-scoped fixture to yield; on the way out, stop it and
    check that it exited 0 and logged no unhandled error."""
    run(server.start())
    try:
        yield server
    finally:
        assert run(server.stop()) == 0, server.log()
        assert '"unhandled_error"' not in server.log()


async def rest(server_url: str, method: str, path: str, **kwargs: Any) -> Any:
    """One REST call; the ``data`` of its answer (None for a 204)."""
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server_url + path, **kwargs) as response,
    ):
        assert response.status < 300, await response.text()
        return (await response.json())["data"] if response.status != 204 else None


async def next_event(response: aiohttp.ClientResponse, within: float) -> dict[str, str]:
    """The next event block of an SSE response (comments and ``retry`` skipped)."""
    async with asyncio.timeout(within):
        while True:
            block: dict[str, str] = {}
            while True:
                line = (await response.content.readline()).decode().rstrip("\n")
                if not line:
                    break
                field, _, value = line.partition(": ")
                block[field] = value
            if "event" in block:
                return block
