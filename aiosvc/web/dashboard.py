"""The dashboard's files: ``GET /`` (its page) and ``GET /static/{name}``, from memory.

The files ship inside the package (``aiosvc/static/``) and are read once, when this module is
imported, with a strong ``ETag`` each (a digest of the bytes). Every answer says
``Cache-Control: no-cache``: a browser keeps the files and asks again with ``If-None-Match``,
which costs a ``304`` without a body; a new release is picked up at the next load, without
hashed names in the page. Every answer also carries the page's security headers: a
Content-Security-Policy that allows no inline script or style, ``nosniff``, no referrer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

import attrs
from aiohttp import hdrs, web

from aiosvc.errors import NotFound
from aiosvc.web.operation import Param, Text, operation

routes = web.RouteTableDef()

#: The page and the files it loads.
INDEX = "index.html"
#: The names the static route serves (no directories, no dotfiles).
NAME_PATTERN = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}"
CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
#: What every answer of these routes carries besides its own ``ETag`` and type.
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    hdrs.CACHE_CONTROL: "no-cache",
}


@attrs.frozen
class StaticFile:
    """One file, as it is served."""

    body: bytes
    content_type: str
    digest: str  # the ETag's value

    def headers(self) -> dict[str, str]:
        """The headers of an answer with this file (or of its ``304``)."""
        return {**SECURITY_HEADERS, hdrs.ETAG: f'"{self.digest}"'}


def load(package: str = "aiosvc", folder: str = "static") -> dict[str, StaticFile]:
    """Read every file of the package's ``folder`` whose type is known."""
    found = {}
    for entry in (resources.files(package) / folder).iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or entry.name.startswith(".") or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:32]
        found[entry.name] = StaticFile(body, CONTENT_TYPES[suffix], digest)
    return found


FILES = load()


def _answer(request: web.Request, name: str) -> web.Response:
    """The file, or ``304`` when the browser's copy is current."""
    found = FILES.get(name)
    if found is None:
        raise NotFound(f"no file {name!r} in the dashboard")
    if any(tag.value in (found.digest, "*") for tag in request.if_none_match or ()):
        return web.Response(status=304, headers=found.headers())
    response = web.Response(body=found.body, headers=found.headers())
    response.headers[hdrs.CONTENT_TYPE] = found.content_type
    return response


FILE_ANSWERS: dict[int, Any] = {200: Text("text/html"), 304: None}
#: The other types of the files (their media types, without parameters).
ASSET_TYPES = tuple(
    sorted({t.partition(";")[0] for t in CONTENT_TYPES.values()} - {"text/javascript"})
)


@routes.get("/", public=True)
@operation(responses=FILE_ANSWERS)
async def dashboard(request: web.Request) -> web.Response:
    """The dashboard's page (open without a key: it signs in itself)."""
    return _answer(request, INDEX)


@routes.get("/static/{name:" + NAME_PATTERN + "}", public=True)
@operation(
    responses={200: Text("text/javascript", also=ASSET_TYPES), 304: None},
    params=[
        Param(
            "name",
            str,
            "A file of the dashboard (its script, style sheet, icons).",
            {"pattern": f"^{NAME_PATTERN}$"},
            where="path",
        )
    ],
)
async def static_file(request: web.Request) -> web.Response:
    """One of the dashboard's files (open without a key)."""
    return _answer(request, request.match_info["name"])
