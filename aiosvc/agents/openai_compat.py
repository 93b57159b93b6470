"""The ``openai`` agent: any OpenAI-compatible ``/chat/completions`` endpoint, streamed.

The session's history goes with each request; content deltas come back as Server-Sent Events
(``data: {json}`` lines, ending with ``data: [DONE]``). Every way the upstream can fail (an HTTP
error, a refused connection, a timeout, a cut or malformed stream) fails the reply with a code
and a sentence. The key is read from the environment variable the config names, and never
logged or described.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import aiohttp
import orjson

from aiosvc import __version__
from aiosvc.agents.base import Agent, AgentError, Turn
from aiosvc.agents.upstream_models import list_models
from aiosvc.config import OpenAIAgentConfig
from aiosvc.models import Message, Role

#: How the API's roles map to chat-completions roles (tool results have no call id here).
ROLES = {Role.USER: "user", Role.ASSISTANT: "assistant", Role.SYSTEM: "system", Role.TOOL: "user"}
CONNECT_TIMEOUT_S = 10.0
ERROR_BODY_BYTES = 64 * 1024  # of an error answer, read for its message


class OpenAIAgent(Agent):
    """Streams replies from an OpenAI-compatible chat-completions endpoint."""

    kind = "openai"
    options = frozenset({"model", "system_prompt"})

    def __init__(self, name: str, config: OpenAIAgentConfig) -> None:
        super().__init__(name)
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self._http: aiohttp.ClientSession | None = None

    def describe(self) -> Mapping[str, Any]:
        """Endpoint, model, timeout, and the name (not the value) of the key's variable."""
        return {
            "base_url": self.config.base_url,
            "model": self.config.model,
            "api_key_env": self.config.api_key_env,
            "timeout_s": self.config.timeout_s,
            "system_prompt": self.config.system_prompt,
        }

    async def models(self) -> list[dict[str, Any]]:
        """The upstream's models (``GET {base_url}/models``)."""
        headers = {**self._headers(), "Accept": "application/json"}
        return await list_models(self._session(), self.config.base_url, headers)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                headers={"User-Agent": f"aiosvc/{__version__}"},
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )
        return self._http

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._http is not None:
            await self._http.close()

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.config.api_key_env:
            key = os.environ.get(self.config.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    async def reply(self, turn: Turn) -> AsyncGenerator[str, None]:
        """Send the conversation with the prompt; stream back the content deltas."""
        session = turn.session  # its own model and system prompt win over the agent's
        prompt = (
            self.config.system_prompt if session.system_prompt is None else session.system_prompt
        )
        system = [{"role": "system", "content": prompt}] if prompt else []
        body = {
            "model": session.model or self.config.model,
            "messages": system + conversation(await turn.history(), turn.prompt),
            "stream": True,
        }
        timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT_S, sock_read=self.config.timeout_s
        )
        try:
            async with self._session().post(
                self.url, json=body, headers=self._headers(), timeout=timeout
            ) as response:
                if response.status != 200:
                    raw = await response.content.read(ERROR_BODY_BYTES)
                    raise AgentError(
                        "upstream_http_error",
                        f"{self.url} answered {response.status}: {_error_text(raw)}",
                        url=self.url,
                        upstream_status=response.status,
                    )
                if response.content_type == "application/json":  # a server that won't stream
                    text = _content(orjson.loads(await response.read()), "message")
                    if text:
                        yield text
                    return
                if response.content_type != "text/event-stream":
                    raise AgentError(
                        "malformed_stream",
                        f"{self.url} answered {response.content_type!r}, not an event stream",
                    )
                async for delta in _deltas(response):
                    yield delta
        except aiohttp.ClientConnectorError as exc:
            raise AgentError(
                "upstream_unreachable",
                f"cannot connect to {self.url}: {exc.os_error}",
                url=self.url,
                os_error=os.strerror(exc.os_error.errno) if exc.os_error.errno else str(exc),
            ) from None
        except TimeoutError:
            raise AgentError(
                "upstream_timeout",
                f"{self.url} sent nothing for {self.config.timeout_s:g} s",
                url=self.url,
                timeout_s=self.config.timeout_s,
            ) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise AgentError(
                "upstream_disconnected", f"{self.url} cut the stream: {exc}", url=self.url
            ) from None
        except aiohttp.ClientError as exc:
            raise AgentError("upstream_error", f"{self.url}: {exc}", url=self.url) from None
        except orjson.JSONDecodeError as exc:
            raise AgentError(
                "malformed_stream", f"{self.url} sent malformed JSON: {exc}", url=self.url
            ) from None


def conversation(history: Sequence[Message], prompt: str) -> list[dict[str, str]]:
    """The chat-completions ``messages``: the finished history, then the prompt."""
    messages = [{"role": ROLES[m.role], "content": m.content} for m in history]
    messages.append({"role": "user", "content": prompt})
    return messages


async def _deltas(response: aiohttp.ClientResponse) -> AsyncGenerator[str, None]:
    """Content deltas from the SSE body, until ``[DONE]`` or the end of the body (some
    servers end a stream without ``[DONE]``)."""
    try:
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue  # comments, event names, blank separators
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            chunk = orjson.loads(payload)
            if not isinstance(chunk, dict):
                raise AgentError("malformed_stream", "a stream chunk is not a JSON object")
            if "error" in chunk:
                raise AgentError("upstream_error", _error_text(orjson.dumps(chunk)))
            text = _content(chunk, "delta")
            if text:
                yield text
    except ValueError as exc:  # aiohttp: a line longer than its limit
        if isinstance(exc, orjson.JSONDecodeError):
            raise
        raise AgentError("malformed_stream", f"a stream line was too long: {exc}") from None


def _content(body: Any, key: str) -> str:
    """``choices[0][key].content``, or "" (role-only and finish chunks carry none)."""
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        if isinstance(body, dict) and "choices" in body and not body["choices"]:
            return ""
        raise AgentError("malformed_stream", "a chunk has no choices") from None
    part = choice.get(key) if isinstance(choice, dict) else None
    content = part.get("content") if isinstance(part, dict) else None
    return content if isinstance(content, str) else ""


def _error_text(raw: bytes) -> str:
    """The upstream's error message, from its JSON when it sends some, else its text."""
    try:
        body = orjson.loads(raw)
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        if isinstance(message, str):
            return message[:500]
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return raw[:500].decode("utf-8", errors="replace").strip() or "no details"
