"""Rate and connection limits: token buckets per key and per connection, connection counts,
and the places of long-lived requests."""

from __future__ import annotations

import math
import resource
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable

import attrs

from aiosvc.web.linger import MAX_LINGERING

#: Descriptors kept out of the connection cap: the database and its journal, the log,
#: listening sockets, agents' pipes, outgoing connections.
RESERVED_FDS = 128


@attrs.define
class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; each request takes one."""

    rate: float
    burst: float
    tokens: float = attrs.field(default=math.inf)
    stamp: float = attrs.field(factory=time.monotonic)

    def __attrs_post_init__(self) -> None:
        self.tokens = min(self.tokens, self.burst)

    def take(self) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _retune(buckets: Iterable[TokenBucket], rate: float, burst: float) -> None:
    """A new rate and burst for every bucket (none gains tokens by it)."""
    for bucket in buckets:
        bucket.rate, bucket.burst = rate, burst
        bucket.tokens = min(bucket.tokens, burst)


class RateLimiter:
    """One token bucket per key (an API key, or a client address), the least recently used
    forgotten past ``max_keys`` so memory stays bounded."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait(self, key: str) -> float:
        """Seconds until ``key`` could take a token (0.0: now), taking none."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        now = time.monotonic()
        tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def reconfigure(self, rate: float, burst: float) -> None:
        """A new rate and burst, for every bucket (none gains tokens by it)."""
        self.rate, self.burst = rate, burst
        _retune(self._buckets.values(), rate, burst)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when granted, else seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()


class ConnectionRates:
    """One token bucket per connection (its transport), for clients that have no credential
    to tell them apart: local programs all come from 127.0.0.1, and one that writes in a loop
    must not use up the budget of the dashboard beside it. A bucket goes with its connection."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: weakref.WeakKeyDictionary[object, TokenBucket] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._buckets)

    def reconfigure(self, rate: float, burst: float) -> None:
        """A new rate and burst, for every bucket (none gains tokens by it)."""
        self.rate, self.burst = rate, burst
        _retune(self._buckets.values(), rate, burst)

    def take(self, connection: object) -> float:
        """Take a token for ``connection``: 0.0 when granted, else seconds to wait."""
        bucket = self._buckets.get(connection)
        if bucket is None:
            bucket = self._buckets[connection] = TokenBucket(self.rate, self.burst)
        return bucket.take()


def is_local(address: str) -> bool:
    """Tell whether a peer's address is this machine's loopback ("local": a unix socket)."""
    return address.startswith(("127.", "::ffff:127.")) or address in ("::1", "local")


class ConnectionCounter:
    """TCP connections open, in total (counted when accepted, before anything is read) and
    per client address (counted once the address is known)."""

    def __init__(self, total: int, per_client: int) -> None:
        self.limit = total
        self.per_client_limit = per_client
        self.total = 0
        self.per_client: dict[str, int] = {}

    def admit(self) -> bool:
        """Count one more connection; False (and nothing counted) when at the limit."""
        if self.total >= self.limit:
            return False
        self.total += 1
        return True

    def enter(self, client: str) -> bool:
        """Count an admitted connection for ``client``; False (nothing counted) when that
        address is at its limit."""
        mine = self.per_client.get(client, 0)
        if mine >= self.per_client_limit:
            return False
        self.per_client[client] = mine + 1
        return True

    def leave(self, client: str | None) -> None:
        """Count one fewer (``client``: the address it was counted for, if it was)."""
        self.total -= 1
        if client is None:
            return
        left = self.per_client[client] - 1
        if left:
            self.per_client[client] = left
        else:
            del self.per_client[client]


def descriptor_budget(configured: int) -> tuple[int, int]:
    """The connection cap (``configured``, or less to stay below the descriptor limit) and
    how many sockets may linger at once."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured, MAX_LINGERING
    lingering = max(8, min(MAX_LINGERING, soft // 16))
    return max(1, min(configured, soft - RESERVED_FDS - lingering)), lingering


def long_lived_places(cap: int, reserved: int) -> int:
    """How many of ``cap`` connections long-lived requests may hold: all but the reserve
    kept for short ones (a reserve of at most half the cap)."""
    return cap - min(reserved, cap // 2)


class Places:
    """Long-lived requests in progress (event streams, requests waiting for a reply), each
    holding a connection: at most ``limit`` in all (the connection cap less a reserve, so
    that ``/health`` and short requests always find a place) and ``per_credential`` for each
    credential. Requests without a credential (no keys configured) cannot be told apart:
    they share the places in all."""

    def __init__(self, limit: int, per_credential: int) -> None:
        self.limit = limit
        self.per_credential_limit = per_credential
        self.total = 0
        self.by_credential: dict[str, int] = {}

    def take(self, credential: str | None) -> str | None:
        """Take a place for a request of ``credential``: None when granted, else the limit it
        is over ("credential" or "all"), and nothing taken."""
        mine = 0
        if credential is not None:
            mine = self.by_credential.get(credential, 0)
            if mine >= self.per_credential_limit:
                return "credential"
        if self.total >= self.limit:
            return "all"
        if credential is not None:
            self.by_credential[credential] = mine + 1
        self.total += 1
        return None

    def give_back(self, credential: str | None) -> None:
        """Free the place a request of ``credential`` took."""
        self.total -= 1
        if credential is None:
            return
        left = self.by_credential[credential] - 1
        if left:
            self.by_credential[credential] = left
        else:
            del self.by_credential[credential]
