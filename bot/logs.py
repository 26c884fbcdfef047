"""Logging set-up: one stderr handler that masks every secret; noisy libraries kept quiet.

JSON lines when stderr is not a terminal (a container, a service manager), readable lines when
it is; the ids of the ticket, outbox row or mentions being processed are bound to every line
written meanwhile (``ticket_id``, ``outbox_id``, ``mention_ids`` context variables).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final, TextIO

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


# The ids of what is being processed, bound to every log line written meanwhile.
ticket_id: ContextVar[int | None] = ContextVar("ticket_id", default=None)
outbox_id: ContextVar[int | None] = ContextVar("outbox_id", default=None)
mention_ids: ContextVar[tuple[int, ...] | None] = ContextVar("mention_ids", default=None)
_BOUND: Final = (("ticket_id", ticket_id), ("outbox_id", outbox_id), ("mention_ids", mention_ids))


@contextmanager
def bound(*, ticket: int | None = None, outbox_row: int | None = None) -> Iterator[None]:
    """Bind a ticket and/or outbox row id to every log line written inside the block."""
    tokens = [
        (var, var.set(value))
        for var, value in ((ticket_id, ticket), (outbox_id, outbox_row))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class BindContext(logging.Filter):
    """Copies the bound ids (ticket, outbox row, mentions) onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the ids; the record is always let through."""
        for name, var in _BOUND:
            value = var.get()
            if value is not None:
                setattr(record, name, list(value) if isinstance(value, tuple) else value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, bound ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, _ in _BOUND:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, with the bound ids after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The usual line, then ``[ticket_id=… outbox_id=…]`` when ids are bound."""
        line = super().format(record)
        bound = [f"{n}={getattr(record, n)}" for n, _ in _BOUND if hasattr(record, n)]
        if not bound:
            return line
        head, newline, rest = line.partition("\n")
        return f"{head} [{' '.join(bound)}]{newline}{rest}"


def configure(
    level: str,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
    *,
    levels: Mapping[str, str] | None = None,
    json_lines: bool | None = None,
) -> RedactSecrets:
    """Install the handler and levels for a carebot process; ``secrets`` are never printed.

    ``levels``: per-logger levels (``bot.outbox: DEBUG``); the secret-leaking libraries'
    floors still hold. ``json_lines``: JSON lines, by default when the stream is not a
    terminal. Returns the filter, whose ``mask`` the caller uses for what it prints itself
    (start-up errors, an uncaught exception's traceback).
    """
    redact = RedactSecrets(secrets)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    if json_lines is None:
        isatty = getattr(handler.stream, "isatty", None)
        json_lines = not (isatty is not None and isatty())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(BindContext())
    handler.addFilter(redact)
    root.addHandler(handler)
    root.setLevel(level)
    numeric = logging.getLevelName(level)
    for name, floor in FLOORS.items():
        logging.getLogger(name).setLevel(max(floor, numeric))
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, numeric))
    for name, wanted in (levels or {}).items():
        floor = FLOORS.get(name.split(".")[0], logging.NOTSET)
        logging.getLogger(name).setLevel(max(floor, logging.getLevelName(wanted)))
    return redact
