"""The body of the unfiltered first page of sessions, what dashboards ask for most: built once
per change of the sessions (or of the page size), and answered as it is until the next.
"""

from __future__ import annotations

from aiosvc.cache import Cache
from aiosvc.web.responses import cursor_page_body


class FirstPage:
    """The body of ``GET /api/v1/sessions`` without a query, kept while it holds."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._body = b""
        self._built_for = (-1, 0)  # the cache's count of session changes, and the page size

    def body(self, limit: int) -> bytes:
        """The body of the first page of ``limit`` sessions, newest first."""
        key = (self._cache.sessions_changed, limit)
        if key != self._built_for:
            self._body = cursor_page_body(self._cache.newest_sessions(limit), limit=limit)
            self._built_for = key
        return self._body
