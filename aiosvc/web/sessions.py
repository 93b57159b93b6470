"""Routes for sessions and their messages: parse, call the command service or cache, answer."""

from __future__ import annotations

from aiohttp import web

from aiosvc.commands.types import (
    CancelReplies,
    CreateSession,
    DeleteSession,
    EndSession,
    SendMessage,
    UpdateSession,
)
from aiosvc.models import Message, Session, SessionStatus
from aiosvc.rules import MAX_FILTER_CHARS
from aiosvc.web import params, remote
from aiosvc.web.bodies import MessageCreate, SessionCreate, SessionPatch
from aiosvc.web.keys import CACHE, COMMAND_SERVICE, FIRST_PAGE, SETTINGS
from aiosvc.web.operation import PAGING, Page, Param, cursors, operation
from aiosvc.web.responses import JSON, cursor_page, ok, raw_ok

routes = web.RouteTableDef()
BASE = "/api/v1/sessions"
FILTER = {"minLength": 1, "maxLength": MAX_FILTER_CHARS}
#: What a request about another computer's session may answer beyond its own errors.
REMOTE = {503: "peer_unavailable"}


def session_from_path(request: web.Request) -> Session:
    """The session named by the route's ``{id}``, or 404."""
    return request.app[CACHE].require_session(request.match_info["id"])


@routes.get(BASE)
@operation(
    responses={200: Page(Session, cursors=True)},
    params=[
        *PAGING,
        *cursors("session", after="older", before="newer"),
        Param("status", SessionStatus, "Only sessions in this state."),
        Param("project", str, "Only this project's sessions.", FILTER),
        Param("computer", str, "Only this computer's.", FILTER),
    ],
)
async def list_sessions(request: web.Request) -> web.Response:
    """List sessions, newest first, filtered by status, project and computer."""
    app = request.app
    max_limit = app[SETTINGS].config.limits.max_page_size
    merge = remote.merging(request)
    if not request.query_string and not merge:  # the common case, served from one cached body
        body = app[FIRST_PAGE].body(params.default_limit(max_limit))
        return web.Response(body=body, content_type=JSON)
    cache = app[CACHE]
    window = params.window(request, max_limit)
    filters = {
        name: value
        for name, value in (
            ("status", params.choice(request, "status", SessionStatus)),
            ("project", params.text(request, "project")),
            ("computer", params.text(request, "computer")),
        )
        if value is not None
    }
    if merge:
        merged = await remote.merged_list(request, filters, window)
        if merged is not None:
            return merged
    return cursor_page(await cache.sessions_page(filters, window), limit=window.limit)


@routes.post(BASE)
@operation(
    body=SessionCreate,
    responses={201: Session},
    located={201},
    errors={422: "unknown_agent, unsupported_option"},
)
async def create_session(request: web.Request) -> web.Response:
    """Create a session; answers 201 with its ``Location``."""
    body = await params.body(request, SessionCreate)
    session = await request.app[COMMAND_SERVICE].execute(
        CreateSession(
            title=body.title,
            agent=body.agent,
            project=body.project,
            model=body.model,
            system_prompt=body.system_prompt,
        )
    )
    return ok(session, status=201, headers={"Location": f"{BASE}/{session.id}"})


@routes.get(BASE + "/{id}")
@operation(responses={200: Session})
async def get_session(request: web.Request) -> web.Response:
    """One session (another computer's: as its list last said)."""
    found = remote.remote_session(request)
    if found is not None:
        link, session = found
        kept = await link.current_sessions()  # fetched again behind this read if too old
        session = kept.get(session.id) or session
        return raw_ok(session.shown(stale=not link.online))
    return raw_ok(request.app[CACHE].json(session_from_path(request)))


@routes.patch(BASE + "/{id}")
@operation(
    body=SessionPatch, responses={200: Session}, errors={**REMOTE, 422: "unsupported_option"}
)
async def patch_session(request: web.Request) -> web.Response:
    """Change a session's title, model or system prompt (the fields given)."""
    found = remote.remote_session(request)
    if found is not None:
        return await remote.forwarded_write(request, found)
    session_id = session_from_path(request).id
    body, given = await params.body_and_keys(request, SessionPatch)
    return ok(
        await request.app[COMMAND_SERVICE].execute(
            UpdateSession(
                session_id=session_id,
                given=given,
                title=body.title,
                model=body.model,
                system_prompt=body.system_prompt,
            )
        )
    )


@routes.post(BASE + "/{id}/end")
@operation(responses={200: Session}, errors=REMOTE)
async def end_session(request: web.Request) -> web.Response:
    """End a session; its history stays."""
    found = remote.remote_session(request)
    if found is not None:
        return await remote.forwarded_write(request, found)
    session_id = session_from_path(request).id
    return ok(await request.app[COMMAND_SERVICE].execute(EndSession(session_id=session_id)))


@routes.delete(BASE + "/{id}")
@operation(responses={204: None}, errors=REMOTE)
async def delete_session(request: web.Request) -> web.Response:
    """Delete a session and everything in it."""
    found = remote.remote_session(request)
    if found is not None:
        return await remote.forwarded_write(request, found)
    session_id = session_from_path(request).id
    await request.app[COMMAND_SERVICE].execute(DeleteSession(session_id=session_id))
    return web.Response(status=204)


@routes.get(BASE + "/{id}/messages")
@operation(
    responses={200: Page(Message, cursors=True)},
    params=[*PAGING, *cursors("message", after="newer", before="older")],
    errors=REMOTE,
)
async def list_messages(request: web.Request) -> web.Response:
    """A session's history, oldest first (another computer's: asked of it)."""
    found = remote.remote_session(request)
    if found is not None:
        return await remote.forwarded(request, found[0])
    session = session_from_path(request)
    window = params.window(request, request.app[SETTINGS].config.limits.max_page_size)
    page = await request.app[CACHE].history_page(session, window)
    return cursor_page(page, limit=window.limit)


@routes.post(BASE + "/{id}/messages")
@operation(
    body=MessageCreate,
    responses={202: {"message": Message, "reply_id": str, "command_id": str}, 200: Message},
    located={202},
    params=[Param("wait", bool, "Answer 200 with the finished reply instead of 202.")],
    errors={409: "session_ended", **REMOTE},
)
async def send_message(request: web.Request) -> web.Response:
    """Send a message: 202 once it is stored, or with ``?wait=true`` 200 with the reply."""
    found = remote.remote_session(request)
    if found is not None:
        return await remote.forwarded_write(request, found)
    session_id = session_from_path(request).id
    wait = params.boolean(request, "wait")
    body = await params.body(request, MessageCreate)
    accepted = await request.app[COMMAND_SERVICE].execute(
        SendMessage(session_id=session_id, content=body.content)
    )
    if wait:
        return ok(await accepted.reply)
    return ok(
        {
            "message": accepted.message,
            "reply_id": accepted.reply_id,
            "command_id": accepted.command_id,
        },
        status=202,
        headers={"Location": f"/api/v1/commands/{accepted.command_id}"},
    )


@routes.post(BASE + "/{id}/cancel")
@operation(responses={202: {"session_id": str, "cancelled": list[str]}}, errors=REMOTE)
async def cancel_reply(request: web.Request) -> web.Response:
    """Stop the running reply and drop queued ones."""
    found = remote.remote_session(request)
    if found is not None:
        return await remote.forwarded_write(request, found)
    session_id = session_from_path(request).id
    cancelled = await request.app[COMMAND_SERVICE].execute(CancelReplies(session_id=session_id))
    return ok(
        {"session_id": cancelled.session_id, "cancelled": list(cancelled.cancelled)}, status=202
    )
