"""Send budgets: sliding windows per destination, so we stay inside a platform's limits."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from datetime import datetime, timedelta


class SlidingWindow:
    """At most ``limit`` events per ``window`` for each key."""

    def __init__(self, limit: int, window: timedelta) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._hits: dict[Hashable, deque[datetime]] = {}

    def _trim(self, key: Hashable, now: datetime) -> deque[datetime]:
        hits = self._hits.get(key)
        if hits is None:
            return deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if not hits:  # forget idle keys: one per chat ever seen would grow without bound
            del self._hits[key]
        return hits

    def wait_until(self, key: Hashable, now: datetime) -> datetime | None:
        """When ``key`` may be used again (None: now)."""
        hits = self._trim(key, now)
        return hits[0] + self.window if len(hits) >= self.limit else None

    def used(self, key: Hashable, now: datetime) -> int:
        """How many events ``key`` had in the window ending now."""
        return len(self._trim(key, now))

    def record(self, key: Hashable, now: datetime) -> None:
        """Count one event for ``key``."""
        self._trim(key, now)
        self._hits.setdefault(key, deque()).append(now)
