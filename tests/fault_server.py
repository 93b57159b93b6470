"""``aiosvc`` with one fault switch, for end-to-end tests of how the writer survives errors.

Run as ``python tests/fault_server.py serve ...`` by the installed environment's Python (so
that ``aiosvc`` is the installed package): the same command line, plus a SIGUSR1
handler that closes the database's write connection under the running writer. Its next write
then meets aiosqlite's ``ValueError`` (an error that is not an ``sqlite3.Error``), as a bug or a
dying connection thread would cause. The switch lives here, never in the package.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from aiosvc import cli
from aiosvc.store.db import Database

_open = Database.open


async def _open_with_switch(self: Database, **kwargs: Any) -> None:
    await _open(self, **kwargs)
    loop = asyncio.get_running_loop()

    async def close_writer() -> None:
        conn = self._writer_conn
        assert conn is not None
        await conn.close()
        print("fault_injected: the write connection is closed", file=sys.stderr, flush=True)

    tasks: set[asyncio.Task[None]] = set()

    def switch() -> None:
        task = loop.create_task(close_writer())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, switch)


Database.open = _open_with_switch  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(cli.main())
