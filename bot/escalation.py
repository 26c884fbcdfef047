"""The escalation sweep: tickets whose ``next_escalation_at`` has come get their next notice.

``tickets.next_escalation_at`` in the database is the truth, so a restart loses no timer and
several processes can share the sweep: each due ticket is locked as it is taken (PostgreSQL:
``FOR UPDATE SKIP LOCKED``; SQLite: the single writer's ``BEGIN IMMEDIATE``). What is due is
decided by ``bot/ladder.py`` from the policy snapshotted on the ticket when it opened.
"""

from __future__ import annotations

import html
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.config import StaffConfig
from bot.domain import OutboxKind, OutboxState, Platform, TicketState
from bot.ladder import (
    LadderState,
    Notice,
    apply_notice,
    due,
    policy_from_snapshot,
    schedule,
)
from bot.models import incidents, outbox, staff_cards, ticket_events, tickets
from bot.store import SYSTEM_ACTOR, Store, pending_row, ticket_ref
from bot.tasks import call_observers

logger = logging.getLogger(__name__)

SWEEP_BATCH: Final = 25  # tickets per transaction: short write locks, acks are not kept waiting
DIGEST_MAX: Final = 150  # tickets per digest: every reference fits in one Telegram message
WAKING: Final = (TicketState.OPEN, TicketState.ACKNOWLEDGED, TicketState.REOPENED)


def ladder_state(t: Mapping[str, Any]) -> LadderState:
    """What the ladder needs to know about a ticket row."""
    return LadderState(
        opened_at=t["ladder_started_at"] or t["created_at"],
        rung=t["escalation_step"],
        notices_sent=t["notices_sent"],
        last_notice_at=t["last_notice_at"],
        state=TicketState(t["state"]),
        claimed_at=t["claimed_at"],
        last_staff_reply_at=t["last_staff_reply_at"],
        snoozed_until=t["snoozed_until"],
    )


def reschedule(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The timer of a ticket whose state a person just changed (claim, snooze, reply, …)."""
    snapshot = row.get("policy_snapshot")
    if not snapshot:
        return {"next_escalation_at": None}
    try:
        _, policy = policy_from_snapshot(snapshot)
    except ValueError:
        return {"next_escalation_at": None}
    return {"next_escalation_at": schedule(policy, ladder_state(row), now)}


class EscalationSweep:
    """Finds due tickets and writes their staff notices to the outbox."""

    def __init__(
        self,
        *,
        store: Store,
        staff: StaffConfig,
        ref_prefix: str,
        on_queued: Callable[[], None] = lambda: None,
        budget: Callable[[int], int] | None = None,
    ) -> None:
        self._store = store
        self._groups = {g.name: g.chat_id for g in staff.groups}
        self._members = {m.name: m.telegram_user_id for m in staff.members}
        self._leads = [m.name for m in staff.members if m.role == "lead"]
        self._agents = [m.name for m in staff.members if m.role == "agent"]
        self._prefix = ref_prefix
        self._on_queued = on_queued
        self._budget = budget
        self._free: dict[int, int] = {}
        self._digests: dict[int, tuple[int, list[int]]] = {}
        self.observers: list[Callable[[str], None]] = []
        self.on_escalated: Callable[[int], None] = lambda level: None  # ladder level, 1-based
        self.stopping = False  # set at shutdown: run_once ends after its current batch

    async def run_once(self) -> int:
        """Process every ticket due now (in batches); return how many notices were queued."""
        total = 0
        while not self.stopping:  # a stop waits for the batch in hand, not for the backlog
            queued, seen = await self._batch(self._store.clock.now())
            total += queued
            if seen < SWEEP_BATCH:
                break
        if total:
            self._on_queued()
        return total

    async def _batch(self, now: datetime) -> tuple[int, int]:
        sel = (
            select(tickets)
            .where(
                tickets.c.next_escalation_at <= now,
                tickets.c.state != TicketState.RESOLVED.value,
            )
            .order_by(tickets.c.priority, tickets.c.next_escalation_at)
            .limit(SWEEP_BATCH)
        )
        if self._store.engine.dialect.name == "postgresql":
            sel = sel.with_for_update(skip_locked=True)
        queued = 0
        async with self._store.write() as conn:
            rows = (await conn.execute(sel)).mappings().all()
            if rows:
                await self._load_budgets(conn)
            held = await self._held_by_incidents(conn, rows)
            for t in rows:
                if t["id"] in held:  # its incident escalates for it, as one item
                    await conn.execute(
                        update(tickets)
                        .where(tickets.c.id == t["id"])
                        .values(next_escalation_at=None)
                    )
                    continue
                queued += await self._advance(conn, t, now)
        return queued, len(rows)

    @staticmethod
    async def _held_by_incidents(conn: AsyncConnection, rows: Sequence[RowMapping]) -> set[int]:
        """The tickets among ``rows`` linked to an incident that is not fixed."""
        linked = {t["incident_id"] for t in rows if t["incident_id"] is not None}
        if not linked:
            return set()
        active = set(
            (
                await conn.execute(
                    select(incidents.c.id).where(
                        incidents.c.id.in_(linked), incidents.c.state != "fixed"
                    )
                )
            ).scalars()
        )
        return {t["id"] for t in rows if t["incident_id"] in active}

    async def _advance(self, conn: AsyncConnection, t: RowMapping, now: datetime) -> int:
        if not t["policy_snapshot"]:
            await conn.execute(
                update(tickets).where(tickets.c.id == t["id"]).values(next_escalation_at=None)
            )
            return 0
        try:
            _, policy = policy_from_snapshot(t["policy_snapshot"])
        except ValueError as exc:
            logger.error("ticket %s: unusable policy snapshot (%s); not escalating", t["id"], exc)
            await conn.execute(
                update(tickets).where(tickets.c.id == t["id"]).values(next_escalation_at=None)
            )
            return 0
        state = TicketState(t["state"])
        values: dict[str, Any] = {}
        if state is TicketState.SNOOZED and (
            t["snoozed_until"] is None or t["snoozed_until"] <= now
        ):
            state = TicketState.CLAIMED if t["claimed_by"] else TicketState.ESCALATED
            values.update(state=state.value, snoozed_until=None)
        st = ladder_state({**t, **values})
        notice = due(policy, st, now)
        queued = 0
        if notice is not None:
            queued = await self._notify(conn, t, notice, now)
            st = apply_notice(st, notice)
            values.update(
                escalation_step=st.rung,
                notices_sent=st.notices_sent,
                last_notice_at=st.last_notice_at,
            )
            if state in WAKING:
                values["state"] = TicketState.ESCALATED.value
        values["next_escalation_at"] = schedule(policy, st, now)
        values["updated_at"] = now
        await conn.execute(update(tickets).where(tickets.c.id == t["id"]).values(**values))
        if notice is None and "state" in values:  # a snooze ended: the card must say so
            await self._store.queue_card_edits(conn, t["id"], now)
        if notice is not None or "state" in values:
            await conn.execute(
                ticket_events.insert().values(
                    ticket_id=t["id"],
                    at=now,
                    actor=SYSTEM_ACTOR,
                    kind="escalated" if notice is not None else "snooze_ended",
                    from_state=t["state"],
                    to_state=values.get("state", t["state"]),
                    reason=notice.reason if notice is not None else "snooze ended",
                    data={"notice": notice.number, "group": notice.group} if notice else {},
                )
            )
        return queued

    async def escalate_now(self, ticket_id: int, actor: str) -> str:
        """Escalate now: the ladder's next tier is notified at once, any claim released.

        Past the last step, the top tier is notified again. The rest of the ladder keeps its
        rhythm from this notice.
        """
        now = self._store.clock.now()
        sel = select(tickets).where(tickets.c.id == ticket_id)
        if self._store.engine.dialect.name == "postgresql":
            sel = sel.with_for_update()
        async with self._store.write() as conn:
            t = (await conn.execute(sel)).mappings().first()
            ref = ticket_ref(self._prefix, ticket_id)
            if t is None or t["state"] == TicketState.RESOLVED.value:
                return f"{ref} is resolved; nothing to escalate."
            if not t["policy_snapshot"]:
                return f"{ref} has no escalation policy."
            _, policy = policy_from_snapshot(t["policy_snapshot"])
            released = {
                "state": TicketState.ESCALATED.value,
                "claimed_by": None,
                "claimed_at": None,
                "snoozed_until": None,
            }
            st = ladder_state({**t, **released})
            last = len(policy.steps) - 1
            index = min(st.rung, last)
            step = policy.steps[index]
            notice = Notice(
                number=st.notices_sent + 1,
                rung=min(st.rung + 1, last + 1),
                step_index=index,
                group=step.notify,
                mention=tuple(step.mention),
                mention_role=step.mention_role,
                kind="tier",
                reason=f"escalated now by {actor}",
                at=now,
            )
            await self._load_budgets(conn)
            await self._notify(conn, t, notice, now)
            st = apply_notice(st, notice)
            values = {
                **released,
                "escalation_step": st.rung,
                "notices_sent": st.notices_sent,
                "last_notice_at": st.last_notice_at,
                "next_escalation_at": schedule(policy, st, now),
                "updated_at": now,
            }
            await conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(**values))
            await conn.execute(
                ticket_events.insert().values(
                    ticket_id=ticket_id,
                    at=now,
                    actor=actor,
                    kind="escalated",
                    from_state=t["state"],
                    to_state=TicketState.ESCALATED.value,
                    reason=notice.reason,
                    data={"notice": notice.number, "group": notice.group, "manual": True},
                )
            )
            if t["claimed_by"] or t["state"] != TicketState.ESCALATED.value:
                await self._store.queue_card_edits(conn, ticket_id, now)
        self._on_queued()
        return f"{ref} escalated now to {notice.group}."

    async def _load_budgets(self, conn: AsyncConnection) -> None:
        """How many new messages each staff chat can still take, given what is queued."""
        self._free, self._digests = {}, {}
        if self._budget is None:
            return
        queued = await conn.execute(
            select(outbox.c.id, outbox.c.destination).where(
                outbox.c.platform == Platform.STAFF.value,
                outbox.c.state.in_([OutboxState.PENDING.value, OutboxState.SENDING.value]),
            )
        )
        waiting: dict[int, int] = {}
        for row_id, dest in queued.all():
            chat = int(dest["chat_id"])
            waiting[chat] = waiting.get(chat, 0) + 1
            if dest.get("digest"):
                self._digests[chat] = (row_id, [int(i) for i in dest["digest"]])
        for chat in self._groups.values():
            self._free[chat] = self._budget(chat) - waiting.get(chat, 0)

    async def _fold_into_digest(
        self, conn: AsyncConnection, t: RowMapping, chat_id: int, now: datetime
    ) -> int:
        """Add a ticket to its chat's pending digest (one message for many tickets)."""
        row_id, ids = self._digests.get(chat_id, (0, []))
        if len(ids) >= DIGEST_MAX:  # a full digest goes as it is; the next one starts
            row_id, ids = 0, []
        ids = [*ids, t["id"]]
        if row_id:
            moved = await conn.execute(
                update(outbox)
                .where(outbox.c.id == row_id, outbox.c.state == OutboxState.PENDING.value)
                .values(destination={"chat_id": chat_id, "digest": ids})
            )
            if moved.rowcount == 1:
                self._digests[chat_id] = (row_id, ids)
                return 0
            ids = [t["id"]]  # that digest is on its way: start the next one
        row = self._row(t, {"chat_id": chat_id, "digest": ids}, "digest", now)
        row["priority"] = 0
        new_id = (
            await conn.execute(outbox.insert().values(**row).returning(outbox.c.id))
        ).scalar_one()
        self._digests[chat_id] = (new_id, ids)
        return 1

    async def _notify(
        self, conn: AsyncConnection, t: RowMapping, notice: Notice, now: datetime
    ) -> int:
        chat_id = self._groups.get(notice.group)
        if chat_id is None:
            logger.error("ticket %s: staff group %r is not configured", t["id"], notice.group)
            return 0
        self.on_escalated(notice.step_index + 1)
        existing = await conn.execute(
            select(staff_cards.c.id).where(
                staff_cards.c.ticket_id == t["id"], staff_cards.c.chat_id == chat_id
            )
        )
        has_card = existing.first() is not None
        if self._budget is not None and self._free.get(chat_id, 1) < 2:  # keep one for a digest
            ref = ticket_ref(self._prefix, t["id"])
            call_observers(self.observers, f"⏰ {ref} → {notice.group}: in a digest")
            return await self._fold_into_digest(conn, t, chat_id, now)
        self._free[chat_id] = self._free.get(chat_id, 0) - 1
        people = self._people(notice)
        card: dict[str, Any] = {"card": t["id"], "chat_id": chat_id}
        rows: list[dict[str, Any]] = []
        if not has_card:  # the card is the first notice; people to page are named on it
            await conn.execute(
                staff_cards.insert().values(
                    ticket_id=t["id"], chat_id=chat_id, created_at=now, updated_at=now
                )
            )
            if people:
                card["ping"] = f"⏰ {html.escape(notice.reason)} · {people}"
            rows.append(self._row(t, {**card, "post": True}, f"card for ticket {t['id']}", now))
        else:  # bring the card up to date, and ping under it (an edit notifies nobody)
            ref = ticket_ref(self._prefix, t["id"])
            text = f"⏰ <b>{ref}</b>: {html.escape(notice.reason)}"
            if people:
                text += f" · {people}"
            rows.append(self._row(t, card, f"card update for {t['id']}", now))
            rows.append(self._row(t, {"chat_id": chat_id, "reply_to_card": t["id"]}, text, now))
        await conn.execute(outbox.insert(), rows)
        call_observers(
            self.observers,
            f"⏰ {ticket_ref(self._prefix, t['id'])} → {notice.group}: {notice.reason}",
        )
        return len(rows)

    def _people(self, notice: Notice) -> str:
        names = list(notice.mention)
        if notice.mention_role == "lead":
            names += self._leads
        elif notice.mention_role == "agent":
            names += self._agents
        seen: list[str] = []
        for name in names:
            if name not in seen and name in self._members:
                seen.append(name)
        return " ".join(
            f'<a href="tg://user?id={self._members[n]}">{html.escape(n)}</a>' for n in seen
        )

    @staticmethod
    def _row(
        t: RowMapping, destination: dict[str, Any], text: str, now: datetime
    ) -> dict[str, Any]:
        return pending_row(
            ticket_id=t["id"],
            kind=OutboxKind.STAFF,
            platform=Platform.STAFF,
            destination=destination,
            text=text,
            key=f"staff:{t['id']}:{uuid.uuid4().hex}",
            priority=t["priority"],
            now=now,
        )
