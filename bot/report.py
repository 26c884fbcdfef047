"""``carebot report``: support figures for a period, read from the database.

What it shows, for the mentions received and the tickets opened in ``[since, until)``:

- **volume**: mentions per UTC day by category (screened mentions count as ``screened``,
  mentions stored but not yet decided as ``undecided``) and by platform, and tickets opened;
- **acknowledgement latency**: from the opening mention's receipt to the first delivered
  acknowledgement (outbox rows of kind ``ack`` in state ``sent``; ``tickets.acknowledged_at``
  when no such row is left), as p50, p90, p99 and max, and the tickets never acknowledged;
- **time to first human response**: ``tickets.first_response_at - tickets.created_at``;
- **first-response SLA** per category: carebot has no response target of its own, so the
  target is the time a ticket's escalation policy (its ``policy_snapshot``, as it was when the
  ticket opened) gives its first tier before escalating to the next (see
  :func:`first_tier_target`). A first reply within it is a hit; a later one, or none once the
  deadline has passed, a miss; no reply while the deadline is ahead, pending;
- **reopen rate**: of the tickets resolved in the period (a ``resolved`` event), the share
  reopened afterwards (a ``reopened`` event after that resolution);
- **complaint terms**: the words and two-word phrases found in most complaint mentions, with
  the learned model's tokenizer (handles, links, emoticons and digits set aside), stopwords and
  the brand's name left out.

Percentiles interpolate linearly between the nearest ranks. The report only reads: it runs in
one read-only transaction (a consistent snapshot) and never migrates; a database whose schema
is missing or behind is refused with "run ``carebot migrate``".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, TextIO

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.config import Config
from bot.domain import Category, MentionStatus, OutboxKind, OutboxState, Platform
from bot.durations import format_duration, parse_duration
from bot.errors import CarebotError
from bot.ladder import policy_from_snapshot
from bot.model import tokens
from bot.models import mentions, outbox, ticket_events, tickets
from bot.policy import EscalationFile, Policy
from bot.store_base import READ_ONLY, make_engine

__all__ = [
    "Period",
    "PeriodError",
    "Report",
    "SchemaError",
    "collect",
    "count_terms",
    "first_tier_target",
    "human_duration",
    "parse_period",
    "percentile",
    "run",
    "write_chart",
]

EXIT_OK: Final = 0
EXIT_INPUT: Final = 2
EXIT_DATABASE: Final = 3

SCREENED: Final = "screened"
UNDECIDED: Final = "undecided"
CATEGORY_COLUMNS: Final = (*(c.value for c in Category), SCREENED)
PLATFORM_COLUMNS: Final = tuple(p.value for p in Platform if p is not Platform.STAFF)
RESOLVED_EVENT: Final = "resolved"  # handlers/staff.py
REOPENED_EVENT: Final = "reopened"  # bot/store.py, a follow-up inside the reopen window
TOP_TERMS: Final = 10
MIN_PHRASE_COUNT: Final = 2  # a phrase found in one mention only says nothing
_PAGE: Final = 1000  # complaint texts tokenized per hand-off to a worker thread
_PLACEHOLDERS: Final = frozenset({"_url_", "_user_", "_smile_", "_frown_"})
_FORMS: Final = "a duration such as 7d, 24h or 90m, or an ISO date such as 2026-11-16"

# English function words, contractions and social-media filler: never a complaint's subject.
_STOPWORDS: Final = """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each even ever few for from further get gets got had hadn't
    has hasn't have haven't having he he'd he'll he's her here here's hers herself him himself
    his how how's i i'd i'll i'm i've if in into is isn't it it's its itself just let's like me
    more most much must mustn't my myself no nor not now of off on once only or other ought our
    ours ourselves out over own same shan't she she'd she'll she's should shouldn't so some
    still such than that that's the their theirs them themselves then there there's these they
    they'd they'll they're they've this those through to too under until up upon us very was
    wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
    while who who's whom why why's will with won't would wouldn't yet you you'd you'll you're
    you've your yours yourself yourselves
    already always anyone anything back been day days getting going gonna guys hello hey hi im
    it since
    know lol make many never one really thank thanks today u ur via want wanna way well yes
    please pls plz rt amp ok okay dm oh
"""
STOPWORDS: Final = frozenset(_STOPWORDS.split())


class PeriodError(ValueError):
    """``--since`` or ``--until`` cannot be read, or they make no period."""


class SchemaError(CarebotError):
    """The database cannot be read for a report; the message says why and what to do."""


# --- the period ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """``[since, until)``, both timezone-aware UTC."""

    since: datetime
    until: datetime

    def days(self) -> list[date]:
        """Every UTC day the period touches, in order."""
        first = self.since.date()
        last = (self.until - timedelta(microseconds=1)).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]

    def label(self) -> str:
        """``2026-11-16 00:00 to 2026-11-19 00:00 UTC``."""
        return f"{_moment(self.since)} to {_moment(self.until)} UTC"


def _moment(value: datetime) -> str:
    if value.second or value.microsecond:
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return f"{value:%Y-%m-%d %H:%M}"


def _parse_moment(option: str, text: str, now: datetime, *, end_of_day: bool) -> datetime:
    """A duration back from ``now``, an ISO date (UTC midnight) or an ISO date and time."""
    value = text.strip()
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(), UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        # a date-like value gets Python's reason ("month must be in 1..12")
        detail = f": {exc}" if value[:4].isdigit() and "isoformat" not in str(exc) else ""
        raise PeriodError(f"{option}: expected {_FORMS}, got {text!r}{detail}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_period(since: str | None, until: str | None, now: datetime) -> Period:
    """The period of ``--since`` (default 7d) and ``--until`` (default now).

    Each is a duration back from ``now`` (``7d``, ``24h``, ``90m``), an ISO date, or an ISO
    date and time (UTC unless it says otherwise). A date in ``--since`` means the start of that
    UTC day, in ``--until`` its end: ``--since 2026-11-16 --until 2026-11-18`` is three days.

    Raises:
        PeriodError: naming the option and the accepted forms.
    """
    start = _parse_moment("--since", since or "7d", now, end_of_day=False)
    end = now if until is None else _parse_moment("--until", until, now, end_of_day=True)
    if start >= end:
        raise PeriodError(
            f"--since ({_moment(start)} UTC) must be before --until ({_moment(end)} UTC)"
        )
    return Period(start, end)


# --- the figures -----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, interpolating between the nearest ranks."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Spread:
    """How long something took: count and percentiles, in seconds."""

    count: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Spread:
        """The spread of some durations (negative ones, from clock skew, count as 0)."""
        ordered = sorted(max(s, 0.0) for s in seconds)
        return cls(
            len(ordered),
            percentile(ordered, 0.5),
            percentile(ordered, 0.9),
            percentile(ordered, 0.99),
            ordered[-1] if ordered else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """Seconds, rounded to the millisecond (None: nothing measured)."""

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "count": self.count,
            "p50": rounded(self.p50),
            "p90": rounded(self.p90),
            "p99": rounded(self.p99),
            "max": rounded(self.max),
        }


@dataclass(frozen=True, slots=True)
class DayVolume:
    """One UTC day's mentions by category and by platform, and the tickets it opened."""

    day: date
    categories: Counter[str]
    platforms: Counter[str]
    tickets_opened: int

    @property
    def mentions(self) -> int:
        """Mentions received that day."""
        return sum(self.categories.values())


@dataclass(frozen=True, slots=True)
class Acks:
    """Acknowledgement latency of the tickets opened in the period."""

    tickets: int
    latency: Spread
    pending: int  # an ack is queued or being sent
    failed: int  # every ack row failed for good
    none_queued: int  # no ack was planned (no way to reply, the author's hourly cap)

    @property
    def not_acknowledged(self) -> int:
        """Tickets without a delivered acknowledgement."""
        return self.pending + self.failed + self.none_queued


@dataclass(slots=True)
class SlaCount:
    """First-response SLA outcomes of some tickets."""

    hit: int = 0
    miss: int = 0
    pending: int = 0
    no_target: int = 0

    @property
    def tickets(self) -> int:
        """Tickets counted."""
        return self.hit + self.miss + self.pending + self.no_target

    @property
    def hit_rate(self) -> float | None:
        """Hits among the decided outcomes (None: none decided yet)."""
        decided = self.hit + self.miss
        return self.hit / decided if decided else None

    def as_dict(self) -> dict[str, Any]:
        """The counts and the hit rate."""
        rate = self.hit_rate
        return {
            "tickets": self.tickets,
            "hit": self.hit,
            "miss": self.miss,
            "pending": self.pending,
            "no_target": self.no_target,
            "hit_rate": None if rate is None else round(rate, 4),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Every figure of ``carebot report``; :meth:`text` and :meth:`as_dict` show them."""

    period: Period
    now: datetime
    days: list[DayVolume]
    categories: list[str]
    platforms: list[str]
    acks: Acks
    first_response: Spread
    no_first_response: int
    sla: dict[str, SlaCount]
    targets: dict[str, timedelta | None]  # policy name → its target, as found on the tickets
    resolved: int
    reopened: int
    complaints: int
    terms: list[tuple[str, int]]
    phrases: list[tuple[str, int]]
    totals: DayVolume = field(init=False)

    def __post_init__(self) -> None:
        categories: Counter[str] = Counter()
        platforms: Counter[str] = Counter()
        for day in self.days:
            categories.update(day.categories)
            platforms.update(day.platforms)
        opened = sum(d.tickets_opened for d in self.days)
        object.__setattr__(self, "totals", DayVolume(date.min, categories, platforms, opened))

    @property
    def mentions(self) -> int:
        """Mentions received in the period."""
        return self.totals.mentions

    @property
    def reopen_rate(self) -> float | None:
        """Reopened among resolved (None: nothing resolved)."""
        return self.reopened / self.resolved if self.resolved else None

    @property
    def sla_total(self) -> SlaCount:
        """The SLA outcomes of every category together."""
        total = SlaCount()
        for count in self.sla.values():
            total.hit += count.hit
            total.miss += count.miss
            total.pending += count.pending
            total.no_target += count.no_target
        return total

    def sla_definition(self) -> str:
        """What the SLA target is, with the targets found on the tickets."""
        known = [f"{n} {format_duration(t)}" for n, t in self.targets.items() if t is not None]
        none = [n for n, t in self.targets.items() if t is None]
        found = "; ".join(
            part
            for part in (
                ", ".join(known),
                f"none for {', '.join(none)}" if none else "",
            )
            if part
        )
        return (
            "carebot has no first-response target setting, so the target is the time a "
            "ticket's escalation policy gives its first tier before escalating to the next"
            + (f" ({found})" if found else "")
        )

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready data (durations in seconds)."""

        def volume(day: DayVolume) -> dict[str, Any]:
            return {
                "mentions": day.mentions,
                "by_category": {c: day.categories[c] for c in self.categories},
                "by_platform": {p: day.platforms[p] for p in self.platforms},
                "tickets_opened": day.tickets_opened,
            }

        rate = self.reopen_rate
        return {
            "period": {
                "since": self.period.since.isoformat(),
                "until": self.period.until.isoformat(),
                "days": len(self.days),
            },
            "generated_at": self.now.isoformat(),
            "mentions": self.mentions,
            "volume": {
                "days": [{"day": d.day.isoformat(), **volume(d)} for d in self.days],
                "total": volume(self.totals),
            },
            "ack_latency": {
                "tickets": self.acks.tickets,
                "acknowledged": self.acks.latency.count,
                **{k: v for k, v in self.acks.latency.as_dict().items() if k != "count"},
                "not_acknowledged": self.acks.not_acknowledged,
                "ack_pending": self.acks.pending,
                "ack_failed": self.acks.failed,
                "no_ack_queued": self.acks.none_queued,
            },
            "first_response": {
                "tickets": self.first_response.count + self.no_first_response,
                "responded": self.first_response.count,
                **{k: v for k, v in self.first_response.as_dict().items() if k != "count"},
                "no_response": self.no_first_response,
            },
            "sla": {
                "definition": self.sla_definition(),
                "targets": {
                    n: None if t is None else t.total_seconds() for n, t in self.targets.items()
                },
                "by_category": {c: s.as_dict() for c, s in self.sla.items()},
                "total": self.sla_total.as_dict(),
            },
            "reopen": {
                "resolved": self.resolved,
                "reopened": self.reopened,
                "rate": None if rate is None else round(rate, 4),
            },
            "complaint_terms": {
                "complaints": self.complaints,
                "words": [{"term": t, "mentions": n} for t, n in self.terms],
                "phrases": [{"term": t, "mentions": n} for t, n in self.phrases],
            },
        }

    def text(self) -> str:
        """The report as aligned plain-text tables."""
        lines = [f"carebot report: {self.period.label()} ({_plural(len(self.days), 'day')})"]
        lines += ["", "Mentions by category (UTC day received)"]
        rows = [
            [
                d.day.isoformat(),
                *(str(d.categories[c]) for c in self.categories),
                str(d.mentions),
                str(d.tickets_opened),
            ]
            for d in self.days
        ]
        total = self.totals
        rows.append(
            [
                "total",
                *(str(total.categories[c]) for c in self.categories),
                str(total.mentions),
                str(total.tickets_opened),
            ]
        )
        lines += _table(["day", *self.categories, "total", "tickets opened"], rows)
        lines += ["", "Mentions by platform (UTC day received)"]
        rows = [
            [d.day.isoformat(), *(str(d.platforms[p]) for p in self.platforms), str(d.mentions)]
            for d in self.days
        ]
        rows.append(
            ["total", *(str(total.platforms[p]) for p in self.platforms), str(total.mentions)]
        )
        lines += _table(["day", *self.platforms, "total"], rows)

        acks = self.acks
        lines += [
            "",
            "Acknowledgement latency (mention received to acknowledgement delivered; "
            f"{_plural(acks.tickets, 'ticket')} opened)",
        ]
        why = ", ".join(
            f"{n} {what}"
            for n, what in (
                (acks.pending, "pending"),
                (acks.failed, "failed"),
                (acks.none_queued, "none queued"),
            )
            if n
        )
        lines += _table(
            ["acknowledged", "p50", "p90", "p99", "max", "not acknowledged"],
            [
                [
                    str(acks.latency.count),
                    *_spread(acks.latency),
                    f"{acks.not_acknowledged}" + (f" ({why})" if why else ""),
                ]
            ],
            labelled=False,
        )
        lines += ["", "Time to first human response (ticket opened to a person's first reply)"]
        lines += _table(
            ["responded", "p50", "p90", "p99", "max", "no response yet"],
            [
                [
                    str(self.first_response.count),
                    *_spread(self.first_response),
                    str(self.no_first_response),
                ]
            ],
            labelled=False,
        )

        lines += ["", "First-response SLA by category (tickets opened in the period)"]
        lines += [f"  {part}" for part in _wrap(self.sla_definition() + ".", 95)]
        rows = [_sla_row(c, s) for c, s in self.sla.items()]
        rows.append(_sla_row("total", self.sla_total))
        lines += _table(
            ["category", "tickets", "hit", "miss", "pending", "no target", "hit rate"], rows
        )

        rate = self.reopen_rate
        lines += [
            "",
            f"Reopen rate: {self.reopened} of {_plural(self.resolved, 'ticket')} resolved in the "
            f"period reopened afterwards: {_percent(rate)}",
        ]

        lines += [
            "",
            f"Most frequent complaint terms ({_plural(self.complaints, 'complaint mention')}; "
            "mentions containing each)",
        ]
        if self.terms:
            lines += _table(["term", "mentions"], [[t, str(n)] for t, n in self.terms])
        else:
            lines.append("  none")
        if self.phrases:
            lines.append("")
            lines += _table(["phrase", "mentions"], [[t, str(n)] for t, n in self.phrases])
        return "\n".join(lines) + "\n"


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def human_duration(seconds: float | None) -> str:
    """``850ms``, ``6.0s``, ``20m00s``, ``2h05m``, ``3d04h`` (``n/a`` for None)."""
    if seconds is None:
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _spread(spread: Spread) -> list[str]:
    return [human_duration(v) for v in (spread.p50, spread.p90, spread.p99, spread.max)]


def _sla_row(name: str, count: SlaCount) -> list[str]:
    return [
        name,
        *(str(n) for n in (count.tickets, count.hit, count.miss, count.pending, count.no_target)),
        _percent(count.hit_rate),
    ]


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, labelled: bool = True
) -> list[str]:
    """Aligned columns under a rule: figures right-aligned, a first column of labels left."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if labelled and i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  " + "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    return [*lines, current] if current else lines


# --- the SLA target --------------------------------------------------------------------------


def first_tier_target(policy: Policy) -> timedelta | None:
    """How long a ticket may wait for a person before its ladder leaves its first tier.

    Tiers count staff groups, as the ladder does (:mod:`bot.ladder`): a step that notifies
    another group than the step before it starts the next tier. The target is the ``after``
    of the first such step that is not immediate (the shipped ``standard`` policy: 30m to
    the leads; ``urgent``: 5m). A policy that never leaves its first group (``kudos``) has
    no target.
    """
    for previous, step in pairwise(policy.steps):
        if step.notify != previous.notify and step.after > timedelta(0):
            return step.after
    return None


class _Targets:
    """Each ticket's target, from its policy snapshot (else the configured policy of its name)."""

    def __init__(self, escalation: EscalationFile) -> None:
        self._escalation = escalation
        self.seen: dict[str, timedelta | None] = {}

    def of(self, name: str | None, snapshot: Any) -> timedelta | None:
        policy: Policy | None = None
        if snapshot is not None:
            try:
                name, policy = policy_from_snapshot(snapshot)
            except ValueError:
                policy = None  # a corrupt snapshot: no target, rather than no report
        elif name is not None:
            policy = self._escalation.policies.get(name)
        if name is None:
            return None
        target = first_tier_target(policy) if policy is not None else None
        self.seen.setdefault(name, target)
        return target


# --- reading the database --------------------------------------------------------------------


def _known_revisions() -> tuple[set[str], set[str]]:
    """The migrations this carebot ships: (every revision, the heads)."""
    from alembic.script import ScriptDirectory  # noqa: PLC0415 — CLI-only path

    from bot.migrate import SCRIPT_LOCATION  # noqa: PLC0415

    script = ScriptDirectory(str(SCRIPT_LOCATION))
    return {r.revision for r in script.walk_revisions()}, set(script.get_heads())


async def _check_schema(conn: AsyncConnection, where: str) -> None:
    """Refuse a database whose schema is missing, behind or from a newer carebot."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

    def _current(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    known, heads = await asyncio.to_thread(_known_revisions)
    current = await conn.run_sync(_current)
    if current is None:
        raise SchemaError(
            f"{where} holds no carebot data (its schema was never created): "
            "run `carebot migrate` first"
        )
    if current in heads:
        return
    if current in known:
        raise SchemaError(
            f"{where} has schema revision {current}, behind this carebot's "
            f"{', '.join(sorted(heads))}: run `carebot migrate` first"
        )
    raise SchemaError(
        f"{where} has schema revision {current}, which this carebot does not know "
        "(a newer carebot migrated it): report with that version"
    )


def _utc_day(conn: AsyncConnection, column: Any) -> ColumnElement[str]:
    """The UTC day of a stored time, as ``YYYY-MM-DD`` text, computed by the database."""
    if conn.dialect.name == "sqlite":  # stored as naive UTC text
        return func.date(column)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def _within(column: Any, period: Period) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return column >= period.since, column < period.until


async def _volume(conn: AsyncConnection, period: Period) -> list[DayVolume]:
    inner = (
        select(
            _utc_day(conn, mentions.c.received_at).label("day"),
            mentions.c.platform,
            mentions.c.status,
            mentions.c.category,
        )
        .where(*_within(mentions.c.received_at, period))
        .subquery()
    )
    counted = await conn.execute(
        select(
            inner.c.day, inner.c.platform, inner.c.status, inner.c.category, func.count()
        ).group_by(inner.c.day, inner.c.platform, inner.c.status, inner.c.category)
    )
    categories: dict[date, Counter[str]] = {d: Counter() for d in period.days()}
    platforms: dict[date, Counter[str]] = {d: Counter() for d in period.days()}
    for day_text, platform, status, category, n in counted:
        day = date.fromisoformat(str(day_text))
        if status == MentionStatus.SCREENED.value:
            key = SCREENED
        else:
            key = str(category) if category else UNDECIDED
        categories[day][key] += int(n)
        platforms[day][str(platform)] += int(n)
    opened_inner = (
        select(_utc_day(conn, tickets.c.created_at).label("day"))
        .where(*_within(tickets.c.created_at, period))
        .subquery()
    )
    opened = {
        date.fromisoformat(str(day)): int(n)
        for day, n in await conn.execute(
            select(opened_inner.c.day, func.count()).group_by(opened_inner.c.day)
        )
    }
    return [DayVolume(d, categories[d], platforms[d], opened.get(d, 0)) for d in period.days()]


def _sla_outcome(
    created: datetime, first: datetime | None, target: timedelta | None, now: datetime
) -> str:
    """``hit``, ``miss``, ``pending`` or ``no_target``: one ticket against its target."""
    if target is None:
        return "no_target"
    if first is not None:
        return "hit" if first - created <= target else "miss"
    return "miss" if now > created + target else "pending"


@dataclass(frozen=True, slots=True)
class _Tickets:
    acks: Acks
    first_response: Spread
    no_first_response: int
    sla: dict[str, SlaCount]
    targets: dict[str, timedelta | None]


async def _tickets(
    conn: AsyncConnection, period: Period, now: datetime, escalation: EscalationFile
) -> _Tickets:
    opened = list(
        await conn.execute(
            select(
                tickets.c.id,
                tickets.c.category,
                tickets.c.created_at,
                tickets.c.acknowledged_at,
                tickets.c.first_response_at,
                tickets.c.policy,
                tickets.c.policy_snapshot,
                mentions.c.received_at,
            )
            .select_from(tickets.outerjoin(mentions, mentions.c.id == tickets.c.mention_id))
            .where(*_within(tickets.c.created_at, period))
            .order_by(tickets.c.id)
        )
    )
    ack_rows = await conn.execute(
        select(outbox.c.ticket_id, outbox.c.state, outbox.c.sent_at)
        .join(tickets, tickets.c.id == outbox.c.ticket_id)
        .where(outbox.c.kind == OutboxKind.ACK.value, *_within(tickets.c.created_at, period))
    )
    delivered: dict[int, datetime] = {}
    states: dict[int, set[str]] = {}
    for ticket_id, state, sent_at in ack_rows:
        states.setdefault(int(ticket_id), set()).add(str(state))
        if state == OutboxState.SENT.value and sent_at is not None:
            tid = int(ticket_id)
            delivered[tid] = min(sent_at, delivered.get(tid, sent_at))

    latencies: list[float] = []
    pending = failed = none_queued = 0
    responses: list[float] = []
    no_response = 0
    sla: dict[str, SlaCount] = {}
    targets = _Targets(escalation)
    for tid, category, created, acked, first, policy, snapshot, received in opened:
        ack_at = delivered.get(int(tid), acked)
        if ack_at is not None:
            latencies.append((ack_at - (received or created)).total_seconds())
        elif not states.get(int(tid)):
            none_queued += 1
        elif states[int(tid)] & {OutboxState.PENDING.value, OutboxState.SENDING.value}:
            pending += 1
        else:
            failed += 1
        if first is not None:
            responses.append((first - created).total_seconds())
        else:
            no_response += 1
        count = sla.setdefault(str(category), SlaCount())
        outcome = _sla_outcome(created, first, targets.of(policy, snapshot), now)
        setattr(count, outcome, getattr(count, outcome) + 1)
    order = {c: i for i, c in enumerate(CATEGORY_COLUMNS)}
    return _Tickets(
        acks=Acks(len(opened), Spread.of(latencies), pending, failed, none_queued),
        first_response=Spread.of(responses),
        no_first_response=no_response,
        sla=dict(sorted(sla.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))),
        targets=dict(sorted(targets.seen.items())),
    )


async def _reopens(conn: AsyncConnection, period: Period) -> tuple[int, int]:
    """(tickets resolved in the period, how many of them were reopened afterwards)."""
    resolved_in = (
        select(ticket_events.c.ticket_id)
        .where(ticket_events.c.kind == RESOLVED_EVENT, *_within(ticket_events.c.at, period))
        .distinct()
    )
    rows = await conn.execute(
        select(ticket_events.c.ticket_id, ticket_events.c.kind, ticket_events.c.at).where(
            ticket_events.c.ticket_id.in_(resolved_in),
            ticket_events.c.kind.in_([RESOLVED_EVENT, REOPENED_EVENT]),
        )
    )
    first_resolution: dict[int, datetime] = {}
    reopenings: dict[int, list[datetime]] = {}
    for ticket_id, kind, at in rows:
        tid = int(ticket_id)
        if kind == RESOLVED_EVENT and period.since <= at < period.until:
            first_resolution[tid] = min(at, first_resolution.get(tid, at))
        elif kind == REOPENED_EVENT:
            reopenings.setdefault(tid, []).append(at)
    reopened = sum(
        1
        for tid, resolved_at in first_resolution.items()
        if any(at > resolved_at for at in reopenings.get(tid, ()))
    )
    return len(first_resolution), reopened


def _words(text: str, skip: frozenset[str]) -> list[str | None]:
    """The text's tokens as terms; None where a token is not one (it breaks phrases)."""
    out: list[str | None] = []
    for token in tokens(text):
        term = token.removesuffix("'s")
        if (
            term in _PLACEHOLDERS
            or len(term) < 2
            or not any(ch.isalpha() for ch in term)
            or any(ch.isdigit() for ch in term)
            or term in skip
        ):
            out.append(None)
        else:
            out.append(term)
    return out


def count_terms(
    texts: Iterable[str], skip: frozenset[str] = STOPWORDS
) -> tuple[Counter[str], Counter[str]]:
    """How many texts contain each word, and each two-word phrase (neighbouring terms)."""
    words: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    for text in texts:
        terms = _words(text, skip)
        words.update({t for t in terms if t is not None})
        phrases.update({f"{a} {b}" for a, b in pairwise(terms) if a is not None and b is not None})
    return words, phrases


def _top(counts: Counter[str], minimum: int = 1) -> list[tuple[str, int]]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [(t, n) for t, n in ranked if n >= minimum][:TOP_TERMS]


async def _complaint_terms(
    conn: AsyncConnection, period: Period, skip: frozenset[str]
) -> tuple[int, Counter[str], Counter[str]]:
    query: Select[tuple[str]] = select(mentions.c.text).where(
        mentions.c.category == Category.COMPLAINT.value,
        mentions.c.status != MentionStatus.SCREENED.value,
        *_within(mentions.c.received_at, period),
    )
    words: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    complaints = 0
    result = await conn.stream(query)
    async for page in result.scalars().partitions(_PAGE):
        texts = [str(t) for t in page]
        complaints += len(texts)
        # tokenizing is CPU work: off the event loop's thread, a page at a time
        w, p = await asyncio.to_thread(count_terms, texts, skip)
        words.update(w)
        phrases.update(p)
    return complaints, words, phrases


async def collect(
    engine: AsyncEngine,
    period: Period,
    now: datetime,
    escalation: EscalationFile,
    *,
    brand: str = "",
) -> Report:
    """Read every figure of the report in one read-only transaction.

    ``brand``'s words are left out of the complaint terms, like stopwords.

    Raises:
        SchemaError: the schema is missing, behind or unknown, or the database cannot be read.
    """
    where = engine.url.render_as_string(hide_password=True)
    skip = STOPWORDS | {t for t in tokens(brand) if t.isalpha()}
    options: dict[str, Any] = {READ_ONLY: True}  # SQLite: a deferred BEGIN, not IMMEDIATE
    if engine.dialect.name == "postgresql":  # one snapshot for every figure, and no writes
        options.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    reader = engine.execution_options(**options)
    try:
        async with reader.connect() as conn:
            await _check_schema(conn, where)
            days = await _volume(conn, period)
            figures = await _tickets(conn, period, now, escalation)
            resolved, reopened = await _reopens(conn, period)
            complaints, words, phrases = await _complaint_terms(conn, period, skip)
    except (OSError, SQLAlchemyError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise SchemaError(f"{where}: {detail}") from exc
    return Report(
        period=period,
        now=now,
        days=days,
        categories=_columns(CATEGORY_COLUMNS, (d.categories for d in days)),
        platforms=_columns(PLATFORM_COLUMNS, (d.platforms for d in days)),
        acks=figures.acks,
        first_response=figures.first_response,
        no_first_response=figures.no_first_response,
        sla=figures.sla,
        targets=figures.targets,
        resolved=resolved,
        reopened=reopened,
        complaints=complaints,
        terms=_top(words),
        phrases=_top(phrases, MIN_PHRASE_COUNT),
    )


def _columns(fixed: Sequence[str], counts: Iterable[Counter[str]]) -> list[str]:
    """The fixed columns, then any other key found (``undecided``, an unknown platform)."""
    extra: set[str] = set()
    for counter in counts:
        extra.update(k for k, n in counter.items() if n and k not in fixed)
    return [*fixed, *sorted(extra)]


# --- the chart -------------------------------------------------------------------------------

CATEGORY_COLOURS: Final = {
    "complaint": "#d62728",
    "question": "#1f77b4",
    "praise": "#2ca02c",
    "other": "#7f7f7f",
    "screened": "#c7c7c7",
    "undecided": "#ff7f0e",
}


def write_chart(report: Report, path: Path) -> None:
    """Write a PNG of mentions by category per day (stacked bars), atomically.

    matplotlib (Agg, no pyplot, no display) is imported here, so other commands do not pay
    for it. The image goes to a temporary file beside ``path``, then replaces it.

    Raises:
        OSError: the file cannot be written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    days = report.days
    width = min(max(6.4, 2.5 + 0.4 * len(days)), 20.0)
    figure = Figure(figsize=(width, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(days)))
    bottom = [0] * len(days)
    for category in report.categories:
        heights = [d.categories[category] for d in days]
        if not any(heights):
            continue
        axes.bar(
            positions,
            heights,
            bottom=bottom,
            label=category,
            color=CATEGORY_COLOURS.get(category),
            width=0.8,
        )
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    every = max(1, math.ceil(len(days) / 20))  # at most about 20 labels
    shown = positions[::every]
    labels = [days[i].day.isoformat() for i in shown]
    if len(shown) > 6:
        axes.set_xticks(shown, labels, rotation=45, ha="right")
    else:
        axes.set_xticks(shown, labels)
    axes.set_xlim(-0.6, len(days) - 0.4)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("mentions")
    axes.set_title(f"Mentions by category per UTC day\n{report.period.label()}")
    handles, names = axes.get_legend_handles_labels()
    axes.legend(  # top to bottom, as the bars stack
        handles[::-1], names[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
    )
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("xb") as handle:
            figure.savefig(handle, format="png")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


# --- the command -----------------------------------------------------------------------------


def run(
    config: Config,
    args: argparse.Namespace,
    *,
    now: datetime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``carebot report``; return the exit code (0, 2 bad input or chart, 3 database)."""
    out = out or sys.stdout
    err = err or sys.stderr
    now = now or datetime.now(UTC)
    try:
        period = parse_period(args.since, args.until, now)
    except PeriodError as exc:
        err.write(f"carebot report: {exc}\n")
        return EXIT_INPUT
    url = config.database_url.get_secret_value()
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and not Path(database).is_file():
        # Reading must not create an empty database where a path was mistyped.
        err.write(f"carebot report: cannot read the database: no file {database}\n")
        return EXIT_DATABASE
    try:
        report = asyncio.run(_collect(url, period, now, config))
    except SchemaError as exc:
        err.write(f"carebot report: cannot read the database: {exc}\n")
        return EXIT_DATABASE
    if args.json:
        out.write(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
    elif report.mentions == 0:
        out.write(f"no mentions between {_moment(period.since)} and {_moment(period.until)} UTC\n")
    else:
        out.write(report.text())
    return EXIT_OK if args.png is None else _chart(report, args.png, err)


def _chart(report: Report, path: Path, err: TextIO) -> int:
    """Write ``--png``; return the exit code."""
    if report.mentions == 0:
        err.write(f"carebot report: no mentions in the period: {path} not written\n")
        return EXIT_OK
    try:
        write_chart(report, path)
    except ImportError as exc:  # a broken install: matplotlib is a dependency
        err.write(f"carebot report: --png needs matplotlib ({exc}): pip install matplotlib\n")
        return EXIT_INPUT
    except OSError as exc:
        err.write(f"carebot report: cannot write {path}: {exc.strerror or exc}\n")
        return EXIT_INPUT
    err.write(f"chart written to {path}\n")
    return EXIT_OK


async def _collect(url: str, period: Period, now: datetime, config: Config) -> Report:
    engine = make_engine(url, pool_size=1)
    try:
        return await collect(
            engine, period, now, config.escalation, brand=config.carebot.brand.name
        )
    finally:
        await engine.dispose()
