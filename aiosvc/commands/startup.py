"""Starting a run: settle what the previous one left, number events, load the cache, resume.

Settling takes one small write (the interrupted replies failed, approvals expired, this run's
event ids reserved). On a disk with no room for it, the daemon still starts: it serves reads
from the database as the previous run left it, refuses every command (``507``, or ``503``)
since no event may be numbered before its ids are reserved, reports itself degraded on
``/health``, and retries the write every :data:`RETRY_S` seconds. Once it lands, the cache is
loaded again, the queued replies resume and the daemon is ready: no restart needed.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from aiosvc.bus import Bus
from aiosvc.cache import Cache
from aiosvc.clock import utcnow
from aiosvc.commands.service import CommandService
from aiosvc.store import StorageFull, StorageUnavailable, Store, StoreError

log = structlog.get_logger(__name__)

#: How often a deferred start tries its write again.
RETRY_S = 1.0


class Startup:
    """Brings the service up, at once or as soon as the disk lets it."""

    def __init__(
        self, store: Store, bus: Bus, cache: Cache, commands: CommandService, *, block: int
    ) -> None:
        self._store = store
        self._bus = bus
        self._cache = cache
        self._commands = commands
        self._block = block
        self._retrying: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """Start the service; if its first write cannot land, serve reads and keep trying."""
        try:
            await self._settle(reload=False)
        except (StorageFull, StorageUnavailable) as exc:
            log.warning(
                "startup_deferred",
                error=str(exc),
                detail="serving reads; commands are refused until the write lands",
            )
            self._commands.not_ready = type(exc)(
                "aiosvc cannot take commands yet: it could not record the work its previous run "
                f"left unfinished ({exc}); it retries by itself"
            )
            await self._cache.load()
            self._retrying = asyncio.get_running_loop().create_task(
                self._retry(), name="aiosvc-startup-retry"
            )

    async def _settle(self, *, reload: bool) -> None:
        recovery = await self._store.recover(utcnow(), self._block)
        if recovery.failed_replies or recovery.expired_approvals:
            # the previous run stopped without finishing these (a crash, a kill)
            log.warning(
                "recovered_interrupted_work",
                failed_replies=recovery.failed_replies,
                expired_approvals=recovery.expired_approvals,
                requeued_replies=len(recovery.requeued),
            )
        first_id, reserved = recovery.first_event_id, recovery.event_ids_reserved
        self._bus.start_at(first_id, reserved, self._store.set_event_ids_reserved)
        if reload:
            await self._cache.reload()
        else:
            await self._cache.load()
        self._commands.not_ready = None
        self._commands.resume(recovery)
        log.info("service_started", db=str(self._store.db.path), first_event_id=first_id)

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await self._settle(reload=True)
            except StoreError as exc:
                log.debug("startup_still_deferred", error=str(exc))
                continue
            self._retrying = None
            return

    async def close(self) -> None:
        """Stop retrying a deferred start."""
        task, self._retrying = self._retrying, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
