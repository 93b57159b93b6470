"""Running ``aiosvc serve`` as a real process for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson


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
    ) -> None:
        self.db = db
        self.port = port or free_port()
        self.config = config
        self.args = list(args)  # more arguments for ``serve``
        self.env = dict(env or {})  # more environment (AIOSVC_LOG_FORMAT is json unless set)
        self.log_path = db.with_suffix(f".{self.port}.log")
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until ``/health`` answers."""
        argv = [sys.executable, "-m", "aiosvc", "serve", "--port", str(self.port)]
        argv += ["--db", str(self.db)]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        argv += self.args
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOSVC_")}
        env["AIOSVC_LOG_FORMAT"] = "json"
        env.update(self.env)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=self._log, env=env)
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(timeout):
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"aiosvc exited early: {self.log()}")
                    try:
                        async with http.get(self.url + "/health") as response:
                            if response.status == 200:
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
