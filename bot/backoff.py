"""Jittered exponential backoff (aiogram's shape): grows on failure, resets on success."""

from __future__ import annotations

import random
from datetime import timedelta


def jittered(attempt: int, base: timedelta, cap: timedelta, rng: random.Random) -> timedelta:
    """Delay before retry ``attempt`` (1-based): half fixed, half random ("equal jitter")."""
    ceiling = min(cap.total_seconds(), base.total_seconds() * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))


class Backoff:
    """Stateful backoff for a loop: ``failed()`` gives the next wait, ``succeeded()`` resets."""

    def __init__(self, base: timedelta, cap: timedelta, rng: random.Random | None = None) -> None:
        self._base, self._cap = base, cap
        self._rng = rng or random.Random()
        self.failures = 0

    def failed(self) -> timedelta:
        """Record a failure; return how long to wait before trying again."""
        self.failures += 1
        return jittered(self.failures, self._base, self._cap, self._rng)

    def succeeded(self) -> None:
        """Record a success."""
        self.failures = 0
