"""The store: every database operation carebot performs, on top of ``bot/store_base.py``.

Hot-path writes are SQLAlchemy Core bulk statements; ``bot/outbox_store.py`` holds the outbox's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.domain import (
    Mention,
    MentionStatus,
    OutboxKind,
    OutboxState,
    Platform,
    TicketState,
)
from bot.models import cursors, mentions, outbox, staff_cards, ticket_events, tickets
from bot.outbox_store import OutboxStore
from bot.store_base import (
    APPLY_CHUNK,
    READ_ONLY,
    SQLITE_PRAGMAS,
    SYSTEM_ACTOR,
    AckSpec,
    Applied,
    AuthorActivity,
    CursorUpdate,
    Decision,
    OutboxRow,
    StoredMention,
    TicketLink,
    make_engine,
    mention_from_row,
    pending_row,
    ticket_ref,
)

__all__ = [
    "APPLY_CHUNK",
    "READ_ONLY",
    "SQLITE_PRAGMAS",
    "SYSTEM_ACTOR",
    "AckSpec",
    "Applied",
    "AuthorActivity",
    "CursorUpdate",
    "Decision",
    "OutboxRow",
    "Store",
    "StoredMention",
    "TicketLink",
    "make_engine",
    "mention_from_row",
    "pending_row",
    "ticket_ref",
]


class Store(OutboxStore):
    """Every database operation, each in its own short transaction."""

    # -- intake ---------------------------------------------------------------------------

    async def record(
        self,
        batch: Sequence[Mention],
        cursor: CursorUpdate | None = None,
        *,
        cursors: Sequence[CursorUpdate] = (),
        within: AsyncConnection | None = None,
    ) -> list[StoredMention]:
        """Store mentions (idempotent on platform + external id) and move cursors, atomically.

        Returns only the mentions that were new; duplicates are silently skipped. With
        ``within`` the caller's transaction is used (group commit).
        """
        now = self.clock.now()
        unique: dict[tuple[str, str], Mention] = {}
        for m in batch:
            unique.setdefault((m.platform.value, m.external_id), m)
        created: list[StoredMention] = []
        moved = [*cursors, *([cursor] if cursor is not None else [])]
        async with self.using(within, write=True) as conn:
            if unique:
                stmt = (
                    self._insert(mentions)
                    .on_conflict_do_nothing(index_elements=["platform", "external_id"])
                    .returning(mentions.c.id, mentions.c.platform, mentions.c.external_id)
                )
                # executemany ("insertmanyvalues"): compiled once and cached, whatever the
                # batch size; a multi-row VALUES would be compiled anew for every size.
                params = [self._mention_values(m, now) for m in unique.values()]
                for row in (await conn.execute(stmt, params)).mappings():
                    m = unique[(row["platform"], row["external_id"])]
                    created.append(StoredMention(row["id"], m))
            for update_ in moved:
                await self._put_cursor(conn, update_, now)
        created.sort(key=lambda s: s.id)
        return created

    @staticmethod
    def _mention_values(m: Mention, now: datetime) -> dict[str, Any]:
        return {
            "platform": m.platform.value,
            "external_id": m.external_id,
            "author_id": m.author_id,
            "author_handle": m.author_handle,
            "author_is_bot": m.author_is_bot,
            "text": m.text,
            "thread_id": m.thread_id,
            "in_reply_to_id": m.in_reply_to_id,
            "url": m.url,
            "reply_url": m.reply_url,
            "created_at": m.created_at,
            "received_at": now,
            "status": MentionStatus.RECEIVED.value,
        }

    async def _put_cursor(
        self, conn: AsyncConnection, cursor: CursorUpdate, now: datetime
    ) -> None:
        values = {
            "source": cursor.source,
            "value": cursor.value,
            "data": cursor.data,
            "updated_at": now,
        }
        stmt = self._insert(cursors).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["source"],
            set_={"value": cursor.value, "data": cursor.data, "updated_at": now},
        )
        await conn.execute(stmt)

    async def put_cursor(self, cursor: CursorUpdate) -> None:
        """Write a cursor on its own (when a poll found nothing new to store)."""
        async with self.write() as conn:
            await self._put_cursor(conn, cursor, self.clock.now())

    async def get_cursor(self, source: str) -> CursorUpdate | None:
        """The stored cursor of ``source``, or None before its first start."""
        async with self.read() as conn:
            row = (
                (await conn.execute(select(cursors).where(cursors.c.source == source)))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return CursorUpdate(row["source"], row["value"], row["data"])

    async def received_backlog(self, limit: int = 500, after: int = 0) -> list[StoredMention]:
        """Mentions stored but not yet decided (left over by a crash), ids above ``after``."""
        async with self.read() as conn:
            rows = await conn.execute(
                select(mentions)
                .where(mentions.c.status == MentionStatus.RECEIVED.value, mentions.c.id > after)
                .order_by(mentions.c.id)
                .limit(limit)
            )
            return [mention_from_row(r) for r in rows.mappings()]

    async def apply(
        self,
        decisions: Iterable[Decision],
        ref_prefix: str,
        *,
        within: AsyncConnection | None = None,
    ) -> list[Applied]:
        """Commit decisions: mention status, ticket, first event and ack, atomically per chunk.

        A mention already decided (by another worker or an earlier run) is skipped, so a
        mention never gets two tickets. Each chunk is a handful of bulk statements, in a
        transaction of its own, or all in the caller's ``within``.
        """
        del ref_prefix  # the reference is rendered by each AckSpec
        now = self.clock.now()
        out: list[Applied] = []
        pending = list(decisions)
        for start in range(0, len(pending), APPLY_CHUNK):
            async with self.using(within, write=True) as chunk_conn:
                out += await self._apply_chunk(
                    chunk_conn, pending[start : start + APPLY_CHUNK], now
                )
        return out

    async def _apply_chunk(
        self, conn: AsyncConnection, chunk: list[Decision], now: datetime
    ) -> list[Applied]:
        ids = [d.stored.id for d in chunk]
        undecided = select(mentions.c.id).where(
            mentions.c.id.in_(ids), mentions.c.status == MentionStatus.RECEIVED.value
        )
        if self._pg:
            undecided = undecided.with_for_update(skip_locked=True)
        open_ids = set((await conn.execute(undecided)).scalars())
        mine = [d for d in chunk if d.stored.id in open_ids]
        ticketed = [
            d for d in mine if d.plan is not None and d.plan.open_ticket and d.verdict is not None
        ]
        ticket_ids: dict[int, int] = {}
        if ticketed:
            # Matched back by mention id: RETURNING in parameter order would make SQLAlchemy
            # send the rows one statement at a time (seven times slower on SQLite).
            rows = await conn.execute(
                tickets.insert().returning(tickets.c.id, tickets.c.mention_id),
                [self._ticket_values(d, now) for d in ticketed],
            )
            ticket_ids = {int(mention_id): int(tid) for tid, mention_id in rows}
        for d in mine:
            if d.status is MentionStatus.FOLLOW_UP and d.join_ticket_id is not None:
                ticket_ids[d.stored.id] = d.join_ticket_id
                await self._follow_up(conn, d, now)
        if mine:
            await conn.execute(
                update(mentions)
                .where(mentions.c.id == bindparam("m_id"))
                .values(
                    status=bindparam("m_status"),
                    screen_reason=bindparam("m_reason"),
                    category=bindparam("m_category"),
                    confidence=bindparam("m_confidence"),
                    reasons=bindparam("m_reasons"),
                    ticket_id=bindparam("m_ticket"),
                ),
                [self._mention_decision(d, ticket_ids.get(d.stored.id)) for d in mine],
            )
        acks: dict[int, str] = {}
        if ticketed:
            await conn.execute(
                ticket_events.insert(),
                [self._opened_event(d, ticket_ids[d.stored.id], now) for d in ticketed],
            )
            rows_out = []
            for d in ticketed:
                if d.ack is None:
                    continue
                tid = ticket_ids[d.stored.id]
                acks[d.stored.id] = d.ack.render(tid)
                rows_out.append(self._ack_row(d, tid, acks[d.stored.id], now))
            if rows_out:
                await conn.execute(outbox.insert(), rows_out)
        return [
            Applied(d, ticket_ids.get(d.stored.id), acks.get(d.stored.id))
            for d in chunk
            if d.stored.id in open_ids
        ]

    async def _follow_up(self, conn: AsyncConnection, d: Decision, now: datetime) -> None:
        """Attach a customer's follow-up to their ticket; reopen it if it was resolved."""
        assert d.join_ticket_id is not None  # noqa: S101 — checked by the caller
        tid = d.join_ticket_id
        m = d.stored.mention
        await conn.execute(
            ticket_events.insert().values(
                ticket_id=tid,
                at=now,
                actor=f"customer:{m.author_handle}"[:100],
                kind="customer_follow_up",
                reason=(d.note + ": " if d.note else "") + m.text[:500],
                data={"mention_id": d.stored.id},
            )
        )
        if d.reopen:
            moved = await conn.execute(
                update(tickets)
                .where(tickets.c.id == tid, tickets.c.state == TicketState.RESOLVED.value)
                .values(
                    state=TicketState.REOPENED.value,
                    resolved_at=None,
                    claimed_by=None,
                    claimed_at=None,
                    snoozed_until=None,
                    ladder_started_at=now,
                    escalation_step=0,
                    notices_sent=0,
                    last_notice_at=None,
                    next_escalation_at=now,
                    updated_at=now,
                )
            )
            if moved.rowcount == 1:
                await conn.execute(
                    ticket_events.insert().values(
                        ticket_id=tid,
                        at=now,
                        actor=SYSTEM_ACTOR,
                        kind="reopened",
                        from_state=TicketState.RESOLVED.value,
                        to_state=TicketState.REOPENED.value,
                        reason="the customer wrote again after the ticket was resolved",
                        data={"mention_id": d.stored.id},
                    )
                )
        await self.queue_card_edits(conn, tid, now)

    async def queue_alert(self, chat_id: int, text: str) -> None:
        """Queue an operational alert (HTML) to a staff chat, ahead of ticket traffic."""
        now = self.clock.now()
        async with self.write() as conn:
            await conn.execute(
                outbox.insert().values(
                    pending_row(
                        ticket_id=None,
                        kind=OutboxKind.STAFF,
                        platform=Platform.STAFF,
                        destination={"chat_id": chat_id},
                        text=text,
                        key=f"alert:{chat_id}:{uuid.uuid4().hex}",
                        priority=0,
                        now=now,
                    )
                )
            )

    async def queue_card_edits(self, conn: AsyncConnection, ticket_id: int, now: datetime) -> None:
        """Queue an edit of every staff card of ``ticket_id`` (rendered fresh when sent)."""
        chats = await conn.execute(
            select(staff_cards.c.chat_id).where(staff_cards.c.ticket_id == ticket_id)
        )
        rows = [
            pending_row(
                ticket_id=ticket_id,
                kind=OutboxKind.STAFF,
                platform=Platform.STAFF,
                destination={"card": ticket_id, "chat_id": chat_id},
                text=f"card update for ticket {ticket_id}",
                key=f"card:{ticket_id}:{chat_id}:{uuid.uuid4().hex}",
                priority=0,
                now=now,
            )
            for chat_id in chats.scalars()
        ]
        if rows:
            await conn.execute(outbox.insert(), rows)

    async def thread_links(
        self, batch: Sequence[StoredMention], *, within: AsyncConnection | None = None
    ) -> dict[int, TicketLink]:
        """For each mention that replies in a thread of its author's ticket: that ticket.

        A reply to our acknowledgement or reply, or to the author's own earlier mention (or in
        its conversation), belongs to the author's ticket. Keys are stored mention ids.
        """
        refs: dict[int, list[str]] = {}
        for s in batch:
            ids = [i for i in (s.mention.in_reply_to_id, s.mention.thread_id) if i]
            if ids and ids != [s.mention.external_id]:
                refs[s.id] = [i for i in ids if i != s.mention.external_id]
        if not refs:
            return {}
        wanted = sorted({i for ids in refs.values() for i in ids})
        async with self.using(within, write=False) as conn:
            ours = await conn.execute(
                select(
                    outbox.c.platform,
                    outbox.c.external_id,
                    tickets.c.id,
                    tickets.c.customer_id,
                    tickets.c.state,
                    tickets.c.resolved_at,
                )
                .join(tickets, tickets.c.id == outbox.c.ticket_id)
                .where(outbox.c.external_id.in_(wanted), outbox.c.state == OutboxState.SENT.value)
            )
            theirs = await conn.execute(
                select(
                    mentions.c.platform,
                    mentions.c.external_id,
                    tickets.c.id,
                    tickets.c.customer_id,
                    tickets.c.state,
                    tickets.c.resolved_at,
                )
                .join(tickets, tickets.c.id == mentions.c.ticket_id)
                .where(
                    # platform first: the (platform, external_id) unique index serves this
                    mentions.c.platform.in_(sorted({s.mention.platform.value for s in batch})),
                    mentions.c.external_id.in_(wanted),
                )
            )
            known = {(r[0], r[1]): r[2:] for r in [*ours.all(), *theirs.all()]}
        links: dict[int, TicketLink] = {}
        for s in batch:
            for ref in refs.get(s.id, []):
                hit = known.get((s.mention.platform.value, ref))
                if hit is not None and hit[1] == s.mention.author_id:
                    links[s.id] = TicketLink(hit[0], TicketState(hit[2]), hit[3])
                    break
        return links

    async def author_activity(
        self,
        keys: Iterable[tuple[Platform, str]],
        since: datetime,
        *,
        within: AsyncConnection | None = None,
    ) -> dict[tuple[Platform, str], AuthorActivity]:
        """Acks each author got since ``since`` and their newest open ticket."""
        wanted = set(keys)
        if not wanted:
            return {}
        authors = sorted({a for _, a in wanted})
        # Counted by the database: an author with a long history sends two numbers, not rows.
        async with self.using(within, write=False) as conn:
            acked = await conn.execute(
                select(tickets.c.platform, tickets.c.customer_id, func.count())
                .join(outbox, outbox.c.ticket_id == tickets.c.id)
                .where(
                    tickets.c.customer_id.in_(authors),
                    outbox.c.kind == OutboxKind.ACK.value,
                    outbox.c.state != OutboxState.FAILED.value,
                    outbox.c.created_at >= since,
                )
                .group_by(tickets.c.platform, tickets.c.customer_id)
            )
            opened = await conn.execute(
                select(tickets.c.platform, tickets.c.customer_id, func.max(tickets.c.id))
                .where(
                    tickets.c.customer_id.in_(authors),
                    tickets.c.state != TicketState.RESOLVED.value,
                )
                .group_by(tickets.c.platform, tickets.c.customer_id)
            )
            acks = {(Platform(p), a): int(n) for p, a, n in acked}
            latest = {(Platform(p), a): int(t) for p, a, t in opened}
        return {k: AuthorActivity(acks.get(k, 0), latest.get(k)) for k in wanted}

    @staticmethod
    def _ticket_values(d: Decision, now: datetime) -> dict[str, Any]:
        m, verdict, plan = d.stored.mention, d.verdict, d.plan
        assert verdict is not None  # noqa: S101 — filtered by the caller
        assert plan is not None  # noqa: S101
        return {
            "mention_id": d.stored.id,
            "platform": m.platform.value,
            "customer_id": m.author_id,
            "customer_handle": m.author_handle,
            "state": TicketState.OPEN.value,
            "category": verdict.category.value,
            "priority": plan.priority,
            "confidence": verdict.confidence,
            "reasons": list(verdict.reasons),
            "policy": plan.policy,
            "policy_snapshot": d.policy_snapshot,
            "escalation_step": 0,
            "notices_sent": 0,
            # the ladder starts now; the sweep sends its first notice. A ticket linked to an
            # incident keeps its policy for later (a reopen) but the incident escalates instead.
            "ladder_started_at": now if plan.policy and d.incident_id is None else None,
            "next_escalation_at": now if plan.policy and d.incident_id is None else None,
            "incident_id": d.incident_id,
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    def _mention_decision(d: Decision, ticket_id: int | None) -> dict[str, Any]:
        v = d.verdict
        return {
            "m_id": d.stored.id,
            "m_status": d.status.value,
            "m_reason": d.screen_reason,
            "m_category": v.category.value if v else None,
            "m_confidence": v.confidence if v else None,
            "m_reasons": list(v.reasons) if v else None,
            "m_ticket": ticket_id,
        }

    @staticmethod
    def _opened_event(d: Decision, ticket_id: int, now: datetime) -> dict[str, Any]:
        v = d.verdict
        assert v is not None  # noqa: S101 — filtered by the caller
        return {
            "ticket_id": ticket_id,
            "at": now,
            "actor": SYSTEM_ACTOR,
            "kind": "opened",
            "from_state": None,
            "to_state": TicketState.OPEN.value,
            "reason": f"{v.category.value} ({v.confidence:.2f})"
            + (f", linked to INC-{d.incident_id}" if d.incident_id else ""),
            "data": {"mention_id": d.stored.id, "reasons": list(v.reasons)}
            | ({"incident": d.incident_id} if d.incident_id else {}),
        }

    @staticmethod
    def _ack_row(d: Decision, ticket_id: int, text: str, now: datetime) -> dict[str, Any]:
        m, plan, ack = d.stored.mention, d.plan, d.ack
        assert plan is not None  # noqa: S101 — filtered by the caller
        assert ack is not None  # noqa: S101
        return pending_row(
            ticket_id=ticket_id,
            kind=OutboxKind.ACK,
            platform=m.platform,
            destination=ack.destination,
            text=text,
            key=f"ack:{m.platform.value}:{m.external_id}",
            priority=plan.priority,
            now=now,
        )

    async def put_card(self, ticket_id: int, chat_id: int, message_id: int) -> None:
        """Remember (or move) the message that is a ticket's card in a staff chat."""
        now = self.clock.now()
        stmt = self._insert(staff_cards).values(
            ticket_id=ticket_id,
            chat_id=chat_id,
            message_id=message_id,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["ticket_id", "chat_id"],
            set_={"message_id": message_id, "updated_at": now},
        )
        async with self.write() as conn:
            await conn.execute(stmt)
