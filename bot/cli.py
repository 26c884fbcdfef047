"""The ``carebot`` command line: run, migrate, check-config, classify."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from bot import __version__
from bot.config import Config, config_dir, load_config
from bot.errors import ConfigError, StartupError

logger = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_STARTUP: Final = 3


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
    classify = sub.add_parser(
        "classify", parents=[common], help="classify a text with the configured rules"
    )
    classify.add_argument("text", help="the mention's text")
    classify.add_argument(
        "--explain", action="store_true", help="show every category's score and each reason"
    )
    return parser


def _classify(config: Config, text: str, explain: bool) -> None:
    from bot.classifier import RulesClassifier  # noqa: PLC0415

    verdict = RulesClassifier(config.rules).classify(text)
    sys.stdout.write(f"{verdict.category.value} (confidence {verdict.confidence:.2f})\n")
    if explain:
        scores = ", ".join(f"{k} {v:+.2f}" for k, v in verdict.scores.items())
        sys.stdout.write(f"scores: {scores} (min_score {config.rules.min_score})\n")
        for reason in verdict.reasons:
            sys.stdout.write(f"  {reason}\n")


def _load(args: argparse.Namespace, environ: Mapping[str, str]) -> Config | None:
    directory = config_dir(args.config, environ)
    try:
        return load_config(directory, environ)
    except ConfigError as exc:
        sys.stderr.write(f"carebot: invalid configuration in {directory}:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  {problem}\n")
        return None


async def _serve(config: Config) -> None:
    from bot.app import run  # noqa: PLC0415 — keeps check-config free of the runtime imports

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(config, stop, out=sys.stdout)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
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
    if args.command == "classify":
        _classify(config, args.text, args.explain)
        return EXIT_OK
    from bot.logs import configure  # noqa: PLC0415

    configure(config.carebot.logging.level)
    try:
        if args.command == "migrate":
            rev = asyncio.run(_migrate(config, args.to))
            sys.stdout.write(f"database schema at revision {rev}\n")
        else:
            asyncio.run(_serve(config))
    except StartupError as exc:
        sys.stderr.write(f"carebot: cannot start: {exc}\n")
        return EXIT_STARTUP
    return EXIT_OK
