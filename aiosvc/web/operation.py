"""What a route handler declares for the API's description: ``@operation(...)`` with its answers,
body, parameters and errors, and the shapes they are given in. The OpenAPI document
(:mod:`aiosvc.web.openapi`) is built from it; route modules need only this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs
from aiohttp import web

from aiosvc.models import ID_PATTERN

H = TypeVar("H", bound=Callable[[web.Request], Awaitable[web.StreamResponse]])
METADATA = "__openapi__"
MAX_OFFSET = 10**18 - 1  # query integers have at most 18 digits


@attrs.frozen
class Limit:
    """A value read from the running configuration's ``[limits]`` when the document is built."""

    name: str


@attrs.frozen
class Page:
    """A list answer: ``{"data": [item, ...], "total", "limit", "offset"}``; with ``cursors``
    also ``"next"`` and ``"prev"``, and ``offset`` null for a page asked for by cursor."""

    item: Any
    cursors: bool = False


@attrs.frozen
class Raw:
    """An answer that is ``shape`` itself, not wrapped in ``{"data": ...}``."""

    shape: Any


@attrs.frozen
class Text:
    """An answer that is text of ``media_type`` (or of one of ``also``), not JSON."""

    media_type: str
    also: tuple[str, ...] = ()


@attrs.frozen
class Param:
    """A query parameter, request header or path parameter an operation reads (a path's
    parameters need none when they are ids)."""

    name: str
    type: Any
    description: str
    keywords: Mapping[str, Any] = attrs.field(factory=dict)  # more JSON Schema; Limit allowed
    where: Literal["query", "header", "path"] = "query"


@attrs.frozen(kw_only=True)
class Operation:
    """What the route table cannot say about a handler; used as a decorator, ``@operation``."""

    responses: Mapping[int, Any]  # status: a type, a model, Page, Raw, Text, {name: type}, None
    body: type | None = None
    params: Sequence[Param] = ()
    errors: Mapping[int, str] = attrs.field(factory=dict)  # status: its codes, comma-separated
    located: Collection[int] = ()  # the statuses that carry a Location header
    stream: Literal["sse", "websocket"] | None = None
    messages: Mapping[str, type] = attrs.field(factory=dict)  # WebSocket ops: name to body

    def __call__(self, handler: H) -> H:
        """Attach this metadata to a route handler, which is otherwise unchanged."""
        setattr(handler, METADATA, self)
        return handler


operation = Operation


def metadata(handler: object) -> Operation | None:
    """The metadata ``@operation`` attached to a handler, if any."""
    meta = getattr(handler, METADATA, None)
    return meta if isinstance(meta, Operation) else None


PAGING = (
    Param("limit", int, "Page size.", {"minimum": 1, "maximum": Limit("max_page_size")}),
    Param("offset", int, "Items to skip.", {"minimum": 0, "maximum": MAX_OFFSET}),
)


def cursors(item: str, after: str, before: str) -> tuple[Param, Param]:
    """The cursor parameters of a list of ``item``s: ``after`` and ``before`` an item's id,
    whose pages hold the ``after`` and ``before`` ones (keyset pages)."""
    shape = {"pattern": f"^{ID_PATTERN.pattern}$", "maxLength": 64}
    also = "; not with before, nor with a non-zero offset"
    return (
        Param(
            "after", str, f"A {item}'s id: the page of the {after} ones next to it{also}.", shape
        ),
        Param("before", str, f"A {item}'s id: the page of the {before} ones next to it.", shape),
    )
