"""Building responses: the success envelope, lists with paging, the error envelope."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from aiosvc.convert import unstructure
from aiosvc.errors import AppError

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


def error_response(error: AppError) -> web.Response:
    """Answer an error in the API's envelope, with the error's own headers."""
    return json_response(error.envelope(), status=error.status, headers=error.headers)
