"""``aiosvc tui [SESSION]``: a full-screen terminal client over the WebSocket.

This module is what the command line imports: the application (and Textual) are imported
only when the command runs, so the other commands start as fast as before.
"""

from __future__ import annotations

import argparse
import os
import sys

from aiosvc.client.api import check_base_url
from aiosvc.client.display import terminal_safe

DEFAULT_URL = "http://127.0.0.1:8420"
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``tui`` subcommand's arguments to ``parser``."""
    parser.description = (
        "Every session of the daemon, live: open one, send messages, approve tools. "
        "With SESSION, open that session."
    )
    parser.add_argument("session", nargs="?", metavar="SESSION", help="open this session")
    parser.add_argument("--url", help=f"the server (default: $AIOSVC_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", help="API key (default: $AIOSVC_API_KEY)")


def run(args: argparse.Namespace) -> int:
    """Run the application for parsed arguments; return the exit status."""
    try:
        url = check_base_url(args.url or os.environ.get("AIOSVC_URL") or DEFAULT_URL)
    except ValueError as exc:
        print(f"aiosvc tui: --url: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.session is not None and not args.session.strip():
        print("aiosvc tui: SESSION is empty", file=sys.stderr)
        return EXIT_USAGE
    from aiosvc.client.tui.app import TuiApp  # (Textual: only for this command)

    api_key = args.api_key or os.environ.get("AIOSVC_API_KEY") or None
    app = TuiApp(url, api_key, args.session)
    app.run()
    if app.failure is not None:
        print(f"aiosvc tui: {terminal_safe(app.failure)}", file=sys.stderr)
        return EXIT_FAILED
    return app.return_code or 0
