"""``aiosvc sessions``: the server's sessions, newest first, as a table (or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime
from typing import Any

import aiohttp
from prompt_toolkit.utils import get_cwidth

from aiosvc.client.api import Api, ApiError, Unreachable
from aiosvc.client.display import terminal_safe
from aiosvc.client.options import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_server_arguments,
    fail,
    server_from,
)

COLUMNS = ("ID", "TITLE", "AGENT", "STATUS", "COMPUTER", "LAST ACTIVITY")
#: Wider titles are cut (with …) so that a row keeps to one line.
TITLE_WIDTH = 40
DEFAULT_LIMIT = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``sessions`` subcommand's arguments to ``parser``."""
    parser.description = (
        "List the sessions, newest first: id, title, agent, status, computer and last "
        "activity (local time). Attach to one with `aiosvc chat ID`."
    )
    add_server_arguments(parser)
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"how many sessions at most (default {DEFAULT_LIMIT}; the server caps a page)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the sessions as the API gives them, as JSON"
    )


def run(args: argparse.Namespace) -> int:
    """List the sessions for parsed arguments; return the exit status."""
    try:
        url, api_key = server_from(args)
        if args.limit < 1:
            raise UsageError(f"--limit: expected a positive number, got {args.limit}")
    except UsageError as exc:
        return fail("sessions", str(exc), EXIT_USAGE)
    return asyncio.run(_list(url, api_key, args.limit, as_json=args.json))


async def _list(url: str, api_key: str | None, limit: int, *, as_json: bool) -> int:
    async with aiohttp.ClientSession() as http:
        api = Api(http, url, api_key)
        try:
            page = await api.call("GET", "/api/v1/sessions", params={"limit": str(limit)})
        except Unreachable as exc:
            return fail("sessions", f"cannot reach {url}: {exc}")
        except ApiError as exc:
            return fail("sessions", f"{exc.message} ({exc.code})")
    sessions: list[dict[str, Any]] = page["data"]
    if as_json:
        # ASCII-only JSON: every control character of a title is a \u escape
        print(json.dumps(sessions, indent=2))
        return EXIT_OK
    print(table([row(session) for session in sessions]))
    total = page.get("total")
    if isinstance(total, int) and total > len(sessions):
        print(f"({len(sessions)} of {total} sessions; --limit shows more)")
    return EXIT_OK


def last_activity(session: dict[str, Any]) -> str:
    """When the session last changed or had a message, in local time, to the second."""
    stamps = [session.get("last_message_at"), session.get("updated_at")]
    times = [_parse_time(stamp) for stamp in stamps if isinstance(stamp, str)]
    known = [time for time in times if time is not None]
    return max(known).astimezone().strftime("%Y-%m-%d %H:%M:%S") if known else "-"


def _parse_time(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp)
    except ValueError:
        return None


def _cell(value: object, width: int | None = None) -> str:
    """A value for one cell: escaped (newlines too), ``-`` when empty, cut to ``width``."""
    text = terminal_safe(str(value), newlines=False) if value not in (None, "") else "-"
    if width is not None and get_cwidth(text) > width:
        while get_cwidth(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text


def row(session: dict[str, Any]) -> tuple[str, ...]:
    """The table's cells for one session."""
    return (
        _cell(session.get("id")),
        _cell(session.get("title"), TITLE_WIDTH),
        _cell(session.get("agent")),
        _cell(session.get("status")),
        _cell(session.get("computer")),
        last_activity(session),
    )


def table(rows: list[tuple[str, ...]]) -> str:
    """The rows under :data:`COLUMNS`, each column as wide as its widest cell."""
    everything = [COLUMNS, *rows]
    widths = [max(get_cwidth(r[i]) for r in everything) for i in range(len(COLUMNS))]
    lines = []
    for cells in everything:
        padded = [c + " " * (w - get_cwidth(c)) for c, w in zip(cells, widths, strict=True)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)
