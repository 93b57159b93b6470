"""Writes a reply cannot do without: retried while the disk is full, then given up on.

A client's command either lands or answers an error at once (``507`` or ``503``: nothing of it
was stored). A reply's own writes (it started, it ended) have no client to tell, so they are
retried for a while: a disk that gets room lets the reply end as it should.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiosvc.commands.context import Context
from aiosvc.models import ErrorInfo
from aiosvc.store import StorageFull, StorageUnavailable, StoreError

#: How long a reply's write is retried before the reply gives up on it.
RETRY_FOR_S = 5.0
#: The longest pause between two tries.
MAX_PAUSE_S = 1.0


async def retrying(
    context: Context, attempt: Callable[[], Awaitable[None]], *, for_s: float = RETRY_FOR_S
) -> StoreError | None:
    """Run ``attempt`` until its write lands, retrying for ``for_s`` while the storage fails
    (not once stopping began); return the last failure if it never landed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + for_s
    pause = 0.05
    while True:
        try:
            await attempt()
        except (StorageFull, StorageUnavailable) as exc:
            if context.stopping.is_set() or loop.time() + pause > deadline:
                return exc
        else:
            return None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await context.stopping.wait()
        pause = min(pause * 2, MAX_PAUSE_S)


def not_stored(exc: StoreError) -> ErrorInfo:
    """A reply's error when what it produced could not be stored."""
    code = getattr(exc, "code", "storage_error")
    return ErrorInfo(code=code, message=f"the reply could not be stored: {exc}")
