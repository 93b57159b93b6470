"""``aiosvc tui [SESSION]``: a full-screen terminal client over the WebSocket.

This module is what the command line imports: the application (and Textual) are imported
only when the command runs, so the other commands start as fast as before.
"""

from __future__ import annotations

import argparse
import sys

from aiosvc.client.display import terminal_safe
from aiosvc.client.options import (
    EXIT_FAILED,
    EXIT_USAGE,
    UsageError,
    add_server_arguments,
    fail,
    server_from,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``tui`` subcommand's arguments to ``parser``."""
    parser.description = (
        "Every session of the daemon, live: open one, send messages, approve tools. "
        "With SESSION, open that session."
    )
    parser.add_argument("session", nargs="?", metavar="SESSION", help="open this session")
    add_server_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the application for parsed arguments; return the exit status."""
    try:
        url, api_key = server_from(args)
        if args.session is not None and not args.session.strip():
            raise UsageError("SESSION is empty")
    except UsageError as exc:
        return fail("tui", str(exc), EXIT_USAGE)
    from aiosvc.client.tui.app import TuiApp  # (Textual: only for this command)

    app = TuiApp(url, api_key, args.session)
    app.run()
    if app.failure is not None:
        print(f"aiosvc tui: {terminal_safe(app.failure)}", file=sys.stderr)
        return EXIT_FAILED
    return app.return_code or 0
