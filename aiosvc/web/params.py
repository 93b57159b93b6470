"""Reading requests: the body (JSON of the declared size only) into attrs models, query
parameters."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from aiohttp import hdrs, web

from aiosvc.convert import loads, structure
from aiosvc.errors import BadRequest, InvalidParameter, PayloadTooLarge, UnsupportedMediaType
from aiosvc.models import is_valid_id
from aiosvc.paging import Window
from aiosvc.rules import MAX_FILTER_CHARS, length_error

T = TypeVar("T")


async def body(request: web.Request, cls: type[T]) -> T:
    """Read the JSON body (its media type is checked by the front door) as ``cls``."""
    if not request.body_exists:
        raise BadRequest("this request needs a JSON body", code="missing_body")
    return structure(loads(await request.read()), cls)


async def body_and_keys(request: web.Request, cls: type[T]) -> tuple[T, frozenset[str]]:
    """Read the body as ``cls``, with the names of the fields it gives (a PATCH tells a field
    left out from one set to null)."""
    if not request.body_exists:
        raise BadRequest("this request needs a JSON body", code="missing_body")
    data = loads(await request.read())
    built = structure(data, cls)  # refuses anything but an object first
    return built, frozenset(data)


DEFAULT_LIMIT = 50


def default_limit(max_limit: int) -> int:
    """The size of a page when the client names none."""
    return min(DEFAULT_LIMIT, max_limit)


def paging(request: web.Request, max_limit: int) -> tuple[int, int]:
    """Read ``limit`` (default 50, 1..max) and ``offset`` (default 0, >= 0)."""
    limit = integer(request, "limit", default_limit(max_limit), 1, max_limit)
    offset = integer(request, "offset", 0, 0, None)
    return limit, offset


def window(request: web.Request, max_limit: int) -> Window:
    """Read ``limit`` and either ``offset`` or one cursor, ``before`` or ``after`` (an id)."""
    limit, offset = paging(request, max_limit)
    before, after = cursor(request, "before"), cursor(request, "after")
    if before is not None and after is not None:
        raise InvalidParameter("after", "give before or after, not both")
    if (before is not None or after is not None) and offset:
        raise InvalidParameter("offset", "cannot be combined with before or after")
    return Window(limit=limit, offset=offset, before=before, after=after)


def cursor(request: web.Request, name: str) -> str | None:
    """Read an optional cursor: the id of an item of the list."""
    raw = request.query.get(name)
    if raw is not None and not is_valid_id(raw):
        raise InvalidParameter(name, "must be an id (1 to 64 of A-Z, a-z, 0-9, '_', '-')")
    return raw


def integer(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    """Read an integer query parameter within ``low``..``high``."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.lstrip("-").isdigit() or len(raw) > 18:
        raise InvalidParameter(name, "must be an integer")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"{low} to {high}" if high is not None else f"at least {low}"
        raise InvalidParameter(name, f"must be {bound}")
    return value


def boolean(request: web.Request, name: str) -> bool:
    """Read a boolean query parameter: true/false/1/0, absent is false."""
    raw = request.query.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise InvalidParameter(name, "must be true or false")


def choice(request: web.Request, name: str, enum: type[StrEnum]) -> str | None:
    """Read an optional query parameter that must be one of an enum's values."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw not in enum._value2member_map_:
        raise InvalidParameter(name, "must be one of: " + ", ".join(m.value for m in enum))
    return raw


def text(request: web.Request, name: str, max_length: int = MAX_FILTER_CHARS) -> str | None:
    """Read an optional free-text query parameter."""
    raw = request.query.get(name)
    if raw is not None and not 1 <= len(raw) <= max_length:
        raise InvalidParameter(name, length_error(1, max_length))
    return raw


def check_body(request: web.Request, max_bytes: int) -> None:
    """Refuse a body that is not ``application/json`` (415) or is declared too large (413)."""
    if request.body_exists:
        charset = (request.charset or "utf-8").lower()
        if request.content_type != "application/json" or charset != "utf-8":
            raise UnsupportedMediaType(
                "a request body must be JSON sent as 'Content-Type: application/json'"
            )
        if request.headers.get(hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
            raise UnsupportedMediaType("a request body must not be compressed (Content-Encoding)")
        length = request.content_length
        if length is not None and length > max_bytes:
            raise PayloadTooLarge(f"the request body is over the limit of {max_bytes} bytes")
