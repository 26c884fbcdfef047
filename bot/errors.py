"""carebot's exception hierarchy.

::

    CarebotError
     ├── ConfigError          config files or environment are invalid (lists every problem)
     ├── StartupError         the service cannot start (a platform refused our credentials, …)
     └── AdapterError         a platform call failed; adapters raise only these
          ├── AuthError       credentials rejected: permanent until an operator acts
          ├── PermanentError  this request can never succeed (bad input, deleted target, duplicate)
          ├── RateLimited     the platform said "not now"; ``reset_at`` when it said until when
          └── TransientError  5xx, timeouts, connection resets, unreadable bodies: retry later
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime


class CarebotError(Exception):
    """Base of every error carebot raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One config problem, located as precisely as the source allows."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}"


class ConfigError(CarebotError):
    """The configuration is invalid; ``problems`` lists every problem found, not only the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StartupError(CarebotError):
    """The service cannot start; the message says what the operator must do."""


class AdapterError(CarebotError):
    """A platform call failed."""


class AuthError(AdapterError):
    """The platform rejected our credentials."""


class PermanentError(AdapterError):
    """The platform rejected this request for good; retrying cannot help."""

    def __init__(self, message: str, *, duplicate: bool = False) -> None:
        super().__init__(message)
        self.duplicate = duplicate


class RateLimited(AdapterError):
    """The platform refused for now; no request to it should be made before ``reset_at``.

    ``scope`` narrows the wait to one destination (one chat's budget is spent, the others
    are free); None means the whole platform must wait.
    """

    def __init__(
        self, message: str, reset_at: datetime | None, *, scope: str | None = None
    ) -> None:
        super().__init__(message)
        self.reset_at = reset_at
        self.scope = scope


class TransientError(AdapterError):
    """A failure that is worth retrying after a backoff."""
