"""The ``aiosvc`` command: serve, chat, migrate, check-config."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from aiosvc import __version__
from aiosvc.client import chat
from aiosvc.config import Config, ConfigError, describe_config, load_config
from aiosvc.logs import configure_logging
from aiosvc.serve import RefusedToStart, serve
from aiosvc.store import Database, StoreError

EXIT_USAGE = 2
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiosvc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aiosvc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--config", type=Path, help="TOML file (default: $AIOSVC_CONFIG)")
        return sub

    serve_cmd = with_config(commands.add_parser("serve", help="run the service"))
    serve_cmd.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (default 8420)")
    serve_cmd.add_argument("--db", help="SQLite file (default: in the user's state directory)")
    serve_cmd.add_argument(
        "--log-level", help="debug, info, warning or error (default info)", metavar="LEVEL"
    )
    chat.add_arguments(commands.add_parser("chat", help="talk to a session from the terminal"))
    migrate_cmd = with_config(commands.add_parser("migrate", help="bring the database up to date"))
    migrate_cmd.add_argument("--db", help="SQLite file")
    with_config(commands.add_parser("check-config", help="validate the configuration and exit"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "chat":  # a client: no server configuration, no server logging
        return chat.run(args)
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
        print(describe_config(config))
        return 0
    configure_logging(config.log_format, config.server.log_level)
    try:
        if args.command == "migrate":
            asyncio.run(_migrate(config))
        else:
            asyncio.run(serve(config))
    except (RefusedToStart, StoreError) as exc:
        print(f"aiosvc: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0


async def _migrate(config: Config) -> None:
    database = Database(config.storage.db)
    await database.open(migrate=False, require_current=False)
    try:
        applied = await database.migrate()
    finally:
        await database.close()
    print("\n".join(f"applied {name}" for name in applied) or "the database is up to date")


if __name__ == "__main__":
    sys.exit(main())
