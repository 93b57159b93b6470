"""Browser logins: the dashboard's sign-in, kept hashed in the database and in memory.

A login is made by a valid API key and named by a random token that only the browser holds
(in its cookie); the database keeps the SHA-256 of the token, so a copy of the file signs
nobody in. Every login is also held in memory, so that checking a cookie costs a hash and a
dictionary lookup, never a read. A login unused for ``ttl_s`` expires (a sliding expiry):
its last use is kept in memory on every request and written at most every
``touch_every_s``, so that the hot path does not write either; after a restart it may look
up to that much older, which only shortens its life by as much.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Container

import attrs
import structlog

from aiosvc.clock import utcnow
from aiosvc.store.db import Database, Statement
from aiosvc.store.errors import StoreError

log = structlog.get_logger(__name__)

#: A login unused this long expires (seven days), unless the configuration says otherwise.
DEFAULT_TTL_S = 7 * 86400.0
#: The last use of a login is written at most this often.
TOUCH_EVERY_S = 60.0
#: Tokens are 43 characters (32 random bytes, URL-safe base64); anything much longer is not one.
MAX_TOKEN_CHARS = 128

_INSERT = "INSERT INTO logins (id, key_id, created_at, last_used_s) VALUES (?, ?, ?, ?)"
_TOUCH = "UPDATE logins SET last_used_s = ? WHERE id = ?"
_DELETE = "DELETE FROM logins WHERE id = ?"


def token_hash(token: str) -> str:
    """The name a login is stored under: the SHA-256 of its token, in hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def key_id(key: str | bytes) -> str:
    """A fingerprint of an API key, stored with the logins it made (never the key itself), so
    that removing the key from the configuration ends them."""
    raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")
    return hashlib.sha256(b"aiosvc-login-key:" + raw).hexdigest()


@attrs.define
class Login:
    """One signed-in browser."""

    key_id: str  # the fingerprint of the key it signed in with
    last_used: float  # seconds since the epoch
    written: float  # the last use as the database has it


class Logins:
    """Every valid login, in memory and in the database."""

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        touch_every_s: float = TOUCH_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.touch_every_s = touch_every_s
        self.clock = clock
        self._logins: dict[str, Login] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._logins)

    async def load(self) -> None:
        """Hold the valid logins in memory; forget the expired ones (in the background: a
        full disk does not stop the start)."""
        cutoff = self.clock() - self.ttl_s
        rows = await self.db.fetchall(
            "SELECT id, key_id, last_used_s FROM logins WHERE last_used_s > ?", [cutoff]
        )
        self._write(("DELETE FROM logins WHERE last_used_s <= ?", [cutoff]))
        self._logins = {
            row["id"]: Login(row["key_id"], row["last_used_s"], row["last_used_s"]) for row in rows
        }

    async def create(self, key: str) -> tuple[str, float]:
        """A new login made by ``key`` (the key's fingerprint is stored): its token and when
        it expires if unused (seconds since the epoch). Stored durably before it returns."""
        token = secrets.token_urlsafe(32)
        name, fingerprint, now = token_hash(token), key_id(key), self.clock()
        self._forget_expired(now)
        await self.db.write([(_INSERT, [name, fingerprint, utcnow(), now])])
        self._logins[name] = Login(fingerprint, now, now)
        return token, now + self.ttl_s

    def use(self, token: str, key_ids: Container[str]) -> Login | None:
        """The login of ``token`` if it is valid and made by a key in ``key_ids``, its last
        use now (written later, at most every ``touch_every_s``); else None."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        name = token_hash(token)
        login = self._logins.get(name)
        if login is None or login.key_id not in key_ids:
            return None
        now = self.clock()
        if now - login.last_used >= self.ttl_s:
            del self._logins[name]
            self._write((_DELETE, [name]))
            return None
        login.last_used = now
        if now - login.written >= self.touch_every_s:
            login.written = now
            self._write((_TOUCH, [now, name]))
        return login

    def _forget_expired(self, now: float) -> None:
        """Drop from memory the logins unused for their lifetime (signing in is rare: a walk
        over them costs nothing then), so that abandoned ones do not pile up."""
        expired = [n for n, login in self._logins.items() if now - login.last_used >= self.ttl_s]
        for name in expired:
            del self._logins[name]
        if expired:  # by name: the database's last use may be older than the memory's
            self._write(*((_DELETE, [name]) for name in expired))

    def expires_at(self, login: Login) -> float:
        """When ``login`` expires if unused from now on (seconds since the epoch)."""
        return login.last_used + self.ttl_s

    async def revoke(self, token: str) -> bool:
        """End the login of ``token`` (deleted from the database); False if there was none."""
        name = token_hash(token)
        if len(token) > MAX_TOKEN_CHARS or self._logins.pop(name, None) is None:
            return False
        await self.db.write([(_DELETE, [name])])
        return True

    def _write(self, *statements: Statement) -> None:
        """Write in the background: the request that used the login does not wait for it."""
        task = asyncio.get_running_loop().create_task(self._written(statements))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _written(self, statements: tuple[Statement, ...]) -> None:
        try:
            await self.db.write(statements)
        except StoreError as exc:  # a last use not written only shortens the login's life
            log.warning("login_write_failed", error=str(exc))

    async def close(self) -> None:
        """Wait for the background writes (before the database closes)."""
        if self._writes:
            await asyncio.wait(list(self._writes))
