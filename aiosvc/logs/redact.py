"""Secrets kept out of the log: credentials' values in query strings, secret fields and
headers replaced by ``[redacted]``."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_plus

from structlog.typing import EventDict, WrappedLogger

REDACTED = "[redacted]"
SECRET_KEYS = frozenset({"api_key", "token", "ticket", "authorization", "password"})
URL_KEYS = frozenset({"path", "query", "url"})
SECRET_PARAMS = frozenset({"token", "ticket", "api_key"})


def redact_query(text: str, *, whole: bool = False) -> str:
    """``text`` with the values of token/ticket/api_key query parameters replaced.

    ``text`` is a URL or a path with an optional ``?query``; with ``whole`` it may also be a
    bare query string.
    """
    head, sep, query = text.partition("?")
    if not sep:
        if not whole:
            return text
        head, query = "", text
    query, hash_, fragment = query.partition("#")
    params = []
    for param in query.split("&"):  # "&" only: that is how aiohttp (yarl) splits a query
        name, eq, _value = param.partition("=")
        # compare the decoded name: the server would accept "%74oken=" as "token=" too
        if eq and unquote_plus(name).strip().lower() in SECRET_PARAMS:
            param = f"{name}={REDACTED}"
        params.append(param)
    return head + sep + "&".join(params) + hash_ + fragment


HEADER_KEYS = frozenset({"headers"})
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
_WATCHED = SECRET_KEYS | URL_KEYS | HEADER_KEYS


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Processor: hide secret values (api_key, token, ...) and secret query parameters.

    Log keys are snake_case by convention, so a set intersection finds the few that matter:
    every request writes a line, and this keeps the common case to one C-level operation.
    """
    for key in _WATCHED.intersection(event_dict):
        value = event_dict[key]
        if key in SECRET_KEYS:
            event_dict[key] = REDACTED
        elif key in HEADER_KEYS and isinstance(value, Mapping):
            event_dict[key] = {
                name: REDACTED if str(name).lower() in SECRET_HEADERS else item
                for name, item in value.items()
            }
        elif isinstance(value, str) and "=" in value:
            event_dict[key] = redact_query(value, whole=key == "query")
    return event_dict
