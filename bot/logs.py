"""Logging set-up: one stderr handler that masks every secret; noisy libraries kept quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final, TextIO

# tweepy logs request headers (Authorization) at DEBUG; httpx logs Telegram URLs, which
# contain the bot token, at INFO. Neither goes below these levels, whatever the config says
# (and the handler masks secrets all the same, should a library print one anyway).
FLOORS: Final = {"tweepy": logging.INFO, "httpx": logging.WARNING, "httpcore": logging.WARNING}
QUIET: Final = {"aiosqlite": logging.WARNING, "asyncio": logging.WARNING}
REDACTED: Final = "<redacted>"
MIN_SECRET: Final = 4  # shorter values would mask ordinary words


class RedactSecrets(logging.Filter):
    """Masks each secret value wherever it appears in a record: message, exception, stack.

    Attached to the handler, so it sees every record that reaches the output, whichever
    library logged it and at whatever level.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # longest first: a secret that contains another is masked whole
        self._secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``<redacted>``."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask the record in place; it is always let through."""
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 — a bad format string: keep what was given
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


def configure(
    level: str, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> RedactSecrets:
    """Install the handler and levels for a carebot process; ``secrets`` are never printed.

    Returns the filter, whose ``mask`` the caller uses for what it prints itself (start-up
    errors, an uncaught exception's traceback).
    """
    redact = RedactSecrets(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(redact)
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    for name, floor in FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, numeric))
    return redact
