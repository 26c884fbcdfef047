"""The names of things (DESIGN.md): platforms, categories, mentions, verdicts, plans, states."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final


class Platform(enum.StrEnum):
    """A source of mentions and a destination for replies."""

    X = "x"
    TELEGRAM = "telegram"
    MASTODON = "mastodon"
    WEBHOOK = "webhook"
    STAFF = "staff"  # not a customer platform: the staff chat, as an outbox destination


class Category(enum.StrEnum):
    """What a mention is, as far as customer care is concerned."""

    COMPLAINT = "complaint"
    QUESTION = "question"
    PRAISE = "praise"
    OTHER = "other"


class TicketState(enum.StrEnum):
    """Ticket life: open → acknowledged → escalated → claimed → resolved (+ snoozed, reopened)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ESCALATED = "escalated"
    CLAIMED = "claimed"
    SNOOZED = "snoozed"
    REOPENED = "reopened"
    RESOLVED = "resolved"


class MentionStatus(enum.StrEnum):
    """Where a stored mention is in the pipeline."""

    RECEIVED = "received"  # stored, not yet decided (a crash here is recovered at start-up)
    SCREENED = "screened"  # dropped by screening (own account, bot, blocked); reason stored
    IGNORED = "ignored"  # decided: no ticket (category other)
    TICKETED = "ticketed"  # a ticket was opened for it
    FOLLOW_UP = "follow_up"  # it joined the author's existing ticket (a reply in the thread)


class OutboxState(enum.StrEnum):
    """Delivery state of one outbox row: pending → sending → sent | failed."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class OutboxKind(enum.StrEnum):
    """Why an outbox row exists."""

    ACK = "ack"  # acknowledgement to the customer
    REPLY = "reply"  # a staff member's reply relayed to the customer
    STAFF = "staff"  # a notice to a staff chat
    FOLLOW_UP = "follow_up"  # to the customer: an incident's update or fix, a public note


@dataclass(frozen=True, slots=True)
class Mention:
    """One inbound item from a platform, translated by its adapter.

    ``external_id`` is the platform's id as a string (tweepy gives ints); ``(platform,
    external_id)`` is unique. ``thread_id`` is the conversation root when the platform has one.
    """

    platform: Platform
    external_id: str
    author_id: str
    author_handle: str
    text: str
    created_at: datetime
    thread_id: str | None = None
    in_reply_to_id: str | None = None
    author_is_bot: bool = False
    url: str | None = None
    reply_url: str | None = None  # webhook sources: the callback that takes our replies


TRIAGE_PREFIX: Final = "needs triage: "  # the first reason of an unsure verdict starts so


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classifier's answer: a category, a confidence in [0, 1], and why.

    ``needs_triage``: the classifier was unsure and fell back to a safe category; the
    staff card says so, and the first reason says why.
    """

    category: Category
    confidence: float
    reasons: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    needs_triage: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """What a handler decides for a verdict; the pipeline carries it out in one transaction.

    ``ack_template`` names a template set in ``config/templates.yaml`` (None: no ack).
    ``priority`` is 1 (most urgent) to 4. ``policy`` names an escalation policy.
    """

    open_ticket: bool
    ack_template: str | None
    priority: int
    policy: str | None
    note: str = ""
