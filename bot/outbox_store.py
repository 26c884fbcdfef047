"""Outbox rows in the database: claim, settle, retry, fail (see ``bot/outbox.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import (
    OutboxKind,
    OutboxState,
    Platform,
    TicketState,
)
from bot.models import outbox, ticket_events, tickets
from bot.store_base import (
    SYSTEM_ACTOR,
    OutboxRow,
    StoreBase,
)


def _still_ours(row: OutboxRow) -> tuple[Any, ...]:
    """The row, still in ``sending`` under this claim: an outcome is written only then.

    A process that lost its claim (taken over after a stall) must not set a row another
    process already sent back to pending, or fail it.
    """
    return (
        outbox.c.id == row.id,
        outbox.c.state == OutboxState.SENDING.value,
        outbox.c.claimed_at == row.claimed_at,
    )


class OutboxStore(StoreBase):
    """Every outbox operation."""

    async def claim_due(
        self,
        limit: int,
        *,
        exclude: Iterable[Platform] = (),
        platforms: Iterable[Platform] = (),
        claimer: str | None = None,
    ) -> list[OutboxRow]:
        """Claim up to ``limit`` due pending rows (pending → sending), most urgent first."""
        now = self.clock.now()
        wanted = [p.value for p in platforms]
        sel = (
            select(outbox.c.id)
            .where(
                outbox.c.state == OutboxState.PENDING.value,
                outbox.c.next_attempt_at <= now,
                outbox.c.platform.in_(wanted),
            )
            .order_by(outbox.c.priority, outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
        )
        excluded = [p.value for p in exclude]
        if excluded:
            sel = sel.where(outbox.c.platform.not_in(excluded))
        async with self.read() as conn:  # most rounds find nothing: no writer's lock for that
            if (await conn.execute(sel.with_only_columns(outbox.c.id).limit(1))).first() is None:
                return []
        if self._pg:
            sel = sel.with_for_update(skip_locked=True)
        async with self.write() as conn:
            ids = list((await conn.execute(sel)).scalars())
            if not ids:
                return []
            rows = await conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(ids), outbox.c.state == OutboxState.PENDING.value)
                .values(
                    state=OutboxState.SENDING.value,
                    claimed_at=now,
                    claimed_by=claimer,
                    attempts=outbox.c.attempts + 1,
                )
                .returning(*outbox.c)
            )
            claimed = [OutboxRow.from_row(r) for r in rows.mappings()]
        claimed.sort(key=lambda r: ids.index(r.id))
        return claimed

    async def sent_since(self, platform: Platform, since: datetime) -> list[datetime]:
        """When each row to ``platform`` was sent, since ``since`` (quotas survive restarts)."""
        async with self.read() as conn:
            rows = await conn.execute(
                select(outbox.c.sent_at)
                .where(
                    outbox.c.platform == platform.value,
                    outbox.c.state == OutboxState.SENT.value,
                    outbox.c.sent_at >= since,
                )
                .order_by(outbox.c.sent_at)
            )
            return [at for (at,) in rows if at is not None]

    async def next_due_at(self, platforms: Iterable[Platform]) -> datetime | None:
        """When the next pending row becomes due (None: nothing pending)."""
        async with self.read() as conn:
            due: datetime | None = (
                await conn.execute(
                    select(func.min(outbox.c.next_attempt_at)).where(
                        outbox.c.state == OutboxState.PENDING.value,
                        outbox.c.platform.in_([p.value for p in platforms]),
                    )
                )
            ).scalar_one_or_none()
        return due

    async def mark_sent(
        self, row: OutboxRow, external_id: str, *, recovered: bool = False
    ) -> None:
        """Record a delivery; an ack moves its ticket from open to acknowledged."""
        await self.mark_sent_many([(row, external_id)], recovered=recovered)

    async def mark_sent_many(
        self, sent: Sequence[tuple[OutboxRow, str]], *, recovered: bool = False
    ) -> None:
        """Record deliveries (a wave of concurrent sends) in one transaction."""
        if not sent:
            return
        now = self.clock.now()
        async with self.write() as conn:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == bindparam("row_id"))
                .values(
                    state=OutboxState.SENT.value,
                    sent_at=now,
                    external_id=bindparam("message_id"),
                    last_error=None,
                ),
                [{"row_id": row.id, "message_id": message_id} for row, message_id in sent],
            )
            acks = [
                (row, message_id)
                for row, message_id in sent
                if row.kind is OutboxKind.ACK and row.ticket_id is not None
            ]
            if acks:
                await self._acknowledged(conn, acks, now, recovered=recovered)

    @staticmethod
    async def _acknowledged(
        conn: AsyncConnection,
        acks: Sequence[tuple[OutboxRow, str]],
        now: datetime,
        *,
        recovered: bool,
    ) -> None:
        """Record delivered acks; an ``open`` ticket becomes ``acknowledged``.

        The sweep may have escalated the ticket before the ack went out: it keeps its state,
        and ``acknowledged_at`` is recorded all the same. A ticket acknowledged already (a
        second ack row for it) is left alone. One UPDATE decides and records it (no read
        then write that a concurrent escalation could slip between), and one INSERT the
        events, for the whole wave; tickets are locked in id order, as every wave does.
        """
        ids = sorted({row.ticket_id for row, _ in acks if row.ticket_id is not None})
        moved = await conn.execute(
            update(tickets)
            .where(tickets.c.id.in_(ids), tickets.c.acknowledged_at.is_(None))
            .values(
                acknowledged_at=now,
                updated_at=now,
                state=case(
                    (tickets.c.state == TicketState.OPEN.value, TicketState.ACKNOWLEDGED.value),
                    else_=tickets.c.state,
                ),
            )
            .returning(tickets.c.id, tickets.c.state)
        )
        # each ticket's state after: only an open one changed
        states: dict[int | None, str] = {int(tid): str(state) for tid, state in moved.all()}
        reason = "acknowledgement delivered" + (" (confirmed after restart)" if recovered else "")
        events = []
        for row, message_id in acks:
            state = states.pop(row.ticket_id, None)
            if state is None:
                continue
            before = TicketState.OPEN.value if state == TicketState.ACKNOWLEDGED.value else state
            events.append(
                {
                    "ticket_id": row.ticket_id,
                    "at": now,
                    "actor": SYSTEM_ACTOR,
                    "kind": "acknowledged",
                    "from_state": before,
                    "to_state": state,
                    "reason": reason,
                    "data": {"outbox_id": row.id, "message_id": message_id},
                }
            )
        if events:
            await conn.execute(ticket_events.insert(), events)

    async def touch_claim(self, row: OutboxRow) -> OutboxRow | None:
        """Renew a claim just before its send; None if the row is no longer ours.

        A claimed batch is sent one row at a time, so a row can wait in ``sending`` for a
        while; renewing keeps another process's stale-row recovery off it.
        """
        now = self.clock.now()
        async with self.write() as conn:
            moved = await conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == row.id,
                    outbox.c.state == OutboxState.SENDING.value,
                    outbox.c.claimed_at == row.claimed_at,
                )
                .values(claimed_at=now)
            )
        return replace(row, claimed_at=now) if moved.rowcount == 1 else None

    async def release(self, rows: Sequence[OutboxRow]) -> None:
        """Put claimed rows that will not be sent now back to pending, as they were."""
        if not rows:
            return
        async with self.write() as conn:
            for row in rows:
                await conn.execute(
                    update(outbox)
                    .where(*_still_ours(row))
                    .values(
                        state=OutboxState.PENDING.value,
                        claimed_at=None,
                        claimed_by=None,
                        attempts=outbox.c.attempts - 1,
                    )
                )

    async def release_stale(self, row: OutboxRow) -> bool:
        """Put an abandoned ``sending`` row back to pending, unless someone renewed it."""
        async with self.write() as conn:
            moved = await conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == row.id,
                    outbox.c.state == OutboxState.SENDING.value,
                    outbox.c.claimed_at == row.claimed_at,
                )
                .values(
                    state=OutboxState.PENDING.value,
                    next_attempt_at=self.clock.now(),
                    last_error="interrupted mid-send",
                    claimed_at=None,
                    claimed_by=None,
                    attempts=outbox.c.attempts - 1,
                )
            )
        return moved.rowcount == 1

    async def mark_retry(
        self, row: OutboxRow, next_attempt_at: datetime, error: str, *, count_attempt: bool = True
    ) -> None:
        """Put a row back to pending for a later attempt."""
        values: dict[str, Any] = {
            "state": OutboxState.PENDING.value,
            "next_attempt_at": next_attempt_at,
            "last_error": error[:2000],
            "claimed_at": None,
        }
        if not count_attempt:
            values["attempts"] = outbox.c.attempts - 1
        async with self.write() as conn:
            await conn.execute(update(outbox).where(*_still_ours(row)).values(**values))

    async def mark_failed(self, row: OutboxRow, error: str) -> None:
        """Give up on a row, and say so on its ticket."""
        now = self.clock.now()
        async with self.write() as conn:
            failed = await conn.execute(
                update(outbox)
                .where(*_still_ours(row))
                .values(state=OutboxState.FAILED.value, last_error=error[:2000], claimed_at=None)
            )
            if failed.rowcount != 1:
                return  # taken over meanwhile (another process settled it): not ours to fail
            if row.ticket_id is not None:
                await conn.execute(
                    ticket_events.insert().values(
                        ticket_id=row.ticket_id,
                        at=now,
                        actor=SYSTEM_ACTOR,
                        kind=f"{row.kind.value}_failed",
                        reason=error[:2000],
                        data={"outbox_id": row.id, "attempts": row.attempts},
                    )
                )

    async def stale_sending(
        self, older_than: datetime, platforms: Iterable[Platform]
    ) -> list[OutboxRow]:
        """Rows in ``sending`` claimed before ``older_than``: their sender may have died."""
        async with self.read() as conn:
            rows = await conn.execute(
                select(outbox).where(
                    outbox.c.state == OutboxState.SENDING.value,
                    outbox.c.claimed_at <= older_than,
                    outbox.c.platform.in_([p.value for p in platforms]),
                )
            )
            return [OutboxRow.from_row(r) for r in rows.mappings()]
