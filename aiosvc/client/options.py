"""Which server a client command talks to: ``--url`` and ``--api-key``, or the environment."""

from __future__ import annotations

import argparse
import os
import sys

from aiosvc.client.api import check_base_url
from aiosvc.client.display import terminal_safe

DEFAULT_URL = "http://127.0.0.1:8420"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Arguments that do not make sense together (exit status 2)."""


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--url`` and ``--api-key`` to ``parser``."""
    parser.add_argument("--url", help=f"the server (default: $AIOSVC_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", help="API key (default: $AIOSVC_API_KEY)")


def server_from(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> tuple[str, str | None]:
    """The server's base URL and the API key, from flags then the environment."""
    env = dict(os.environ) if env is None else env
    try:
        url = check_base_url(args.url or env.get("AIOSVC_URL") or DEFAULT_URL)
    except ValueError as exc:
        raise UsageError(f"--url: {exc}") from None
    return url, args.api_key or env.get("AIOSVC_API_KEY") or None


def fail(command: str, message: str, code: int = EXIT_FAILED) -> int:
    """Say ``aiosvc COMMAND: message`` on stderr; return ``code``."""
    # the message may quote the server's words: never let them act on the terminal, nor
    # start a line that would pass for another of ours
    shown = terminal_safe(message, newlines=False)
    print(f"aiosvc {command}: {shown}", file=sys.stderr, flush=True)
    return code
