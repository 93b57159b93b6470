"""Routes for approvals: list, resolve, and ask on behalf of a program outside the daemon."""

from __future__ import annotations

from aiohttp import web

from aiosvc.commands.types import RequestApproval, ResolveApproval
from aiosvc.convert import unstructure
from aiosvc.models import Approval, ApprovalStatus
from aiosvc.web import params, remote
from aiosvc.web.bodies import ApprovalCreate, ApprovalDecision
from aiosvc.web.keys import CACHE, COMMAND_SERVICE, PEERS, SETTINGS
from aiosvc.web.operation import PAGING, Page, Param, operation
from aiosvc.web.responses import ok, page

routes = web.RouteTableDef()
BASE = "/api/v1/approvals"


@routes.get(BASE)
@operation(
    responses={200: Page(Approval)},
    params=[
        *PAGING,
        Param("status", ApprovalStatus, "Only approvals in this state."),
        Param("session_id", str, "Only this session's.", {"minLength": 1, "maxLength": 64}),
    ],
)
async def list_approvals(request: web.Request) -> web.Response:
    """Approvals, newest first, filtered by status and session (another computer's session:
    asked of it); with peers and no session, theirs too."""
    session_id = request.query.get("session_id")
    if session_id is not None and remote.merging(request):
        found = request.app[PEERS].find(session_id)
        if found is not None and request.app[CACHE].session(session_id) is None:
            return await remote.forwarded(request, found[0])
    most = request.app[SETTINGS].config.limits.max_page_size
    limit, offset = params.paging(request, most)
    status = params.choice(request, "status", ApprovalStatus)
    approvals = request.app[CACHE].approvals(
        status=status, session_id=params.text(request, "session_id", 64)
    )
    if session_id is None and remote.merging(request):
        merged = [unstructure(a) for a in approvals]
        merged += await remote.peers_approvals(request, status, most)
        merged.sort(key=lambda a: str(a.get("created_at")), reverse=True)
        return page(merged, limit=limit, offset=offset)
    return page(approvals, limit=limit, offset=offset)


@routes.post(BASE)
@operation(
    body=ApprovalCreate,
    responses={201: Approval, 200: Approval},
    located={201},
    params=[Param("wait", bool, "Answer 200 once it is approved, denied or expired.")],
    errors={404: "not_found"},  # the session_id it names
)
async def create_approval(request: web.Request) -> web.Response:
    """Ask a person about an external program's tool call: 201 pending, or with
    ``?wait=true`` 200 once it is resolved or expired."""
    wait = params.boolean(request, "wait")
    body = await params.body(request, ApprovalCreate)
    service = request.app[COMMAND_SERVICE]
    approval = await service.execute(
        RequestApproval(
            tool=body.tool, input=body.input, session_id=body.session_id, timeout_s=body.timeout_s
        )
    )
    if wait:
        # The approval outlives this request: a client that leaves changes nothing.
        return ok(await service.wait_for_approval(approval.id))
    return ok(approval, status=201, headers={"Location": f"{BASE}/{approval.id}"})


@routes.get(BASE + "/{id}")
@operation(responses={200: Approval})
async def get_approval(request: web.Request) -> web.Response:
    """One approval."""
    return ok(request.app[CACHE].require_approval(request.match_info["id"]))


@routes.post(BASE + "/{id}")
@operation(
    body=ApprovalDecision,
    responses={200: Approval},
    errors={409: "already_resolved", 503: "peer_unavailable"},
)
async def resolve_approval(request: web.Request) -> web.Response:
    """Approve or deny a pending approval (``remember``: for the rest of its session); a
    resolved one is 409."""
    approval_id = request.match_info["id"]
    if request.app[CACHE].approval(approval_id) is None:
        answered = await remote.forwarded_approval(request)  # another computer's, maybe
        if answered is not None:
            return answered
    request.app[CACHE].require_approval(approval_id)  # 404 before the body is read
    body = await params.body(request, ApprovalDecision)
    approval = await request.app[COMMAND_SERVICE].execute(
        ResolveApproval(approval_id=approval_id, decision=body.decision, remember=body.remember)
    )
    return ok(approval)
