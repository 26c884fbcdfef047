"""The staff side: ticket cards, staff actions and replies, applied through the store.

The chat adapter (``bot/platforms/telegram_staff.py``) turns Telegram updates into calls on
:class:`StaffDesk`; decisions are made by ``handlers/staff.py``; every change is one
transaction that also queues the card edit (and any customer reply) in the outbox.
"""

from __future__ import annotations

import html
import re
import statistics
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, func, select, update

from bot.config import StaffConfig
from bot.domain import TRIAGE_PREFIX, Category, OutboxKind, Platform, TicketState
from bot.escalation import reschedule
from bot.incidents import IncidentDesk, incident_ref
from bot.models import incidents, mentions, outbox, staff_cards, ticket_events, tickets
from bot.platforms.base import PlatformAdapter
from bot.policy import EscalationFile
from bot.store import Store, mention_from_row, pending_row, ticket_ref
from bot.tasks import call_observers
from bot.templates import NOTE_MAX, TemplatesFile, render_message
from bot.textlimits import X_MAX_WEIGHTED, x_weighted_length
from handlers.staff import Action, Member, Outcome, TicketView, Verb, decide

CATEGORY_ICON: Final = {"complaint": "🔴", "question": "🔵", "praise": "💚", "other": "⚪"}
DIGEST_SHOWN: Final = 10  # tickets shown in full in a digest; the rest by reference
MAX_CARD_TEXT: Final = 1500  # the customer's text on a card; Telegram allows 4096 in all


@dataclass(frozen=True, slots=True)
class Card:
    """A rendered ticket card: Telegram HTML and inline keyboard rows of (label, data)."""

    html: str
    buttons: list[list[tuple[str, str]]]


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def render_card(
    ticket: Mapping[Any, Any], mention: Mapping[Any, Any], now: datetime, prefix: str
) -> Card:
    """The card staff see; everything the customer wrote is escaped (no markup injection)."""
    ref = ticket_ref(prefix, ticket["id"])
    category = ticket["category"]
    esc = html.escape
    lines = [
        f"{CATEGORY_ICON.get(category, '')} <b>{esc(category.capitalize())} · {ref}</b>"
        f" · priority {ticket['priority']}"
        + (f" · policy {esc(ticket['policy'])}" if ticket["policy"] else ""),
        f"<b>@{esc(ticket['customer_handle'])}</b> on {esc(ticket['platform'])}"
        + (
            f' · <a href="{esc(mention["url"], quote=True)}">open post</a>'
            if mention["url"]
            else ""
        ),
        f"<blockquote>{esc(mention['text'][:MAX_CARD_TEXT])}</blockquote>",
    ]
    triage = next((r for r in ticket["reasons"] if str(r).startswith(TRIAGE_PREFIX)), None)
    if triage is not None:
        why = esc(triage.removeprefix(TRIAGE_PREFIX))
        lines.insert(1, f"⚠️ <b>Needs triage</b>: {why}; check the category")
    incident = mention.get("incident")
    if incident is not None:
        fixed = incident["state"] == "fixed"
        lines.insert(
            1,
            f"🚨 Linked to <b>{incident_ref(incident['id'])}</b> ({esc(incident['title'])}): "
            + (
                "fixed; the customer was told."
                if fixed
                else "escalated with the incident, not on its own."
            ),
        )
    if mention.get("follow_ups"):
        latest = " ".join(str(mention["latest_follow_up"]).split())[:300]
        lines.append(f"↪ {mention['follow_ups']} follow-up(s), latest: “{esc(latest)}”")
    lines += [
        f"Confidence {ticket['confidence']:.2f}: " + esc("; ".join(ticket["reasons"][:3])),
    ]
    age = (now - ticket["created_at"]).total_seconds()
    first = ticket["first_response_at"]
    sla = (
        f"first human response after {_age((first - ticket['created_at']).total_seconds())}"
        if first
        else "no human response yet"
    )
    lines.append(f"Age {_age(age)} · {sla}")
    state = ticket["state"]
    if state == TicketState.CLAIMED.value:
        status = f"claimed by {ticket['claimed_by']}"
    elif state == TicketState.SNOOZED.value and ticket["snoozed_until"]:
        status = f"snoozed until {ticket['snoozed_until']:%H:%M} UTC"
    else:
        status = state + (f" (held by {ticket['claimed_by']})" if ticket["claimed_by"] else "")
    lines.append(f"State: <b>{esc(status)}</b>")
    tid = ticket["id"]
    if state == TicketState.RESOLVED.value:
        buttons = [
            [(f"→ {c.value}", f"cat_{c.value}:{tid}") for c in Category if c.value != category]
        ]
    else:
        buttons = [
            [("Claim", f"claim:{tid}"), ("Resolve", f"resolve:{tid}")],
            [
                ("Snooze 30m", f"snooze30:{tid}"),
                ("Snooze 4h", f"snooze4h:{tid}"),
                ("Escalate now", f"escalate:{tid}"),
            ],
            [(f"→ {c.value}", f"cat_{c.value}:{tid}") for c in Category if c.value != category],
        ]
    return Card("\n".join(lines), buttons)


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What happened to a staff reply."""

    message: str
    queued: bool


class StaffDesk:
    """Applies staff actions and replies; queues card edits and customer replies."""

    def __init__(
        self,
        *,
        store: Store,
        staff: StaffConfig,
        escalation: EscalationFile,
        adapters: Mapping[Platform, PlatformAdapter],
        ref_prefix: str,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self.escalation = escalation
        self._adapters = adapters
        self._prefix = ref_prefix
        self.on_queued = on_queued
        # a person answered a ticket's customer for the first time (opened at, now)
        self.on_first_reply: Callable[[datetime, datetime], None] = lambda opened, now: None
        self.observers: list[Callable[[str], None]] = []
        # set by the app: fires the ladder's next step now (the escalation sweep owns ladders)
        self.escalate: Callable[[int, str], Awaitable[str]] | None = None
        self.incidents: IncidentDesk | None = None  # set by the app when crisis mode is on
        # what public notes are rendered with (the app follows config reloads)
        self.templates: Callable[[], TemplatesFile] = TemplatesFile
        self.brand: Callable[[], str] = lambda: ""
        self.members = {
            m.telegram_user_id: Member(m.name, m.telegram_user_id, m.role) for m in staff.members
        }
        self.chat_ids = frozenset(g.chat_id for g in staff.groups)

    async def load(self, ticket_id: int) -> tuple[RowMapping, dict[str, Any]] | None:
        """A ticket, its opening mention, and how many follow-ups came after it."""
        async with self._store.read() as conn:
            ticket = (
                (await conn.execute(select(tickets).where(tickets.c.id == ticket_id)))
                .mappings()
                .first()
            )
            if ticket is None:
                return None
            mention = (
                (await conn.execute(select(mentions).where(mentions.c.id == ticket["mention_id"])))
                .mappings()
                .first()
            )
            later = (
                (
                    await conn.execute(
                        select(mentions.c.text)
                        .where(
                            mentions.c.ticket_id == ticket_id,
                            mentions.c.id != ticket["mention_id"],
                        )
                        .order_by(mentions.c.id.desc())
                    )
                )
                .scalars()
                .all()
            )
            incident = None
            if ticket["incident_id"] is not None:
                incident = (
                    (
                        await conn.execute(
                            select(incidents.c.id, incidents.c.title, incidents.c.state).where(
                                incidents.c.id == ticket["incident_id"]
                            )
                        )
                    )
                    .mappings()
                    .first()
                )
        if mention is None:
            return None
        return ticket, {
            **mention,
            "follow_ups": len(later),
            "latest_follow_up": later[0] if later else None,
            "incident": incident,
        }

    async def ticket_for_card(self, chat_id: int, message_id: int) -> int | None:
        """The ticket a bot message in ``chat_id`` is about: its card, or a reminder under it."""
        async with self._store.read() as conn:
            card = (
                await conn.execute(
                    select(staff_cards.c.ticket_id).where(
                        staff_cards.c.chat_id == chat_id, staff_cards.c.message_id == message_id
                    )
                )
            ).scalar_one_or_none()
            if card is not None:
                return int(card)
            notices = await conn.execute(
                select(outbox.c.ticket_id, outbox.c.destination).where(
                    outbox.c.platform == Platform.STAFF.value,
                    outbox.c.external_id == str(message_id),
                )
            )
            for ticket_id, dest in notices.all():
                if int(dest.get("chat_id", 0)) == chat_id and not dest.get("digest"):
                    return int(ticket_id)
        return None

    async def act(  # noqa: PLR0911 — one answer per way it can end
        self, action: Action, user_id: int, actor_label: str
    ) -> Outcome:
        """Decide and apply one staff action; record refusals too."""
        member = self.members.get(user_id)
        loaded = await self.load(action.ticket_id)
        if loaded is None:
            return Outcome(f"There is no ticket {ticket_ref(self._prefix, action.ticket_id)}.")
        ticket, _ = loaded
        view = TicketView(
            ticket["id"],
            ticket_ref(self._prefix, ticket["id"]),
            TicketState(ticket["state"]),
            Category(ticket["category"]),
            ticket["claimed_by"],
        )
        now = self._store.clock.now()
        outcome = decide(action, view, member, now)
        actor = member.name if member else actor_label
        if outcome.refused:
            await self._event(
                ticket["id"], actor, "refused", f"{action.verb.value} refused: not staff"
            )
            self._tell(f"{actor} tried to {action.verb.value} {view.ref}: refused (not staff)")
            return outcome
        if not outcome.changes and outcome.to_state is None:
            return outcome
        if action.verb is Verb.ESCALATE and self.escalate is not None:
            message = await self.escalate(ticket["id"], actor)
            self._tell(f"{actor}: {message}")
            return Outcome(message)
        changes = dict(outcome.changes)
        if action.verb is Verb.RECATEGORISE and action.category is not None:
            policy = self.escalation.policy_for(action.category, ticket["priority"])
            changes.update(policy=policy, policy_snapshot=self.escalation.snapshot(policy))
            # A person has now judged the category: the card's triage warning is answered.
            reasons = [str(r) for r in ticket["reasons"] or []]
            changes["reasons"] = [r for r in reasons if not r.startswith(TRIAGE_PREFIX)]
        also: list[dict[str, Any]] = []
        if action.verb is Verb.RESOLVE and action.public:
            assert member is not None  # noqa: S101 — refused above otherwise
            note = await self._public_note(ticket, action.note, now)
            if isinstance(note, str):
                return Outcome(f"{view.ref} was not resolved: {note}")
            also.append(note)
            changes.update(
                first_response_at=ticket["first_response_at"] or now, last_staff_reply_at=now
            )
        won = await self._apply(ticket, action, outcome, changes, actor, now, also)
        if not won:
            fresh = await self.load(action.ticket_id)
            holder = fresh[0]["claimed_by"] if fresh else None
            return Outcome(
                f"{view.ref} is already claimed by {holder}."
                if holder
                else f"{view.ref} changed meanwhile; try again."
            )
        self.on_queued()
        if also and ticket["first_response_at"] is None:
            self.on_first_reply(ticket["created_at"], now)
        self._tell(f"{actor}: {outcome.message}")
        return outcome

    async def _public_note(
        self, ticket: RowMapping, note: str, now: datetime
    ) -> dict[str, Any] | str:
        """The outbox row that tells the customer a resolution note, or why it cannot."""
        note = " ".join(note.split())
        if not note:
            return "a public note needs text (/resolve N public: <note>)."
        if len(note) > NOTE_MAX:
            return f"the note is {len(note)} characters; customers get at most {NOTE_MAX}."
        platform = Platform(ticket["platform"])
        adapter = self._adapters.get(platform)
        loaded = await self.load(ticket["id"])
        if adapter is None or loaded is None:
            return f"{platform.value} is not connected; nothing was sent."
        stored = mention_from_row(loaded[1]).mention
        destination = adapter.reply_destination(stored)
        if destination is None:
            return f"{platform.value} gave no way to reply to this customer."
        text = render_message(
            self.templates().resolution,
            platform,
            variant_key=stored.external_id,
            handle=stored.author_handle,
            ref=ticket_ref(self._prefix, ticket["id"]),
            brand=self.brand(),
            note=note,
        )
        if platform is Platform.X and x_weighted_length(text) > X_MAX_WEIGHTED:
            return f"too long for X ({x_weighted_length(text)} of {X_MAX_WEIGHTED})."
        return pending_row(
            ticket_id=ticket["id"],
            kind=OutboxKind.FOLLOW_UP,
            platform=platform,
            destination=destination,
            text=text,
            key=f"resolution:{ticket['id']}:{now.isoformat()}",
            priority=0,
            now=now,
        )

    def _tell(self, line: str) -> None:
        call_observers(self.observers, line)

    async def _apply(  # noqa: PLR0917 — one call site, all parts of one change
        self,
        ticket: RowMapping,
        action: Action,
        outcome: Outcome,
        changes: dict[str, Any],
        actor: str,
        now: datetime,
        also: list[dict[str, Any]],
    ) -> bool:
        stmt = update(tickets).where(tickets.c.id == ticket["id"])
        if action.verb is Verb.CLAIM:
            stmt = stmt.where(
                tickets.c.claimed_by.is_(None), tickets.c.state != TicketState.RESOLVED.value
            )
        elif action.verb is Verb.RECATEGORISE:  # allowed on resolved tickets (a label fix)
            stmt = stmt.where(tickets.c.category == ticket["category"])
        else:
            stmt = stmt.where(tickets.c.state == ticket["state"])  # optimistic: nobody moved it
        values = {**changes, "updated_at": now}
        if outcome.to_state is not None:
            values["state"] = outcome.to_state.value
        values.update(reschedule({**ticket, **values}, now))
        async with self._store.write() as conn:
            moved = await conn.execute(stmt.values(**values))
            if moved.rowcount != 1:
                return False
            data: dict[str, Any] = {}
            if action.verb is Verb.RECATEGORISE:
                data = {
                    "from": ticket["category"],
                    "to": changes["category"],
                    "label_correction": True,
                }
            await conn.execute(
                ticket_events.insert().values(
                    ticket_id=ticket["id"],
                    at=now,
                    actor=actor,
                    kind=outcome.event_kind,
                    from_state=ticket["state"],
                    to_state=(outcome.to_state or TicketState(ticket["state"])).value,
                    reason=outcome.message,
                    data=data,
                )
            )
            if also:  # sent only if the change won
                await conn.execute(outbox.insert(), also)
            await self._store.queue_card_edits(conn, ticket["id"], now)
        return True

    async def _event(self, ticket_id: int, actor: str, kind: str, reason: str) -> None:
        async with self._store.write() as conn:
            await conn.execute(
                ticket_events.insert().values(
                    ticket_id=ticket_id,
                    at=self._store.clock.now(),
                    actor=actor,
                    kind=kind,
                    reason=reason,
                )
            )

    async def command(self, name: str, args: list[str], user_id: int) -> str:
        """Answer ``/queue``, ``/stats``, ``/ticket N``, ``/resolve N [public] [note]`` (HTML).

        ``/resolve N public: <note>`` sends the note to the customer in their thread.
        """
        if name == "queue":
            return await self._queue()
        if name == "stats":
            return await self.stats()
        if not args or not args[0].lstrip("#").removeprefix(self._prefix).isdigit():
            return f"Usage: /{name} N  (a ticket number, e.g. /{name} 42)"
        ticket_id = int(args[0].lstrip("#").removeprefix(self._prefix))
        if name == "ticket":
            loaded = await self.load(ticket_id)
            if loaded is None:
                return f"There is no ticket {ticket_ref(self._prefix, ticket_id)}."
            return render_card(*loaded, self._store.clock.now(), self._prefix).html
        note = " ".join(args[1:]).strip()
        public = re.match(r"(?i)public:\s*", note)  # the colon: "public holiday…" is a note
        outcome = await self.act(
            Action(
                Verb.RESOLVE,
                ticket_id,
                note=note[public.end() :] if public else note,
                public=public is not None,
            ),
            user_id,
            f"telegram:{user_id}",
        )
        return html.escape(outcome.message)

    async def stats(self) -> str:
        """Today's figures (UTC): received by category, acks, response times, open by state."""
        now = self._store.clock.now()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        async with self._store.read() as conn:
            received = (
                await conn.execute(
                    select(mentions.c.category, mentions.c.status, func.count())
                    .where(mentions.c.received_at >= midnight)
                    .group_by(mentions.c.category, mentions.c.status)
                )
            ).all()
            today = (
                await conn.execute(
                    select(
                        tickets.c.created_at,
                        tickets.c.acknowledged_at,
                        tickets.c.first_response_at,
                    ).where(tickets.c.created_at >= midnight)
                )
            ).all()
            open_states = (
                await conn.execute(
                    select(tickets.c.state, func.count())
                    .where(tickets.c.state != TicketState.RESOLVED.value)
                    .group_by(tickets.c.state)
                )
            ).all()
        by_category: dict[str, int] = {}
        for category, status, n in received:
            key = "screened" if status == "screened" else (category or "undecided")
            by_category[key] = by_category.get(key, 0) + n
        acks = [(a - c).total_seconds() for c, a, _ in today if a is not None]
        firsts = [(f - c).total_seconds() for c, _, f in today if f is not None]

        def median(values: list[float]) -> str:
            return _age(statistics.median(values)) if values else "n/a"

        def listing(pairs: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(pairs.items())) or "none"

        return "\n".join(
            [
                f"<b>Today</b> (since {midnight:%Y-%m-%d} 00:00 UTC)",
                f"Received: {sum(by_category.values())} ({listing(by_category)})",
                f"Acknowledged: {len(acks)} of {len(today)} tickets, median {median(acks)}",
                f"First human response: {len(firsts)}, median {median(firsts)}",
                f"Open now: {listing(dict(open_states))}",
            ]
        )

    async def digest(self, ticket_ids: list[int]) -> str:
        """One message for many tickets (a storm): counts by category, most urgent first."""
        async with self._store.read() as conn:
            result = await conn.execute(
                select(
                    tickets.c.id,
                    tickets.c.category,
                    tickets.c.priority,
                    tickets.c.customer_handle,
                    tickets.c.created_at,
                    mentions.c.text,
                )
                .join(mentions, mentions.c.id == tickets.c.mention_id)
                .where(tickets.c.id.in_(ticket_ids), tickets.c.state != TicketState.RESOLVED.value)
                .order_by(tickets.c.priority, tickets.c.created_at)
            )
            rows = result.mappings().all()
        if not rows:
            return ""
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["category"]] = counts.get(r["category"], 0) + 1
        summary = ", ".join(f"{n} {c}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines = [
            f"📋 <b>Digest: {len(rows)} tickets need a look</b> ({summary}).",
            "The group's message budget is spent, so they come together. Most urgent first:",
        ]
        for r in rows[:DIGEST_SHOWN]:
            lines.append(
                f"{CATEGORY_ICON.get(r['category'], '')} p{r['priority']} "
                f"{ticket_ref(self._prefix, r['id'])} @{html.escape(r['customer_handle'])}: "
                f"“{html.escape(' '.join(r['text'].split())[:70])}”"
            )
        if len(rows) > DIGEST_SHOWN:
            rest = ", ".join(ticket_ref(self._prefix, r["id"]) for r in rows[DIGEST_SHOWN:])
            lines.append(f"Also: {rest}")
        lines.append("/ticket N posts a ticket's card here; /queue lists what is open.")
        return "\n".join(lines)[:4000]

    async def _queue(self) -> str:
        async with self._store.read() as conn:
            result = await conn.execute(
                select(tickets)
                .where(tickets.c.state != TicketState.RESOLVED.value)
                .order_by(tickets.c.priority, tickets.c.created_at)
                .limit(20)
            )
            rows = result.mappings().all()
        if not rows:
            return "No open tickets."
        now = self._store.clock.now()
        lines = [f"<b>Open tickets</b> (most urgent first, {len(rows)} shown)"]
        for t in rows:
            holder = f", {html.escape(t['claimed_by'])}" if t["claimed_by"] else ""
            lines.append(
                f"{CATEGORY_ICON.get(t['category'], '')} {ticket_ref(self._prefix, t['id'])} "
                f"p{t['priority']} {t['state']}{holder} · @{html.escape(t['customer_handle'])} · "
                f"{_age((now - t['created_at']).total_seconds())}"
            )
        return "\n".join(lines)

    async def reply(  # noqa: PLR0917 — the parts of one staff message
        self,
        ticket_id: int,
        user_id: int,
        actor_label: str,
        text: str,
        message_id: int,
        chat_id: int = 0,
    ) -> ReplyResult:
        """Relay a staff reply to the customer in the original thread, through the outbox."""
        member = self.members.get(user_id)
        loaded = await self.load(ticket_id)
        if loaded is None:
            return ReplyResult("That card's ticket no longer exists.", False)
        ticket, mention = loaded
        ref = ticket_ref(self._prefix, ticket_id)
        if member is None:
            await self._event(ticket_id, actor_label, "refused", "reply refused: not staff")
            return ReplyResult("Only configured support staff can reply to customers.", False)
        platform = Platform(ticket["platform"])
        adapter = self._adapters.get(platform)
        if adapter is None:
            return ReplyResult(
                f"{platform.value} is not connected; the reply was not sent.", False
            )
        body = text.strip()
        if platform is Platform.X and x_weighted_length(body) > X_MAX_WEIGHTED:
            return ReplyResult(
                f"Too long for X ({x_weighted_length(body)} of {X_MAX_WEIGHTED}); not sent.",
                False,
            )
        destination = adapter.reply_destination(mention_from_row(mention).mention)
        if destination is None:
            return ReplyResult(f"{platform.value} gave no way to reply to this customer.", False)
        now = self._store.clock.now()
        async with self._store.write() as conn:
            await conn.execute(
                outbox.insert().values(
                    pending_row(
                        ticket_id=ticket_id,
                        kind=OutboxKind.REPLY,
                        platform=platform,
                        destination=destination,
                        text=body,
                        key=f"reply:{ticket_id}:{chat_id}:{message_id}",  # ids repeat across chats
                        priority=0,
                        now=now,
                    )
                )
            )
            await conn.execute(
                update(tickets)
                .where(tickets.c.id == ticket_id)
                .values(
                    first_response_at=ticket["first_response_at"] or now,
                    last_staff_reply_at=now,
                    updated_at=now,
                    **reschedule({**ticket, "last_staff_reply_at": now}, now),
                )
            )
            await conn.execute(
                ticket_events.insert().values(
                    ticket_id=ticket_id,
                    at=now,
                    actor=member.name,
                    kind="staff_reply",
                    from_state=ticket["state"],
                    to_state=ticket["state"],
                    reason=body[:500],
                    data={"telegram_message_id": message_id},
                )
            )
            await self._store.queue_card_edits(conn, ticket_id, now)
        self.on_queued()
        if ticket["first_response_at"] is None:
            self.on_first_reply(ticket["created_at"], now)
        self._tell(f"{member.name} replied to {ref}: “{body[:80]}”")
        return ReplyResult(f"Reply to {ref} queued for @{ticket['customer_handle']}.", True)
