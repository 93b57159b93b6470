"""Routes for the computers: this machine and its peers."""

from __future__ import annotations

from aiohttp import web

from aiosvc.peers.computers import Computer
from aiosvc.peers.link import PEER_HEADER
from aiosvc.web import params
from aiosvc.web.keys import COMPUTERS, SETTINGS
from aiosvc.web.operation import PAGING, Page, operation
from aiosvc.web.responses import page

routes = web.RouteTableDef()


@routes.get("/api/v1/computers")
@operation(responses={200: Page(Computer)}, params=PAGING)
async def list_computers(request: web.Request) -> web.Response:
    """This machine, then its peers, with their state and session counts."""
    limit, offset = params.paging(request, request.app[SETTINGS].config.limits.max_page_size)
    here = str(request.url.origin())  # the address this client reached us at
    computers = request.app[COMPUTERS]
    if PEER_HEADER in request.headers:  # a peer asks: this machine alone (no circles)
        return page([computers.here(here)], limit=limit, offset=offset)
    return page(await computers.describe(here), limit=limit, offset=offset)
