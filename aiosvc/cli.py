"""The ``aiosvc`` command: serve, chat, sessions, tui, migrate, check-config."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiosvc import __version__
from aiosvc.client import chat, sessions, tui

if TYPE_CHECKING:
    from aiosvc.config import Config

EXIT_USAGE = 2
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiosvc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aiosvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", type=Path, help="TOML file (default: $AIOSVC_CONFIG)")
        return sub

    def with_server(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        sub.add_argument("--port", type=int, help="port to listen on (default 8420)")
        sub.add_argument("--db", help="SQLite file (default: in the user's state directory)")
        sub.add_argument(
            "--log-level", help="debug, info, warning or error (default info)", metavar="LEVEL"
        )

    with_server(with_config(commands.add_parser("serve", help="run the service")))
    chat.add_arguments(commands.add_parser("chat", help="talk to a session from the terminal"))
    sessions.add_arguments(commands.add_parser("sessions", help="list the sessions"))
    tui.add_arguments(commands.add_parser("tui", help="every session, full screen, live"))
    migrate_cmd = with_config(commands.add_parser("migrate", help="bring the database up to date"))
    migrate_cmd.add_argument("--db", help="SQLite file")
    migrate_cmd.add_argument(
        "--create",
        action="store_true",
        help="create a new, empty database even where one was before (it was deleted or moved)",
    )
    check = commands.add_parser(
        "check-config", help="check the configuration as serve would, without starting"
    )
    with_server(with_config(check))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        try:
            return _run(argv)
        finally:  # argparse's exits too (--version, --help): their output goes out here
            sys.stdout.flush()
    except BrokenPipeError:
        # Whoever read stdout has gone (`aiosvc check-config | head -1`). Python's documented
        # recipe: point stdout at devnull so that the flush at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    # the clients: no server configuration, no server logging
    if args.command == "chat":
        return chat.run(args)
    if args.command == "sessions":
        return sessions.run(args)
    if args.command == "tui":
        return tui.run(args)
    return _run_server_command(args)


def _run_server_command(args: argparse.Namespace) -> int:
    # The server's modules are imported only here: the clients start without them.
    from aiosvc import preflight
    from aiosvc.config import ConfigError, describe_config, load_config
    from aiosvc.logs import configure_logging
    from aiosvc.serve import RefusedToStart, serve
    from aiosvc.store import StoreError

    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "db": getattr(args, "db", None),
        "log_level": getattr(args, "log_level", None),
    }
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        for line in exc.errors:
            print(f"aiosvc: {line}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check-config":
        found = preflight.problems(config)
        for line in found:
            print(f"aiosvc: {line}", file=sys.stderr)
        if found:
            return EXIT_FAILED
        print(describe_config(config))
        return 0
    configure_logging(config.log_format, config.server.log_level)
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(config, create=args.create))
        else:
            # a reload reads the same file with the environment and flags of this start
            env = dict(os.environ)
            reload = functools.partial(load_config, args.config, env=env, overrides=overrides)
            asyncio.run(serve(config, reload))
    except (RefusedToStart, StoreError) as exc:
        print(f"aiosvc: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0


async def _migrate(config: Config, *, create: bool) -> None:
    from aiosvc.store import Database
    from aiosvc.store.db import schema_version

    database = Database(config.storage.db)
    await database.open(migrate=False, require_current=False, create=create)
    try:
        applied = await database.migrate()
    finally:
        await database.close()
    db = config.storage.db
    for name in applied:
        print(f"{db}: applied {name}")
    if not applied:
        print(f"{db}: up to date (schema version {schema_version()})")


if __name__ == "__main__":
    sys.exit(main())
