"""Building responses: the success envelope, lists with paging, the error envelope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from aiosvc.convert import unstructure
from aiosvc.errors import AppError
from aiosvc.paging import Page

JSON = "application/json"


def json_response(
    body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Serialise ``body`` (models allowed) with orjson into a JSON response."""
    return web.Response(
        body=orjson.dumps(unstructure(body)), status=status, content_type=JSON, headers=headers
    )


def ok(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """Answer ``{"data": data}``."""
    return json_response({"data": data}, status=status, headers=headers)


def page(items: Sequence[Any], *, limit: int, offset: int) -> web.Response:
    """Answer one page of ``items`` (models allowed) with ``total``, ``limit`` and ``offset``."""
    shown = [orjson.dumps(unstructure(item)) for item in items[offset : offset + limit]]
    return raw_page(shown, total=len(items), limit=limit, offset=offset)


def raw_ok(data: bytes, *, status: int = 200) -> web.Response:
    """Answer ``{"data": ...}`` around JSON that is already serialised."""
    return web.Response(body=b'{"data":%s}' % data, status=status, content_type=JSON)


def raw_page(items: Sequence[bytes], *, total: int, limit: int, offset: int) -> web.Response:
    """Answer a page of already serialised items with ``total``, ``limit`` and ``offset``."""
    body = b'{"data":[%s],"total":%d,"limit":%d,"offset":%d}' % (
        b",".join(items),
        total,
        limit,
        offset,
    )
    return web.Response(body=body, content_type=JSON)


def cursor_page(page: Page, *, limit: int) -> web.Response:
    """Answer a page with ``total``, ``limit``, ``offset`` (null when asked by cursor) and
    the cursors of its neighbours, ``next`` and ``prev`` (null at either end)."""
    return web.Response(body=cursor_page_body(page, limit=limit), content_type=JSON)


def cursor_page_body(page: Page, *, limit: int) -> bytes:
    """The body :func:`cursor_page` answers."""
    return b'{"data":[%s],"total":%d,"limit":%d,"offset":%b,"next":%b,"prev":%b}' % (
        b",".join(page.items),
        page.total,
        limit,
        b"null" if page.offset is None else b"%d" % page.offset,
        orjson.dumps(page.next),
        orjson.dumps(page.prev),
    )


def error_response(error: AppError) -> web.Response:
    """Answer an error in the API's envelope, with the error's own headers."""
    return json_response(error.envelope(), status=error.status, headers=error.headers)
