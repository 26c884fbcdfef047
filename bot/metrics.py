"""Prometheus metrics: ``GET /metrics`` on carebot's HTTP server.

Counters and histograms are fed as things happen (observers on the pipeline, the outbox, the
staff desk and the sweep); gauges that describe the database (outbox depth, tickets by state)
are read when scraped. Each service has its own registry, so tests can run several.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST as PROMETHEUS_CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select

from bot.clock import Clock
from bot.domain import OutboxKind, OutboxState, Platform
from bot.models import outbox, tickets
from bot.store_base import Applied, OutboxRow, StoreBase

__all__ = ["PROMETHEUS_CONTENT_TYPE", "Metrics"]

LATENCY_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
HUMAN_BUCKETS: Final = (60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 259200)
CONFIDENCE_BUCKETS: Final = (0.35, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.995, 1.0)


class Metrics:
    """One service's metrics."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self.mentions = Counter(
            "carebot_mentions",
            "Mentions decided, by platform, category and outcome",
            ["platform", "category", "status"],
            registry=r,
        )
        self.acks = Counter(
            "carebot_acks",
            "Acknowledgements by platform and result",
            ["platform", "result"],
            registry=r,
        )
        self.ack_latency = Histogram(
            "carebot_ack_latency_seconds",
            "Receipt (the ack row, written with the mention) to the platform accepting the ack",
            ["platform"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_response = Histogram(
            "carebot_first_human_response_seconds",
            "Ticket opened to a person's first reply to the customer",
            buckets=HUMAN_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "carebot_classifier_confidence",
            "The classifier's confidence in each verdict, by category",
            ["category"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.escalations = Counter(
            "carebot_escalations", "Escalation notices by ladder level", ["level"], registry=r
        )
        self.rate_limited = Counter(
            "carebot_rate_limit_waits",
            "Sends held back: once per 429 from a platform, once a second while our quota holds",
            ["platform", "reason"],
            registry=r,
        )
        self.reloads = Counter(
            "carebot_config_reloads", "Config reloads by result", ["result"], registry=r
        )
        self.outbox_depth = Gauge(
            "carebot_outbox_depth",
            "Outbox rows waiting (pending or being sent), by destination platform and kind",
            ["platform", "kind"],
            registry=r,
        )
        self.open_tickets = Gauge(
            "carebot_tickets", "Tickets by state (resolved included)", ["state"], registry=r
        )

    # -- fed as things happen ---------------------------------------------------------------

    def decided(self, applied: Sequence[Applied]) -> None:
        """A pipeline observer: count each decided mention and its classifier confidence."""
        for a in applied:
            d = a.decision
            category = d.verdict.category.value if d.verdict is not None else "none"
            self.mentions.labels(d.stored.mention.platform.value, category, d.status.value).inc()
            if d.verdict is not None:
                self.confidence.labels(category).observe(d.verdict.confidence)

    def sent(self, row: OutboxRow, message_id: str) -> None:
        """An outbox observer: an ack delivered, and how long after receipt."""
        del message_id
        if row.kind is not OutboxKind.ACK:
            return
        self.acks.labels(row.platform.value, "sent").inc()
        if row.created_at is not None:
            waited = (self._clock.now() - row.created_at).total_seconds()
            self.ack_latency.labels(row.platform.value).observe(max(waited, 0.0))

    def failed(self, row: OutboxRow) -> None:
        """An ack given up on."""
        if row.kind is OutboxKind.ACK:
            self.acks.labels(row.platform.value, "failed").inc()

    def held_back(self, platform: Platform, reason: str) -> None:
        """A send waited: ``reason`` is ``429`` or ``quota``."""
        self.rate_limited.labels(platform.value, reason).inc()

    def first_reply(self, opened_at: datetime, now: datetime) -> None:
        """A person answered a customer for the first time on a ticket."""
        self.first_response.observe(max((now - opened_at).total_seconds(), 0.0))

    def escalated(self, level: int) -> None:
        """A notice for ladder step ``level`` (1-based) was queued."""
        self.escalations.labels(str(level)).inc()

    def reloaded(self, applied: bool) -> None:
        """A config reload applied (True) or refused."""
        self.reloads.labels("applied" if applied else "refused").inc()

    # -- read when scraped ------------------------------------------------------------------

    async def render(self, store: StoreBase) -> bytes:
        """The exposition text, with the database gauges read now."""
        async with store.read() as conn:
            depth = (
                await conn.execute(
                    select(outbox.c.platform, outbox.c.kind, func.count())
                    .where(
                        outbox.c.state.in_([OutboxState.PENDING.value, OutboxState.SENDING.value])
                    )
                    .group_by(outbox.c.platform, outbox.c.kind)
                )
            ).all()
            states = (
                await conn.execute(select(tickets.c.state, func.count()).group_by(tickets.c.state))
            ).all()
        self.outbox_depth.clear()
        for platform, kind, n in depth:
            self.outbox_depth.labels(platform, kind).set(n)
        self.open_tickets.clear()
        for state, n in states:
            self.open_tickets.labels(state).set(n)
        return generate_latest(self.registry)
