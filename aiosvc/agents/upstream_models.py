"""Listing the models of an OpenAI-compatible upstream (``GET {base_url}/models``).

Whatever goes wrong (refused, timed out, an error status, a body that is not a model list)
is one :class:`~aiosvc.errors.UpstreamError` saying what, never a crash.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from aiosvc.agents.output import clean_text
from aiosvc.errors import UpstreamError

#: How long listing may take, and how much of an answer is read.
TIMEOUT_S = 15.0
MAX_BODY_BYTES = 4 * 1024 * 1024


async def list_models(
    http: aiohttp.ClientSession, base_url: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """``[{"id", "owned_by"}]`` of every model the upstream lists, sorted by id."""
    url = base_url.rstrip("/") + "/models"
    try:
        async with http.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
        ) as response:
            raw = await response.content.read(MAX_BODY_BYTES)
            if response.status != 200:
                raise UpstreamError(
                    f"{url} answered {response.status}",
                    details={"url": url, "upstream_status": response.status},
                )
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{url}: {exc}", details={"url": url}) from None
    except TimeoutError:
        raise UpstreamError(
            f"{url} did not answer within {TIMEOUT_S:g} s", details={"url": url}
        ) from None
    try:
        listed = orjson.loads(raw)["data"]
        models = [
            {"id": clean_text(m["id"]), "owned_by": _text(m.get("owned_by"))}
            for m in listed
            if isinstance(m["id"], str)
        ]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise UpstreamError(f"{url} did not answer a model list", details={"url": url}) from None
    return sorted(models, key=lambda m: m["id"])


def _text(value: Any) -> str | None:
    return clean_text(value) if isinstance(value, str) else None
