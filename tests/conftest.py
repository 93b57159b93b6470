"""Shared fixtures: a config on a temporary database, the app through ``create_app``, and a
guard that fails any test leaving tasks behind."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import attrs
import pytest

from aiosvc.app import create_app
from aiosvc.config import AgentsConfig, Config, EchoAgentConfig, load_config
from tests.disks import Disk, mounted_disk
from tests.helpers import Client
from tests.serving import Server

ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running once everything it used is torn down."""
    before = asyncio.all_tasks()
    yield
    for _ in range(20):
        leaked = [t for t in asyncio.all_tasks() - before if not t.done()]
        leaked = [t for t in leaked if t is not asyncio.current_task()]
        if not leaked:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"tasks left running: {[t.get_name() for t in leaked]}")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh database file for the test."""
    return tmp_path / "aiosvc.db"


@pytest.fixture
def config(db_path: Path) -> Config:
    """The default configuration on the test's database, with a slow echo agent beside echo."""
    base = load_config(None, env={}, overrides={"db": str(db_path)})
    agents = AgentsConfig(
        default="echo",
        backends={"echo": EchoAgentConfig(), "slow": EchoAgentConfig(delay_ms=200)},
    )
    return attrs.evolve(base, agents=agents)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, config: Config) -> Client:
    """A test client on the real app."""
    return await aiohttp_client(create_app(config))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """A 16 MiB disk of the test's own (a tmpfs; skipped where it cannot be mounted)."""
    yield from mounted_disk(tmp_path)


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    """Servers the test starts; any still running at the end are killed."""
    started: list[Server] = []
    yield started
    for server in started:
        if server.process is not None and server.process.poll() is None:
            server.kill()
