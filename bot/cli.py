"""The ``carebot`` command line: run, migrate, check-config, and the tuning tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bot import __version__, cli_tools
from bot.config import Config, config_dir, load_config
from bot.errors import ConfigError, StartupError

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_STARTUP: Final = 3
TOOLS: Final = frozenset(
    {"classify", "eval", "train", "replay", "export-labels", "export-mentions", "report"}
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carebot", description="Answer a brand's customers on social platforms."
    )
    parser.add_argument("--version", action="version", version=f"carebot {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="DIR",
        help="config directory (default: $CAREBOT_CONFIG_DIR, else ./config)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="run the service (migrates the database first)")
    migrate = sub.add_parser("migrate", parents=[common], help="upgrade the database schema")
    migrate.add_argument(
        "--to", default="head", metavar="REV", help="target revision (default: head)"
    )
    sub.add_parser(
        "check-config", parents=[common], help="validate the config files and environment"
    )
    sub.add_parser(
        "config-reference",
        parents=[common],
        help="print every carebot.yaml key with its default and meaning (Markdown)",
    )
    cli_tools.add_parsers(sub, common)
    return parser


def _load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config | None:
    directory = config_dir(args.config, environ)
    try:
        return load_config(directory, environ, with_model=args.command != "train")
    except ConfigError as exc:
        sys.stderr.write(f"carebot: invalid configuration in {directory}:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  {problem}\n")
        return None


async def _serve(config: Config, environ: Mapping[str, str]) -> None:
    from bot.app import Running, run  # noqa: PLC0415 — keeps check-config free of the runtime

    stop, running = asyncio.Event(), Running()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:  # SIGHUP: look at the config files now
        if running.reloader is not None:
            running.reloader.trigger()

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await run(config, stop, out=sys.stdout, running=running, environ=environ)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def _migrate(config: Config, revision: str) -> str | None:
    from bot.migrate import current, open_database, upgrade  # noqa: PLC0415
    from bot.store import make_engine  # noqa: PLC0415

    engine = make_engine(config.database_url.get_secret_value())
    try:
        if revision == "head":
            await open_database(engine)
        else:
            await upgrade(engine, revision)
        return await current(engine)
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    config = _load(args, env)
    if config is None:
        return EXIT_CONFIG
    if args.command == "check-config":
        sys.stdout.write(f"configuration OK: {config.directory}\n")
        return EXIT_OK
    if args.command == "config-reference":
        from bot.reference import render  # noqa: PLC0415

        sys.stdout.write(render(config.directory))
        return EXIT_OK
    if args.command in TOOLS:
        return cli_tools.run(args, config, env)
    from bot.logs import configure  # noqa: PLC0415

    logs = config.carebot.logging
    redact = configure(
        logs.level,
        config.secret_values(),
        levels=logs.levels,
        json_lines=None if logs.format == "auto" else logs.format == "json",
    )

    def masked_excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        sys.stderr.write(redact.mask("".join(traceback.format_exception(kind, exc, tb))))

    sys.excepthook = masked_excepthook  # an uncaught error's traceback is masked too
    try:
        if args.command == "migrate":
            rev = asyncio.run(_migrate(config, args.to))
            sys.stdout.write(f"database schema at revision {rev}\n")
        else:
            asyncio.run(_serve(config, env))
    except StartupError as exc:
        sys.stderr.write(f"carebot: cannot start: {redact.mask(str(exc))}\n")
        return EXIT_STARTUP
    return EXIT_OK
