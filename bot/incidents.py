"""Crisis mode: surges of similar complaints, incidents that group them, follow-ups when fixed.

:class:`IncidentDesk` looks at recent complaints per platform for a word or phrase many
customers share, much more often than usual (``bot/themes.py``), and alerts the staff lead
group once per theme, with a button to declare an incident. An incident (declared from that
button or with ``/incident declare``) has a title, matching terms, a public status and a
state. While it lasts, new matching complaints and questions are linked to it by the
pipeline: their customers are told the problem is known (the incident's templates), they keep
a personal ticket, and their tickets do not escalate one by one; the incident's card in the
staff chat pages the leads instead (again after ``incidents.remind_every`` without news).
Fixing it sends each linked customer one follow-up in their thread and resolves their tickets;
a reply within the reopen window reopens only that customer's ticket.
"""

from __future__ import annotations

import asyncio
import enum
import html
import logging
import math
import re
import shlex
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import RowMapping, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.config import IncidentsConfig, StaffConfig
from bot.domain import Category, MentionStatus, OutboxKind, Platform, TicketState
from bot.models import incidents, mentions, outbox, surges, ticket_events, tickets
from bot.platforms.base import PlatformAdapter
from bot.store import SYSTEM_ACTOR, Store, mention_from_row, pending_row, ticket_ref
from bot.tasks import call_observers
from bot.templates import STATUS_MAX, TITLE_MAX, TemplatesFile, render_message
from bot.themes import (
    QUOTES,
    SAMPLES,
    Complaint,
    Theme,
    content_words,
    find_themes,
    matches,
    term_words,
)

logger = logging.getLogger(__name__)

DEFAULT_STATUS: Final = "Reply here if you'd like updates."
MAX_TERMS: Final = 10
WINDOW_ROWS: Final = 5000  # complaints looked at per surge check (the newest)
HISTORY: Final = timedelta(days=1)  # what "usual" is measured against
UPDATE_PRIORITY: Final = 5  # after every acknowledgement (handlers use 1 to 4)
CARD_GIVE_UP: Final = timedelta(minutes=10)  # an incident card never posted: stop editing it
HELD: Final = (TicketState.CLAIMED.value, TicketState.SNOOZED.value)  # a person has these
STATUS_KEYS: Final = ("investigating", "identified")


class IncidentState(enum.StrEnum):
    """Where an incident is: being looked into, cause known, fixed (over)."""

    INVESTIGATING = "investigating"
    IDENTIFIED = "identified"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class ActiveIncident:
    """An incident new mentions can still be linked to."""

    id: int
    title: str
    status: str
    state: IncidentState
    terms: tuple[str, ...]

    def matches(self, text: str) -> bool:
        """Whether ``text`` is about this incident."""
        return matches(content_words(text), self.terms)


def incident_ref(incident_id: int) -> str:
    """How staff and commands name an incident."""
    return f"INC-{incident_id}"


async def load_active(conn: AsyncConnection) -> list[ActiveIncident]:
    """Incidents not yet fixed, oldest first (a mention matching two joins the older)."""
    rows = await conn.execute(
        select(
            incidents.c.id,
            incidents.c.title,
            incidents.c.status_text,
            incidents.c.state,
            incidents.c.terms,
        )
        .where(incidents.c.state != IncidentState.FIXED.value)
        .order_by(incidents.c.id)
    )
    return [
        ActiveIncident(int(i), title, status, IncidentState(state), tuple(terms))
        for i, title, status, state, terms in rows.all()
    ]


class ActiveIncidents:
    """The active incidents, read at most every ``ttl`` seconds (the hot path asks per group).

    This process's own declarations, updates and fixes call :meth:`changed` and are seen at
    once; another process's within ``ttl``. A mention linked to an incident fixed meanwhile is
    settled by :meth:`IncidentDesk.settle_stragglers`.
    """

    def __init__(self, ttl: float = 1.0) -> None:
        self._ttl = ttl
        self._found: list[ActiveIncident] = []
        self._loaded_at = -math.inf

    def changed(self) -> None:
        """Read them again on the next call."""
        self._loaded_at = -math.inf

    async def get(self, conn: AsyncConnection) -> list[ActiveIncident]:
        """The active incidents, fresh within ``ttl``."""
        now = time.monotonic()
        if now - self._loaded_at >= self._ttl:
            self._found = await load_active(conn)
            self._loaded_at = now
        return self._found


def first_match(found: Sequence[ActiveIncident], text: str) -> ActiveIncident | None:
    """The oldest active incident ``text`` is about, if any."""
    if not found:
        return None
    words = content_words(text)
    return next((inc for inc in found if matches(words, inc.terms)), None)


# -- the desk ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentCard:
    """An incident's card or a surge alert: Telegram HTML and buttons (label, data)."""

    html: str
    buttons: list[list[tuple[str, str]]] = field(default_factory=list)


CALLBACK_RE: Final = re.compile(r"^inc_(declare|identified|fixed):(\d{1,12})$")


class IncidentDesk:
    """Surge checks, and the leads' incident commands and buttons, applied through the store."""

    def __init__(
        self,
        *,
        store: Store,
        config: IncidentsConfig,
        staff: StaffConfig,
        adapters: Mapping[Platform, PlatformAdapter],
        templates: Callable[[], TemplatesFile],
        brand: Callable[[], str],
        ref_prefix: str,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self.config = config
        self._adapters = adapters
        self._templates = templates
        self._brand = brand
        self._prefix = ref_prefix
        self.on_queued = on_queued
        self.chat_id = staff.chat_of(config.group or staff.alerts_group)
        self._leads = {m.telegram_user_id: m.name for m in staff.members if m.role == "lead"}
        self._members = {m.telegram_user_id: m.name for m in staff.members}
        self.observers: list[Callable[[str], None]] = []
        self.on_change: Callable[[], None] = lambda: None  # an incident began, changed or ended

    async def run(self, cards_every: timedelta) -> None:
        """Look for surges every ``surge.every``; refresh incident cards every ``cards_every``."""
        surge_every = self.config.surge.every.total_seconds()
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        while True:
            try:
                await self.refresh_cards()
                await self.settle_stragglers()
                await self.remind()
                if self.config.enabled and loop.time() >= next_check:
                    next_check = loop.time() + surge_every
                    await self.check_surges()
            except Exception:  # the watch must outlive a database hiccup
                logger.exception("incidents: a surge check or card refresh failed")
            await asyncio.sleep(min(cards_every.total_seconds(), surge_every))

    # -- surges --------------------------------------------------------------------------

    async def check_surges(self) -> int:
        """Look for surges now; alert each new theme once. Returns the alerts queued."""
        now = self._store.clock.now()
        surge = self.config.surge
        start = now - surge.window
        window, history, active = await self._complaints(start, now)
        skip = frozenset(content_words(self._brand()))
        themes = await asyncio.to_thread(
            find_themes,
            window,
            history,
            threshold=surge.threshold,
            min_ratio=surge.min_ratio,
            min_share=surge.min_share,
            skip=skip,
        )
        fresh: dict[str, list[Theme]] = {}
        for theme in themes:
            if any(matches(term_words(theme.key), inc.terms) for inc in active):
                continue  # already an incident: its card shows the growth
            fresh.setdefault(theme.platform, []).append(theme)
        queued = 0
        for platform_themes in fresh.values():
            if await self._alert(platform_themes, now):
                queued += 1
        if queued:
            self.on_queued()
        return queued

    async def _complaints(
        self, start: datetime, now: datetime
    ) -> tuple[list[Complaint], list[Complaint], list[ActiveIncident]]:
        """The window's complaints not linked to an incident, the day's before, and incidents."""
        cols = (mentions.c.platform, mentions.c.author_id, mentions.c.text, mentions.c.received_at)
        complaint = and_(
            mentions.c.category == Category.COMPLAINT.value,
            mentions.c.status.in_([MentionStatus.TICKETED.value, MentionStatus.FOLLOW_UP.value]),
        )
        async with self._store.read() as conn:
            recent = await conn.execute(
                select(*cols)
                .outerjoin(tickets, tickets.c.id == mentions.c.ticket_id)
                .where(
                    complaint,
                    mentions.c.received_at > start,
                    mentions.c.received_at <= now,
                    tickets.c.incident_id.is_(None),
                )
                .order_by(mentions.c.received_at.desc())
                .limit(WINDOW_ROWS)
            )
            before = await conn.execute(
                select(*cols)
                .where(
                    complaint,
                    mentions.c.received_at > start - HISTORY,
                    mentions.c.received_at <= start,
                )
                .order_by(mentions.c.received_at.desc())
                .limit(WINDOW_ROWS)
            )
            active = await load_active(conn)
        return (
            [Complaint(*r) for r in recent.all()],
            [Complaint(*r) for r in before.all()],
            active,
        )

    async def _alert(self, themes: Sequence[Theme], now: datetime) -> bool:
        """Remember one platform's themes; alert those not alerted within the cooldown.

        The new themes of one look go out as one message (an outage worded two ways is one
        alert, with a button per theme); a theme whose key is among a recent alert's top terms
        (or the other way round) is that alert's storm, not a new one.
        """
        if self.chat_id is None:
            for theme in themes:
                logger.warning(
                    "surge on %s: %d customers about %r (no staff group for alerts)",
                    theme.platform,
                    theme.customers,
                    theme.key,
                )
            return False
        cutoff = now - self.config.surge.cooldown
        alerted: list[tuple[int, Theme]] = []
        async with self._store.write() as conn:
            for theme in themes:
                surge_id = await self._remember(conn, theme, now, cutoff)
                if surge_id is not None:
                    alerted.append((surge_id, theme))
            if alerted:
                card = self.surge_card(alerted)
                key = f"surge:{alerted[0][0]}:{uuid.uuid4().hex}"
                await conn.execute(pending_row_for_staff(self.chat_id, card, key, now))
        for _, theme in alerted:
            call_observers(
                self.observers,
                f"🚨 surge on {theme.platform}: {theme.customers} customers about “{theme.key}”",
            )
        return bool(alerted)

    async def _remember(
        self, conn: AsyncConnection, theme: Theme, now: datetime, cutoff: datetime
    ) -> int | None:
        """The theme's surge row, new or renewed; None when it was alerted recently."""
        values = {
            "platform": theme.platform,
            "theme": theme.key[:100],
            "terms": list(theme.terms),
            "complaints": theme.customers,
            "samples": [s[:300] for s in theme.samples],
            "alerted_at": now,
        }
        recent = await conn.execute(
            select(surges.c.theme, surges.c.terms).where(
                surges.c.platform == theme.platform, surges.c.alerted_at > cutoff
            )
        )
        for key, terms in recent.all():
            if key == values["theme"] or key in theme.terms or theme.key in terms:
                return None
        existing = (
            await conn.execute(
                select(surges.c.id).where(
                    surges.c.platform == theme.platform, surges.c.theme == values["theme"]
                )
            )
        ).scalar_one_or_none()
        if existing is None:
            stmt = (
                self._store.dialect_insert(surges)
                .values(values)
                .on_conflict_do_nothing(index_elements=["platform", "theme"])
                .returning(surges.c.id)
            )
            surge_id = (await conn.execute(stmt)).scalar_one_or_none()
            return int(surge_id) if surge_id is not None else None  # None: just alerted
        moved = await conn.execute(
            update(surges)
            .where(surges.c.id == existing, surges.c.alerted_at <= cutoff)
            .values(**values, incident_id=None)
        )
        return int(existing) if moved.rowcount == 1 else None

    def surge_card(self, alerted: Sequence[tuple[int, Theme]]) -> IncidentCard:
        """The surge alert leads see, with a button per theme that declares an incident."""
        esc = html.escape
        window = _span(self.config.surge.window)
        platform = alerted[0][1].platform
        lines = [f"🚨 <b>Surge on {esc(platform)}</b> in the last {window}:"]
        buttons: list[list[tuple[str, str]]] = []
        for surge_id, theme in alerted:
            lines.append(
                f"<b>{theme.customers} customers</b> complained about “<b>{esc(theme.key)}</b>”"
                + (
                    f" (top terms: {', '.join(esc(t) for t in theme.terms)})"
                    if len(theme.terms) > 1
                    else ""
                )
            )
            lines += [f"• “{esc(' '.join(s.split())[:200])}”" for s in theme.samples]
            label = "Declare incident" if len(alerted) == 1 else f"Declare: {theme.key}"[:60]
            buttons.append([(label, f"inc_declare:{surge_id}")])
        key = alerted[0][1].key
        lines.append(
            "Declare an incident to answer them together: the button, or "
            f'/incident declare "title" {esc(_quoted(key))}'
        )
        leads = self.ping()
        if leads:
            lines.append(leads)
        return IncidentCard("\n".join(lines), buttons)

    # -- declaring, updating, fixing ------------------------------------------------------

    async def command(self, text: str, user_id: int) -> str:  # noqa: PLR0911 — one answer each
        """``/incident …`` from the staff chat (``text``: what follows the command)."""
        try:
            args = shlex.split(text.translate(QUOTES))
        except ValueError as exc:
            return html.escape(f"Cannot read that: {exc} (close your quotes).")
        verb = args[0].lower() if args else "list"
        if verb in {"list", "ls"}:
            return await self.listing()
        if verb not in {"declare", "update", "identified", "fix", "fixed"}:
            return html.escape(USAGE)
        who = self._leads.get(user_id)
        if who is None:
            return "Only leads can declare, update or fix incidents."
        if verb == "declare":
            if len(args) < 3:
                return html.escape('Usage: /incident declare "title" term ["a phrase" ...]')
            return html.escape(await self.declare(args[1], args[2:], who))
        if len(args) < 2 or not args[1].upper().removeprefix("INC-").isdigit():
            return html.escape(f"Usage: /incident {verb} N [text] (N: the incident's number)")
        incident_id = int(args[1].upper().removeprefix("INC-"))
        rest = args[2:]
        if verb == "update":
            state = None
            if rest and rest[0].lower() in STATUS_KEYS:
                state = IncidentState(rest[0].lower())
                rest = rest[1:]
            if not rest:
                return html.escape('Usage: /incident update N [identified] "public status text"')
            return html.escape(await self.update(incident_id, " ".join(rest), who, state))
        if verb == "identified":
            status = " ".join(rest) or None
            return html.escape(
                await self.update(incident_id, status, who, IncidentState.IDENTIFIED)
            )
        return html.escape(await self.fix(incident_id, who, " ".join(rest) or None))

    async def button(self, data: str, user_id: int) -> tuple[str, bool]:
        """A surge alert's or an incident card's button: (answer, whether it was refused)."""
        match = CALLBACK_RE.match(data)
        if match is None:
            return "This button is not valid any more.", True
        who = self._leads.get(user_id)
        if who is None:
            return "Only leads can declare, update or fix incidents.", True
        verb, number = match.group(1), int(match.group(2))
        if verb == "declare":
            return await self.declare_surge(number, who), False
        if verb == "identified":
            return await self.update(number, None, who, IncidentState.IDENTIFIED), False
        return await self.fix(number, who, None), False

    async def declare_surge(self, surge_id: int, who: str) -> str:
        """Declare the incident a surge alert proposes (once, however many leads click)."""
        async with self._store.read() as conn:
            surge = (
                (await conn.execute(select(surges).where(surges.c.id == surge_id)))
                .mappings()
                .first()
            )
        if surge is None:
            return "That surge is no longer known."
        if surge["incident_id"] is not None:
            return f"Already declared: {incident_ref(surge['incident_id'])}."
        title = f"the {surge['theme']} problem"[:TITLE_MAX]
        return await self.declare(title, [surge["theme"]], who, surge_id=surge_id)

    async def declare(
        self, title: str, terms: Sequence[str], who: str, *, surge_id: int | None = None
    ) -> str:
        """Declare an incident; link the open complaints and questions that match it."""
        if not self.config.enabled:
            return "Crisis mode is off here (incidents.enabled: false); nothing was declared."
        title = " ".join(title.split())
        problem = _check_declaration(title, terms)
        if problem:
            return problem
        clean = tuple(dict.fromkeys(" ".join(term_words(t)) for t in terms))
        now = self._store.clock.now()
        async with self._store.write() as conn:
            for inc in await load_active(conn):
                shared = [t for t in clean if matches(term_words(t), inc.terms)]
                if shared:
                    return (
                        f"{incident_ref(inc.id)} ({inc.title}) already covers “{shared[0]}”; "
                        f'update it instead (/incident update {inc.id} "text").'
                    )
            if surge_id is not None:  # locked: two leads clicking at once declare once
                sel = select(surges.c.incident_id).where(surges.c.id == surge_id)
                if self._store.engine.dialect.name == "postgresql":
                    sel = sel.with_for_update()
                taken = (await conn.execute(sel)).scalar_one_or_none()
                if taken is not None:
                    return f"Already declared: {incident_ref(taken)}."
            state = IncidentState.INVESTIGATING.value
            incident_id = (
                await conn.execute(
                    incidents.insert()
                    .values(
                        title=title,
                        terms=list(clean),
                        status_text=DEFAULT_STATUS,
                        state=state,
                        declared_by=who,
                        declared_at=now,
                        updated_at=now,
                        history=[{"at": now.isoformat(), "by": who, "state": state}],
                        card_chat_id=self.chat_id,
                    )
                    .returning(incidents.c.id)
                )
            ).scalar_one()
            if surge_id is not None:
                await conn.execute(
                    update(surges).where(surges.c.id == surge_id).values(incident_id=incident_id)
                )
            linked = await self._link_open(conn, incident_id, clean, who, now)
            if self.chat_id is not None:
                await conn.execute(
                    pending_row_for_staff(
                        self.chat_id,
                        None,
                        f"incident:{incident_id}:card",
                        now,
                        destination={"incident": incident_id, "post": True},
                    )
                )
        self.on_queued()
        self.on_change()
        ref = incident_ref(incident_id)
        call_observers(self.observers, f"{who} declared {ref} “{title}”: {linked} linked")
        return (
            f"{ref} declared: “{title}”, matching {', '.join(clean)}. "
            f"{linked} open ticket(s) linked; new matching ones will be too."
        )

    async def _link_open(
        self,
        conn: AsyncConnection,
        incident_id: int,
        terms: tuple[str, ...],
        who: str,
        now: datetime,
    ) -> int:
        """Link the open tickets of the linked categories whose opening mention matches."""
        rows = await conn.execute(
            select(tickets.c.id, tickets.c.state, mentions.c.text)
            .join(mentions, mentions.c.id == tickets.c.mention_id)
            .where(
                tickets.c.state != TicketState.RESOLVED.value,
                tickets.c.state.not_in(HELD),  # a person is on it: theirs to answer
                tickets.c.incident_id.is_(None),
                tickets.c.category.in_([c.value for c in self.config.categories]),
            )
        )
        hits = [
            (tid, state) for tid, state, text in rows.all() if matches(content_words(text), terms)
        ]
        if not hits:
            return 0
        moved = await conn.execute(
            update(tickets)
            .where(
                tickets.c.id.in_([tid for tid, _ in hits]),
                tickets.c.incident_id.is_(None),
                tickets.c.state != TicketState.RESOLVED.value,
                tickets.c.state.not_in(HELD),
            )
            .values(incident_id=incident_id, next_escalation_at=None, updated_at=now)
            .returning(tickets.c.id)
        )
        ids = {int(i) for i in moved.scalars()}  # PostgreSQL: not changed meanwhile
        if not ids:
            return 0
        await conn.execute(
            ticket_events.insert(),
            [
                {
                    "ticket_id": tid,
                    "at": now,
                    "actor": who,
                    "kind": "linked",
                    "from_state": state,
                    "to_state": state,
                    "reason": f"linked to {incident_ref(incident_id)}",
                    "data": {"incident": incident_id},
                }
                for tid, state in hits
                if tid in ids
            ],
        )
        for tid in sorted(ids):
            await self._store.queue_card_edits(conn, tid, now)
        return len(ids)

    async def update(
        self, incident_id: int, status: str | None, who: str, state: IncidentState | None
    ) -> str:
        """Change the public status (and state); tell the customers who asked to hear."""
        ref = incident_ref(incident_id)
        if status is not None:
            status = " ".join(status.split())
            if len(status) > STATUS_MAX:
                return _too_long("status", status)
        now = self._store.clock.now()
        async with self._store.write() as conn:
            inc = await self._open_incident(conn, incident_id)
            if isinstance(inc, str):
                return inc
            if status is None and (state is None or state.value == inc["state"]):
                return f"{ref} is {inc['state']} already."
            new_state = (state or IncidentState(inc["state"])).value
            values: dict[str, Any] = {
                "state": new_state,
                "status_text": status or inc["status_text"],
                "updated_at": now,
                "history": _history(inc, now, who, new_state, status),
            }
            sent = 0
            if status is not None:
                number = inc["updates_sent"] + 1
                values["updates_sent"] = number
                sent = await self._tell_linked(
                    conn,
                    inc,
                    "update",
                    f"incident:{incident_id}:update:{number}",
                    status,
                    now,
                    everyone=False,
                )
            await conn.execute(
                update(incidents).where(incidents.c.id == incident_id).values(**values)
            )
            await self._queue_card(conn, incident_id, now)
        self.on_queued()
        self.on_change()
        call_observers(self.observers, f"{who} updated {ref}: {new_state}")
        said = f" Status: “{status}”, sent to {sent} customer(s)." if status is not None else ""
        return f"{ref} is {new_state}.{said}"

    async def fix(self, incident_id: int, who: str, status: str | None) -> str:
        """Mark fixed: one follow-up to each linked customer, their tickets resolved."""
        ref = incident_ref(incident_id)
        status = " ".join((status or "").split()) or "Fixed."
        if len(status) > STATUS_MAX:
            return _too_long("note", status)
        now = self._store.clock.now()
        async with self._store.write() as conn:
            inc = await self._open_incident(conn, incident_id)
            if isinstance(inc, str):
                return inc
            moved = await conn.execute(
                update(incidents)
                .where(incidents.c.id == incident_id, incidents.c.state == inc["state"])
                .values(
                    state=IncidentState.FIXED.value,
                    status_text=status,
                    fixed_at=now,
                    updated_at=now,
                    history=_history(inc, now, who, IncidentState.FIXED.value, status),
                )
            )
            if moved.rowcount != 1:
                return f"{ref} changed meanwhile; try again."
            sent = await self._tell_linked(
                conn, inc, "fixed", f"incident:{incident_id}:fixed", status, now, everyone=True
            )
            resolved = await self._resolve_linked(conn, incident_id, who, now)
            await self._queue_card(conn, incident_id, now)
        self.on_queued()
        self.on_change()
        call_observers(
            self.observers, f"{who} fixed {ref}: {sent} follow-up(s), {resolved} resolved"
        )
        return f"{ref} is fixed: a follow-up to {sent} customer(s), {resolved} ticket(s) resolved."

    async def _open_incident(self, conn: AsyncConnection, incident_id: int) -> RowMapping | str:
        """The incident, locked for a change; or why it cannot change."""
        inc = await self._incident(conn, incident_id, lock=True)
        ref = incident_ref(incident_id)
        if inc is None:
            return f"There is no incident {ref}."
        if inc["state"] == IncidentState.FIXED.value:
            return f"{ref} is fixed already."
        return inc

    async def _incident(
        self, conn: AsyncConnection, incident_id: int, *, lock: bool = False
    ) -> RowMapping | None:
        sel = select(incidents).where(incidents.c.id == incident_id)
        if lock and self._store.engine.dialect.name == "postgresql":
            sel = sel.with_for_update()
        return (await conn.execute(sel)).mappings().first()

    async def _tell_linked(  # noqa: PLR0917 — the parts of one broadcast
        self,
        conn: AsyncConnection,
        inc: RowMapping,
        which: str,
        key: str,
        status: str,
        now: datetime,
        *,
        everyone: bool,
    ) -> int:
        """Queue one message per linked customer (on their newest linked ticket's thread).

        ``everyone``: all linked customers (the fix); otherwise only those who replied to
        their acknowledgement, or every one on the platforms in ``updates_to_all_on``.
        """
        rows = await conn.execute(
            select(
                tickets.c.id, tickets.c.state, tickets.c.platform, tickets.c.customer_id, mentions
            )
            .join(mentions, mentions.c.id == tickets.c.mention_id)
            .where(tickets.c.incident_id == inc["id"])
            .order_by(tickets.c.id)
        )
        newest: dict[tuple[str, str], RowMapping] = {}
        for r in rows.mappings().all():
            if which == "update" and r["state"] == TicketState.RESOLVED.value:
                continue  # resolved on its own: its customer has had an answer
            newest[(r["platform"], r["customer_id"])] = r
        if not everyone:
            wanted = await self._asked_for_updates(conn, inc["id"])
            everywhere = {p.value for p in self.config.updates_to_all_on}
            newest = {k: r for k, r in newest.items() if k[0] in everywhere or k in wanted}
        templates = getattr(self._templates().incidents, which)
        out = []
        for (platform_name, customer), r in newest.items():
            platform = Platform(platform_name)
            adapter = self._adapters.get(platform)
            stored = mention_from_row(r)
            destination = adapter.reply_destination(stored.mention) if adapter else None
            if destination is None:
                logger.warning(
                    "%s: cannot reach %s on %s (not connected)",
                    incident_ref(inc["id"]),
                    customer,
                    platform_name,
                )
                continue
            text = render_message(
                templates,
                platform,
                variant_key=stored.mention.external_id,
                handle=stored.mention.author_handle,
                ref=ticket_ref(self._prefix, r["id"]),
                brand=self._brand(),
                title=inc["title"],
                status=status,
            )
            out.append(
                pending_row(
                    ticket_id=r["id"],
                    kind=OutboxKind.FOLLOW_UP,
                    platform=platform,
                    destination=destination,
                    text=text,
                    key=f"{key}:{platform_name}:{customer}"[:128],
                    priority=UPDATE_PRIORITY,
                    now=now,
                )
            )
        if out:
            stmt = self._store.dialect_insert(outbox).on_conflict_do_nothing(
                index_elements=["idempotency_key"]
            )
            await conn.execute(stmt, out)
        return len(out)

    async def _asked_for_updates(
        self, conn: AsyncConnection, incident_id: int
    ) -> set[tuple[str, str]]:
        """Customers who wrote again on a linked ticket (e.g. replied to the ack)."""
        rows = await conn.execute(
            select(tickets.c.platform, tickets.c.customer_id)
            .join(mentions, mentions.c.ticket_id == tickets.c.id)
            .where(tickets.c.incident_id == incident_id, mentions.c.id != tickets.c.mention_id)
            .distinct()
        )
        return {(str(p), str(c)) for p, c in rows.all()}

    async def _resolve_linked(
        self, conn: AsyncConnection, incident_id: int, who: str, now: datetime
    ) -> int:
        open_rows = (
            await conn.execute(
                select(tickets.c.id, tickets.c.state).where(
                    tickets.c.incident_id == incident_id,
                    tickets.c.state != TicketState.RESOLVED.value,
                )
            )
        ).all()
        if not open_rows:
            return 0
        ids = [int(i) for i, _ in open_rows]
        # the lead's fix, told to the customer, is the ticket's human response
        await conn.execute(
            update(tickets)
            .where(tickets.c.id.in_(ids), tickets.c.first_response_at.is_(None))
            .values(first_response_at=now)
        )
        await conn.execute(
            update(tickets)
            .where(tickets.c.id.in_(ids), tickets.c.state != TicketState.RESOLVED.value)
            .values(
                state=TicketState.RESOLVED.value,
                resolved_at=now,
                snoozed_until=None,
                next_escalation_at=None,
                updated_at=now,
            )
        )
        await conn.execute(
            ticket_events.insert(),
            [
                {
                    "ticket_id": tid,
                    "at": now,
                    "actor": who,
                    "kind": "resolved",
                    "from_state": state,
                    "to_state": TicketState.RESOLVED.value,
                    "reason": f"{incident_ref(incident_id)} fixed",
                    "data": {"incident": incident_id},
                }
                for tid, state in open_rows
            ],
        )
        for tid in ids:
            await self._store.queue_card_edits(conn, tid, now)
        return len(ids)

    async def _queue_card(self, conn: AsyncConnection, incident_id: int, now: datetime) -> None:
        if self.chat_id is None:
            return
        await conn.execute(
            pending_row_for_staff(
                self.chat_id,
                None,
                f"incident:{incident_id}:edit:{uuid.uuid4().hex}",
                now,
                destination={"incident": incident_id},
            )
        )

    async def settle_stragglers(self) -> int:
        """Settle tickets linked to an incident just as it was fixed, as the fix did the rest.

        A mention decided with the incident still active can commit after the fix: its
        customer still gets exactly one follow-up and its ticket is resolved.
        """
        async with self._store.read() as conn:
            found = await conn.execute(
                select(tickets.c.incident_id)
                .join(incidents, incidents.c.id == tickets.c.incident_id)
                .where(
                    incidents.c.state == IncidentState.FIXED.value,
                    tickets.c.state != TicketState.RESOLVED.value,
                    tickets.c.state.not_in(HELD),
                    tickets.c.next_escalation_at.is_(None),
                )
                .distinct()
            )
            due = sorted(int(i) for i in found.scalars())
        now = self._store.clock.now()
        for incident_id in due:
            async with self._store.write() as conn:
                inc = await self._incident(conn, incident_id, lock=True)
                if inc is None:
                    continue
                await self._tell_linked(
                    conn,
                    inc,
                    "fixed",
                    f"incident:{incident_id}:fixed",
                    inc["status_text"],
                    now,
                    everyone=True,
                )
                await self._resolve_linked(conn, incident_id, SYSTEM_ACTOR, now)
        if due:
            self.on_queued()
        return len(due)

    async def remind(self) -> int:
        """Page the leads again about an incident with no news for ``incidents.remind_every``."""
        every = self.config.remind_every
        if every is None or self.chat_id is None:
            return 0
        now = self._store.clock.now()
        cutoff = now - every
        quiet = and_(
            incidents.c.state != IncidentState.FIXED.value,
            incidents.c.updated_at <= cutoff,
            or_(incidents.c.reminded_at.is_(None), incidents.c.reminded_at <= cutoff),
        )
        async with self._store.read() as conn:
            due = list((await conn.execute(select(incidents.c.id).where(quiet))).scalars())
        reminded = 0
        for incident_id in due:
            async with self._store.write() as conn:
                moved = await conn.execute(
                    update(incidents)
                    .where(incidents.c.id == incident_id, quiet)
                    .values(reminded_at=now)
                    .returning(incidents.c.state, incidents.c.updated_at)
                )
                row = moved.first()
                if row is None:  # another process reminded, or a lead acted meanwhile
                    continue
                linked = (
                    await conn.execute(
                        select(func.count(func.distinct(tickets.c.customer_id))).where(
                            tickets.c.incident_id == incident_id,
                            tickets.c.state != TicketState.RESOLVED.value,
                        )
                    )
                ).scalar_one()
                ref = incident_ref(incident_id)
                text = (
                    f"⏰ <b>{ref}</b> is still {row[0]}, no news for {_span(now - row[1])}: "
                    f"{linked} customer(s) waiting. "
                    f'/incident update {incident_id} "status" · /incident fix {incident_id}'
                )
                ping = self.ping()
                await conn.execute(
                    outbox.insert().values(
                        pending_row(
                            ticket_id=None,
                            kind=OutboxKind.STAFF,
                            platform=Platform.STAFF,
                            destination={
                                "chat_id": self.chat_id,
                                "reply_to_incident": incident_id,
                            },
                            text=f"{text} {ping}".strip(),
                            key=f"incident:{incident_id}:remind:{uuid.uuid4().hex}",
                            priority=0,
                            now=now,
                        )
                    )
                )
            reminded += 1
            call_observers(self.observers, f"⏰ {ref}: the leads were reminded")
        if reminded:
            self.on_queued()
        return reminded

    async def refresh_cards(self) -> int:
        """Queue an edit of each active incident's card whose linked count changed."""
        if self.chat_id is None:
            return 0
        now = self._store.clock.now()
        count = (
            select(incidents.c.id, incidents.c.card_linked, func.count(tickets.c.id))
            .outerjoin(tickets, tickets.c.incident_id == incidents.c.id)
            .where(incidents.c.state != IncidentState.FIXED.value)
            .group_by(incidents.c.id, incidents.c.card_linked)
        )
        async with self._store.read() as conn:  # most looks find nothing: no write lock
            counts = (await conn.execute(count)).all()
        if all(int(shown) == int(n) for _, shown, n in counts):
            return 0
        async with self._store.write() as conn:
            counts = (await conn.execute(count)).all()
            changed = [(int(i), int(n)) for i, shown, n in counts if int(shown) != int(n)]
            for incident_id, n in changed:
                await conn.execute(
                    update(incidents).where(incidents.c.id == incident_id).values(card_linked=n)
                )
                await self._queue_card(conn, incident_id, now)
        if changed:
            self.on_queued()
        return len(changed)

    async def render_card(self, incident_id: int) -> IncidentCard | None:
        """The incident's card: state, public status, linked count, growth, latest samples."""
        now = self._store.clock.now()
        window = self.config.surge.window
        async with self._store.read() as conn:
            inc = await self._incident(conn, incident_id)
            if inc is None:
                return None
            linked = await conn.execute(
                select(
                    func.count(tickets.c.id),
                    func.count(func.distinct(tickets.c.customer_id)),
                ).where(tickets.c.incident_id == incident_id)
            )
            total, customers = linked.one()
            recent = (
                await conn.execute(
                    select(func.count(tickets.c.id)).where(
                        tickets.c.incident_id == incident_id, tickets.c.created_at > now - window
                    )
                )
            ).scalar_one()
            latest = (
                await conn.execute(
                    select(tickets.c.platform, tickets.c.customer_handle, mentions.c.text)
                    .join(mentions, mentions.c.id == tickets.c.mention_id)
                    .where(tickets.c.incident_id == incident_id)
                    .order_by(tickets.c.id.desc())
                    .limit(SAMPLES)
                )
            ).all()
        esc = html.escape
        ref = incident_ref(incident_id)
        state = inc["state"]
        icon = "✅" if state == IncidentState.FIXED.value else "🚨"
        lines = [
            f"{icon} <b>Incident {ref} · {esc(state)}</b>",
            f"<b>{esc(inc['title'])}</b> · matches: {esc(', '.join(inc['terms']))}",
            f"Public status: {esc(inc['status_text'])}",
            f"Linked: {total} ticket(s) from {customers} customer(s) · {recent} in the last "
            f"{_span(window)} ({recent / max(window.total_seconds() / 60, 1):.1f}/min)",
        ]
        lines += [
            f"• @{esc(handle)} on {esc(platform)}: “{esc(' '.join(text.split())[:150])}”"
            for platform, handle, text in latest
        ]
        lines.append(f"Declared by {esc(inc['declared_by'])} at {inc['declared_at']:%H:%M} UTC")
        if state == IncidentState.FIXED.value:
            lines.append(f"Fixed at {inc['fixed_at']:%H:%M} UTC; linked customers were told.")
            return IncidentCard("\n".join(lines))
        lines.append(
            f'/incident update {incident_id} "status" tells customers who asked; '
            f"/incident fix {incident_id} tells everyone it is fixed."
        )
        buttons = [[("Fixed ✅", f"inc_fixed:{incident_id}")]]
        if state == IncidentState.INVESTIGATING.value:
            buttons[0].insert(0, ("Cause identified", f"inc_identified:{incident_id}"))
        return IncidentCard("\n".join(lines), buttons)

    async def card_message(self, incident_id: int) -> tuple[int | None, datetime | None]:
        """The message that is the incident's card (once posted), and when it was declared."""
        async with self._store.read() as conn:
            found = await conn.execute(
                select(incidents.c.card_message_id, incidents.c.declared_at).where(
                    incidents.c.id == incident_id
                )
            )
            row = found.first()
        if row is None:
            return None, None
        return (int(row[0]) if row[0] is not None else None), row[1]

    async def put_card(self, incident_id: int, chat_id: int, message_id: int) -> None:
        """Remember where the incident's card was posted."""
        async with self._store.write() as conn:
            await conn.execute(
                update(incidents)
                .where(incidents.c.id == incident_id)
                .values(card_chat_id=chat_id, card_message_id=message_id)
            )

    def ping(self) -> str:
        """The leads, named so Telegram notifies them (the incident escalates once, to them)."""
        return " ".join(
            f'<a href="tg://user?id={uid}">{html.escape(name)}</a>'
            for uid, name in self._leads.items()
        )

    async def listing(self) -> str:
        """Active incidents, for ``/incident`` or ``/incident list``."""
        async with self._store.read() as conn:
            found = await load_active(conn)
            counts: dict[int, int] = dict(
                (
                    await conn.execute(
                        select(tickets.c.incident_id, func.count())
                        .where(tickets.c.incident_id.in_([i.id for i in found]))
                        .group_by(tickets.c.incident_id)
                    )
                ).all()
            )
        if not found:
            return "No active incidents. " + html.escape(USAGE)
        lines = ["<b>Active incidents</b>"]
        lines += [
            f"🚨 {incident_ref(i.id)} · {i.state.value} · {html.escape(i.title)} · "
            f"{counts.get(i.id, 0)} linked · status: {html.escape(i.status)}"
            for i in found
        ]
        return "\n".join(lines)


USAGE: Final = (
    'Usage: /incident declare "title" term ["a phrase" ...] · '
    '/incident update N [identified] "public status" · /incident identified N · '
    "/incident fix N [note] · /incident list"
)


def _check_declaration(title: str, terms: Iterable[str]) -> str:
    terms = list(terms)
    if not title:
        return "An incident needs a title."
    if len(title) > TITLE_MAX:
        return f"The title is {len(title)} characters; customers read at most {TITLE_MAX}."
    if not terms or len(terms) > MAX_TERMS:
        return f"Give 1 to {MAX_TERMS} terms or phrases that its complaints share."
    for t in terms:
        if not term_words(t):
            return f"“{t}” has no words to match (too short, or only common words)."
    return ""


def _too_long(what: str, text: str) -> str:
    return f"The {what} is {len(text)} characters; customers get at most {STATUS_MAX}."


def _history(
    inc: RowMapping, now: datetime, who: str, state: str, status: str | None
) -> list[dict[str, Any]]:
    """The incident's history with one more entry (newest last)."""
    return [
        *inc["history"],
        {"at": now.isoformat(), "by": who, "state": state, "status": status},
    ]


def _quoted(term: str) -> str:
    return f'"{term}"' if " " in term else term


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def pending_row_for_staff(
    chat_id: int,
    card: IncidentCard | None,
    key: str,
    now: datetime,
    *,
    destination: Mapping[str, Any] | None = None,
) -> Any:
    """An outbox insert for a staff-chat message about incidents (an alert or a card)."""
    dest: dict[str, Any] = {"chat_id": chat_id, **(destination or {})}
    if card is not None:
        dest["buttons"] = card.buttons
    return outbox.insert().values(
        pending_row(
            ticket_id=None,
            kind=OutboxKind.STAFF,
            platform=Platform.STAFF,
            destination=dest,
            text=card.html if card is not None else f"incident card {dest.get('incident')}",
            key=key,
            priority=0,
            now=now,
        )
    )
