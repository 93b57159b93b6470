"""The ``openai`` agent: any OpenAI-compatible ``/chat/completions`` endpoint, streamed.

The session's history goes with each request; content deltas come back as Server-Sent Events
(``data: {json}`` lines, ending with ``data: [DONE]``), read by :mod:`.openai_stream`. Tools
the agent is configured with are offered as functions and their calls run by
:mod:`.openai_tools`, round after round. Every way the upstream can fail (an HTTP
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
from aiosvc.agents.openai_stream import Round, chunks, error_text
from aiosvc.agents.openai_tools import Toolbox, run_call
from aiosvc.agents.tools import McpManager
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

    def __init__(
        self, name: str, config: OpenAIAgentConfig, tools: McpManager | None = None
    ) -> None:
        super().__init__(name)
        self.config = config
        self.tools = tools or McpManager({})
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
            "tools": list(self.config.tools),
            "auto_approve": list(self.config.auto_approve),
            "max_tool_rounds": self.config.max_tool_rounds,
            "tool_timeout_s": self.config.tool_timeout_s,
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
        """Send the conversation with the prompt; stream back the content deltas. With tools,
        each round's calls are run and answered, and the model asked again, until it answers
        without calls; after ``max_tool_rounds`` rounds it is asked once more without tools."""
        config = self.config
        session = turn.session  # its own model and system prompt win over the agent's
        prompt = config.system_prompt if session.system_prompt is None else session.system_prompt
        system = [{"role": "system", "content": prompt}] if prompt else []
        messages: list[dict[str, Any]] = system + conversation(await turn.history(), turn.prompt)
        specs = self.tools.tools(config.tools) if config.tools else []
        toolbox = Toolbox.of(specs)
        recorder = turn.recorder
        for round_number in range(config.max_tool_rounds + 1):
            body: dict[str, Any] = {
                "model": session.model or config.model,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            offered = toolbox.by_function and recorder is not None
            if offered and round_number < config.max_tool_rounds:
                body["tools"] = toolbox.definitions()
            outcome = Round()
            text: list[str] = []
            async for delta in self._completion(body, outcome):
                text.append(delta)
                yield delta
            if outcome.usage is not None and recorder is not None:
                recorder.usage(*outcome.usage)
            calls = outcome.ordered()
            # Past the last round the calls go unanswered: the model was asked for its answer.
            # An agent without tools ignores calls; one whose servers are all down answers
            # them (unknown tool), so that the model can tell the user.
            last = round_number >= config.max_tool_rounds
            if not calls or recorder is None or not config.tools or last:
                return
            for call in calls:
                call.id = call.id or f"call_{round_number}_{call.index}"
            messages.append(
                {
                    "role": "assistant",
                    "content": "".join(text) or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in calls
                    ],
                }
            )
            for call in calls:
                answer = await run_call(
                    call,
                    toolbox,
                    turn,
                    recorder,
                    self.tools,
                    auto_approve=config.auto_approve,
                    timeout_s=config.tool_timeout_s,
                )
                messages.append({"role": "tool", "tool_call_id": call.id, "content": answer})

    async def _completion(self, body: dict[str, Any], outcome: Round) -> AsyncGenerator[str, None]:
        """One streamed completion: its content deltas; its tool calls and usage into
        ``outcome``."""
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
                        f"{self.url} answered {response.status}: {error_text(raw)}",
                        url=self.url,
                        upstream_status=response.status,
                    )
                if response.content_type == "application/json":  # a server that won't stream
                    whole = orjson.loads(await response.read())
                    text = _content(whole, "message")
                    if isinstance(whole, dict):
                        outcome.take({"choices": [], "usage": whole.get("usage")})
                    if text:
                        yield text
                    return
                if response.content_type != "text/event-stream":
                    raise AgentError(
                        "malformed_stream",
                        f"{self.url} answered {response.content_type!r}, not an event stream",
                    )
                async for chunk in chunks(response):
                    delta = outcome.take(chunk)
                    if delta:
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


def conversation(history: Sequence[Message], prompt: str) -> list[dict[str, Any]]:
    """The chat-completions ``messages``: the finished history, then the prompt."""
    messages: list[dict[str, Any]] = [
        {"role": ROLES[m.role], "content": m.content} for m in history
    ]
    messages.append({"role": "user", "content": prompt})
    return messages


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
