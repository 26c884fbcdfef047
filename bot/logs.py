"""Logging set-up: one stderr handler; the libraries that log secrets are kept quiet."""

from __future__ import annotations

import logging
from typing import Final

# tweepy logs request headers (Authorization) at DEBUG; httpx logs Telegram URLs, which
# contain the bot token, at INFO. Neither may go below these levels, whatever the config says.
FLOORS: Final = {"tweepy": logging.INFO, "httpx": logging.WARNING, "httpcore": logging.WARNING}
QUIET: Final = {"aiosqlite": logging.WARNING, "asyncio": logging.WARNING}


def configure(level: str) -> None:
    """Install the handler and levels for a carebot process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    for name, floor in FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, numeric))
