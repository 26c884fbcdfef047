"""Faults logged once: the first failure of an activity with its context, then its recovery.

A platform that is down for an hour must not fill the log with one warning per retry: the
first failure is a WARNING (with the traceback when it is unexpected), repeats go to DEBUG,
and the recovery is logged with how many failures it ended and for how long. What is wrong
right now (``problem``) feeds ``/readyz``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from bot.clock import Clock


class FaultLog:
    """The failure state of one activity (``what``: "X mentions", "outbox x"...)."""

    def __init__(self, logger: logging.Logger, what: str, clock: Clock) -> None:
        self._logger = logger
        self._what = what
        self._clock = clock
        self.failures = 0
        self._since: datetime | None = None
        self.problem: str | None = None

    def failed(self, reason: str, retry_in: float, *, unexpected: bool = False) -> None:
        """Record a failure (call from an ``except`` block when ``unexpected``)."""
        self.failures += 1
        self.problem = reason
        if self.failures == 1:
            self._since = self._clock.now()
            self._logger.warning(
                "%s: %s; retrying in %.1fs (repeats are logged at DEBUG until it recovers)",
                self._what,
                reason,
                retry_in,
                exc_info=unexpected,
            )
        else:
            self._logger.debug(
                "%s: failure %d: %s; retrying in %.1fs",
                self._what,
                self.failures,
                reason,
                retry_in,
                exc_info=unexpected,
            )

    def succeeded(self) -> None:
        """Record a success; log the recovery if it ends a run of failures."""
        if self.failures:
            lasted = self._clock.now() - self._since if self._since else None
            self._logger.warning(
                "%s: recovered after %d failure(s)%s",
                self._what,
                self.failures,
                f" over {lasted.total_seconds():.0f}s" if lasted is not None else "",
            )
        self.failures, self._since, self.problem = 0, None, None
