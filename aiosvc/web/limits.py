"""Rate and connection limits: token buckets per key and per socket, connection counts."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

import attrs


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
        for bucket in self._buckets.values():
            bucket.rate, bucket.burst = rate, burst
            bucket.tokens = min(bucket.tokens, burst)

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
