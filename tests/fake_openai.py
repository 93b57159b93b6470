"""A small OpenAI-compatible chat-completions server for the ``openai`` agent's tests.

``POST /v1/chat/completions`` answers like the real thing: with ``stream: true`` a
``text/event-stream`` of ``data: {chunk}`` events (a role chunk, content deltas, a finish chunk,
``data: [DONE]``), each written on its own. What it does is chosen by the request's ``model``:

==============  ===============================================================================
``echo``        streams ``you said: <last user message>`` in several deltas
``history``     streams a JSON dump of the received messages' roles and contents
``slow``        streams one delta (``thinking``), then waits until the client goes away (or
                :data:`SLOW_WAIT_S` pass)
``http500``     500 with an OpenAI error body (``model overloaded``)
``http401``     401 with an OpenAI error body
``malformed``   one delta, then an event whose data is not JSON
``cut``         one delta, then aborts the connection
``nodone``      deltas, then the body ends without a finish chunk or ``[DONE]``
``nonstream``   ``application/json``: a whole, non-streamed completion
``html``        200 ``text/html``: not a completion at all
``errorchunk``  one delta, then an in-stream ``data: {"error": {...}}``
``tools``       tool calls, streamed as real servers do: the calls the last user message
                asks for (JSON ``{"calls": [{"name", "arguments"}], "interleave"?}``; each
                call's ``arguments`` a text, sent in pieces of :data:`ARG_PIECE` characters,
                several calls' pieces interleaved when ``interleave`` is true); once the
                last message is a tool result, it answers :func:`tools_answer` of the results
``tools-loop``  the same calls again in every round that offers tools; without tools, text
==============  ===============================================================================

With ``stream_options.include_usage`` every stream ends with a usage chunk (``choices: []``)
of :func:`usage_of` the request.

Any other model is a 404 ``model_not_found``. ``GET /v1/models`` lists the models above (and
records its request too). Every request is recorded (headers, JSON body, and
how its handler ended) in :attr:`FakeOpenAI.requests`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

ECHO_PREFIX = "you said: "
SLOW_FIRST = "thinking"
#: How long the ``slow`` model waits for its client to leave before giving up on it.
SLOW_WAIT_S = 60.0
#: Between two streamed events, so that they leave as separate writes.
PAUSE_S = 0.005
NONSTREAM_TEXT = "a whole reply, not streamed"
NODONE_PARTS = ("no ", "done ", "marker")
PARTIAL = "partial "
HTTP500_MESSAGE = "model overloaded"
HTTP401_MESSAGE = "Incorrect API key provided"
ERROR_CHUNK_MESSAGE = "boom"
#: A tool call's arguments are streamed in pieces of this many characters.
ARG_PIECE = 3
TOOLS_ANSWER_PREFIX = "results: "
LOOP_DONE = "no more tools"


@dataclass(eq=False)
class Recorded:
    """One request the fake received, and how its handler ended."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body: Any
    #: "" while it runs, then "completed", "client_gone" (the client closed the connection),
    #: "aborted" (the fake cut it), "cancelled" (the server cancelled the handler while the
    #: client was still there), "server_closed" or "gave_up" (``slow`` waited SLOW_WAIT_S).
    outcome: str = ""
    #: The content deltas it sent, in order.
    sent: list[str] = field(default_factory=list)
    #: ``time.time()`` when the last piece of its tool calls, and when ``[DONE]``, was written.
    calls_sent_at: float | None = None
    done_at: float | None = None
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    response: web.StreamResponse | None = field(default=None, repr=False)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def completion_id(self) -> str:
        return f"chatcmpl-fake{id(self):x}"

    @property
    def model(self) -> Any:
        return self.body.get("model") if isinstance(self.body, dict) else None


Behaviour = Callable[[web.Request, Recorded], Awaitable[web.StreamResponse]]


class FakeOpenAI:
    """The fake endpoint: build its app with :meth:`app`, serve it on loopback, read
    :attr:`requests` afterwards."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._closing = asyncio.Event()
        self._behaviours: dict[str, Behaviour] = {
            "echo": self._echo,
            "history": self._history,
            "slow": self._slow,
            "http500": self._http500,
            "http401": self._http401,
            "malformed": self._malformed,
            "cut": self._cut,
            "nodone": self._nodone,
            "nonstream": self._nonstream,
            "html": self._html,
            "errorchunk": self._errorchunk,
            "tools": self._tools,
            "tools-loop": self._tools_loop,
        }

    def app(self) -> web.Application:
        """The aiohttp application serving ``POST /v1/chat/completions``."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_get("/v1/models", self._models)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def of_model(self, model: str) -> list[Recorded]:
        """The recorded requests that asked for ``model``, oldest first."""
        return [r for r in self.requests if r.model == model]

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()  # a waiting ``slow`` handler stops now

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        record = Recorded(
            method=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            body=body,
        )
        self.requests.append(record)
        try:
            if not isinstance(body, dict):
                return _error(400, "the body is not a JSON object", "invalid_request_error")
            behaviour = self._behaviours.get(str(body.get("model")))
            if behaviour is None:
                return _error(
                    404,
                    f"The model {body.get('model')!r} does not exist",
                    "invalid_request_error",
                    code="model_not_found",
                )
            response = await behaviour(request, record)
            record.outcome = record.outcome or "completed"
            return response
        except ConnectionError:  # a write found the client gone (a server that doesn't cancel)
            if record.response is None or not _client_gone(request):
                raise
            record.outcome = "client_gone"
            record.client_gone.set()
            return record.response  # aiohttp ignores that it can't finish it
        except asyncio.CancelledError:  # a test server cancels the handler when the client leaves
            if record.outcome != "aborted":
                record.outcome = "client_gone" if _client_gone(request) else "cancelled"
                if record.outcome == "client_gone":
                    record.client_gone.set()
            raise
        finally:
            record.finished.set()

    async def _models(self, request: web.Request) -> web.StreamResponse:
        record = Recorded(request.method, request.path, CIMultiDict(request.headers), None)
        self.requests.append(record)
        models = [{"id": m, "object": "model", "owned_by": "fake"} for m in self._behaviours]
        record.outcome = "completed"
        return web.json_response({"object": "list", "data": models})

    # ---- streaming helpers

    def _chunk(self, record: Recorded, delta: dict[str, Any], finish: str | None = None) -> bytes:
        """One ``chat.completion.chunk`` event, as the real API writes it."""
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if finish is not None:
            choice["finish_reason"] = finish
        chunk = {
            "id": record.completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": record.model,
            "choices": [choice],
        }
        return _event(json.dumps(chunk))

    async def _start(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        record.response = response
        await self._write(response, self._chunk(record, {"role": "assistant"}))
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        await response.write(data)  # drains when the transport's buffer is full
        await asyncio.sleep(PAUSE_S)

    async def _content(self, response: web.StreamResponse, record: Recorded, text: str) -> None:
        await self._write(response, self._chunk(record, {"content": text}))
        record.sent.append(text)

    async def _stream(
        self, request: web.Request, record: Recorded, parts: Iterator[str] | tuple[str, ...]
    ) -> web.StreamResponse:
        """A whole, well-formed stream of ``parts``."""
        response = await self._start(request, record)
        for part in parts:
            await self._content(response, record, part)
        await self._end(response, record, "stop")
        return response

    async def _end(self, response: web.StreamResponse, record: Recorded, finish: str) -> None:
        """The finish chunk, the usage chunk when asked for, ``[DONE]``."""
        await self._write(response, self._chunk(record, {}, finish=finish))
        options = record.body.get("stream_options") or {}
        if options.get("include_usage"):
            chunk = {
                "id": record.completion_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": record.model,
                "choices": [],
                "usage": usage_of(record.body),
            }
            await self._write(response, _event(json.dumps(chunk)))
        record.done_at = time.time()
        await self._write(response, _event("[DONE]"))
        await response.write_eof()

    async def _wait_for_client_to_leave(self, request: web.Request, record: Recorded) -> None:
        """Until the client closes the connection (a test server cancels the handler then; any
        other server is noticed by polling), the server shuts down, or SLOW_WAIT_S pass."""
        deadline = asyncio.get_running_loop().time() + SLOW_WAIT_S
        while not self._closing.is_set() and asyncio.get_running_loop().time() < deadline:
            if _client_gone(request):
                record.outcome = "client_gone"
                record.client_gone.set()
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.02):
                    await self._closing.wait()
        record.outcome = "server_closed" if self._closing.is_set() else "gave_up"

    # ---- behaviours, by model

    async def _echo(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        said = last_user_message(record.body)
        return await self._stream(request, record, echo_parts(said))

    async def _history(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        return await self._stream(request, record, _pieces(history_dump(record.body), 16))

    async def _slow(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        response = await self._start(request, record)
        await self._content(response, record, SLOW_FIRST)
        await self._wait_for_client_to_leave(request, record)
        return response

    async def _http500(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        return _error(500, HTTP500_MESSAGE, "server_error")

    async def _http401(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        return _error(401, HTTP401_MESSAGE, "invalid_request_error", code="invalid_api_key")

    async def _malformed(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        response = await self._start(request, record)
        await self._content(response, record, PARTIAL)
        await self._write(response, _event('{"choices": [{"index": 0, "delta": {"content": '))
        await self._write(response, _event("[DONE]"))
        await response.write_eof()
        return response

    async def _cut(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        response = await self._start(request, record)
        await self._content(response, record, PARTIAL)
        transport = request.transport
        assert transport is not None
        record.outcome = "aborted"
        transport.abort()
        return response  # aiohttp ignores that it can't finish it on a dead socket

    async def _nodone(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        response = await self._start(request, record)
        for part in NODONE_PARTS:
            await self._content(response, record, part)
        await response.write_eof()
        return response

    async def _nonstream(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        return web.json_response(
            {
                "id": record.completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": record.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": NONSTREAM_TEXT},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
            }
        )

    async def _html(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        # A proxy's login page, say: 200, but no completion at all.
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    async def _tools(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        messages = record.body.get("messages", ())
        if messages and messages[-1].get("role") == "tool":
            answer = tools_answer(record.body)
            # (in at most 64 pieces: a 64 KiB tool output is not 4,000 paced writes)
            return await self._stream(request, record, _pieces(answer, max(16, len(answer) // 64)))
        return await self._calls(request, record)

    async def _tools_loop(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        if not record.body.get("tools"):
            return await self._stream(request, record, (LOOP_DONE,))
        return await self._calls(request, record)

    async def _calls(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        """Stream the calls the last user message asks for, pieces of arguments apart."""
        try:
            spec = json.loads(last_user_message(record.body))
            calls = spec["calls"]
        except (ValueError, KeyError, TypeError):
            return await self._echo(request, record)
        response = await self._start(request, record)
        rounds = sum(1 for m in record.body.get("messages", ()) if m.get("role") == "assistant")
        pieces: list[list[dict[str, Any]]] = []
        for index, call in enumerate(calls):
            first = {
                "index": index,
                "id": f"call_{rounds}_{index}",
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            rest = [
                {"index": index, "function": {"arguments": part}}
                for part in _pieces(call["arguments"], ARG_PIECE)
            ]
            pieces.append([first, *rest])
        if spec.get("interleave"):
            order = [p for group in itertools.zip_longest(*pieces) for p in group if p]
        else:
            order = [p for group in pieces for p in group]
        for piece in order:
            await self._write(response, self._chunk(record, {"tool_calls": [piece]}))
        record.calls_sent_at = time.time()
        await self._end(response, record, "tool_calls")
        return response

    async def _errorchunk(self, request: web.Request, record: Recorded) -> web.StreamResponse:
        response = await self._start(request, record)
        await self._content(response, record, PARTIAL)
        error = {"error": {"message": ERROR_CHUNK_MESSAGE, "type": "server_error"}}
        await self._write(response, _event(json.dumps(error)))
        await response.write_eof()
        return response


# ---- what the behaviours answer, for the tests to compare with


def last_user_message(body: Any) -> str:
    """The content of the last ``user`` message of a chat-completions request body."""
    users = [m for m in body.get("messages", ()) if m.get("role") == "user"]
    return str(users[-1]["content"]) if users else ""


def echo_parts(said: str) -> tuple[str, ...]:
    """The deltas the ``echo`` model streams for ``said``."""
    return (ECHO_PREFIX, *_pieces(said, 4))


def echo_reply(said: str) -> str:
    """The whole reply of the ``echo`` model to ``said``."""
    return "".join(echo_parts(said))


def history_dump(body: Any) -> str:
    """The ``history`` model's reply: the received messages' roles and contents as JSON."""
    messages = body.get("messages", ())
    return json.dumps([{"role": m.get("role"), "content": m.get("content")} for m in messages])


def tools_answer(body: Any) -> str:
    """The ``tools`` model's answer once it has results: their contents, in order."""
    results = [m.get("content") for m in body.get("messages", ()) if m.get("role") == "tool"]
    return TOOLS_ANSWER_PREFIX + json.dumps(results)


def usage_of(body: Any) -> dict[str, int]:
    """The usage the fake reports for a request: one prompt token per message, 7 out."""
    prompt = len(body.get("messages", ()))
    return {"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7}


def _pieces(text: str, size: int) -> tuple[str, ...]:
    return tuple(text[i : i + size] for i in range(0, len(text), size))


def _event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


def _error(status: int, message: str, kind: str, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
    )


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
