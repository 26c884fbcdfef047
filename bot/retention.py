"""Retention: customers' words and identities are erased after ``retention.days``.

What is erased, for mentions received before the cut-off that belong to no ticket or to a
resolved ticket last resolved before it: the mention's text, author id and handle, links and
matched reasons; the ticket's customer id, handle and reasons; its events' notes and data;
the texts and destinations of its delivered or failed outbox rows; and the customers' words
quoted in surge alerts. What stays: every row,
with its platform, category, confidence, states and timestamps, so volume, latency and SLA
figures still add up. Tickets not resolved keep everything: someone still has to act.

Idempotent and run in batches (a short transaction each), so every process may run it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import and_, or_, select, update

from bot.clock import Clock
from bot.domain import MentionStatus, OutboxState, TicketState
from bot.models import mentions, outbox, surges, ticket_events, tickets
from bot.store_base import StoreBase

logger = logging.getLogger(__name__)

BATCH: Final = 500
ERASED: Final = ""


@dataclass(frozen=True, slots=True)
class Purged:
    """What one purge erased."""

    tickets: int
    mentions: int


class Retention:
    """Erases customers' data older than ``days``; ``run`` does it every ``every``."""

    def __init__(self, store: StoreBase, clock: Clock, days: int) -> None:
        self._store = store
        self._clock = clock
        self.days = days

    async def run(self, every: timedelta) -> None:
        """Purge now and then every ``every`` until cancelled; a failed round is retried."""
        while True:
            try:
                await self.purge()
            except Exception:
                logger.exception("retention: the purge failed; trying again in %s", every)
            await asyncio.sleep(every.total_seconds())

    def cutoff(self) -> datetime:
        """Data from before this moment is erased."""
        return self._clock.now() - timedelta(days=self.days)

    async def purge(self) -> Purged:
        """Erase everything due, batch by batch; return the counts."""
        ticket_count = mention_count = 0
        while True:
            t, m = await self._batch(self.cutoff())
            ticket_count, mention_count = ticket_count + t, mention_count + m
            if t < BATCH and m < BATCH:
                break
        await self._alerts(self.cutoff())
        if ticket_count or mention_count:
            logger.info(
                "retention: erased the customer data of %d ticket(s) and %d mention(s) "
                "older than %d days",
                ticket_count,
                mention_count,
                self.days,
            )
        return Purged(ticket_count, mention_count)

    async def _alerts(self, cutoff: datetime) -> None:
        """Surge alerts quote customers: their samples and delivered texts go too."""
        async with self._store.write() as conn:
            await conn.execute(
                update(surges)
                .where(surges.c.alerted_at < cutoff)  # a few rows: no need to skip erased ones
                .values(samples=[])
            )
            await conn.execute(
                update(outbox)
                .where(
                    outbox.c.ticket_id.is_(None),
                    outbox.c.created_at < cutoff,
                    outbox.c.text != ERASED,
                    outbox.c.state.in_([OutboxState.SENT.value, OutboxState.FAILED.value]),
                )
                .values(text=ERASED)
            )

    async def _batch(self, cutoff: datetime) -> tuple[int, int]:
        # The conditions are repeated in each UPDATE: a ticket reopened (or a mention decided)
        # between the SELECT and the UPDATE on PostgreSQL must keep its data.
        due_ticket = and_(
            tickets.c.state == TicketState.RESOLVED.value,
            tickets.c.resolved_at < cutoff,
            or_(tickets.c.customer_id != ERASED, tickets.c.customer_handle != ERASED),
        )
        due_mention = and_(
            mentions.c.received_at < cutoff,
            mentions.c.status != MentionStatus.RECEIVED.value,  # undecided: keep
            or_(mentions.c.text != ERASED, mentions.c.author_id != ERASED),
            or_(
                mentions.c.ticket_id.is_(None),
                mentions.c.ticket_id.in_(
                    select(tickets.c.id).where(
                        tickets.c.state == TicketState.RESOLVED.value,
                        tickets.c.resolved_at < cutoff,
                    )
                ),
            ),
        )
        async with self._store.write() as conn:
            ticket_ids = list(
                (await conn.execute(select(tickets.c.id).where(due_ticket).limit(BATCH))).scalars()
            )
            if ticket_ids:
                erased = list(
                    (
                        await conn.execute(
                            update(tickets)
                            .where(tickets.c.id.in_(ticket_ids), due_ticket)
                            .values(customer_id=ERASED, customer_handle=ERASED, reasons=[])
                            .returning(tickets.c.id)
                        )
                    ).scalars()
                )
                if erased:
                    await conn.execute(
                        update(ticket_events)
                        .where(ticket_events.c.ticket_id.in_(erased))
                        .values(reason=ERASED, data=None)
                    )
                    await conn.execute(
                        update(outbox)
                        .where(
                            outbox.c.ticket_id.in_(erased),
                            outbox.c.state.in_([OutboxState.SENT.value, OutboxState.FAILED.value]),
                        )
                        .values(text=ERASED, destination={})
                    )
            mention_ids = list(
                (
                    await conn.execute(select(mentions.c.id).where(due_mention).limit(BATCH))
                ).scalars()
            )
            if mention_ids:
                await conn.execute(
                    update(mentions)
                    .where(mentions.c.id.in_(mention_ids), due_mention)
                    .values(
                        text=ERASED,
                        author_id=ERASED,
                        author_handle=ERASED,
                        url=None,
                        reply_url=None,
                        reasons=None,
                    )
                )
        return len(ticket_ids), len(mention_ids)
