"""The schema: mentions, tickets, events, outbox, incidents, surges, leases, cursors (Core)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import DateTime as _DateTime

NAMING: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)

# BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect (SQLite stores naive text)."""

    impl = _DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Attach UTC to what SQLite gives back."""
        if value is None:
            return None
        assert isinstance(value, datetime)  # noqa: S101 — the impl type guarantees it
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


mentions = Table(
    "mentions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("platform", String(16), nullable=False),
    Column("external_id", String(64), nullable=False),
    Column("author_id", String(64), nullable=False),
    Column("author_handle", String(100), nullable=False),
    Column("author_is_bot", Boolean, nullable=False, default=False),
    Column("text", Text, nullable=False),
    Column("thread_id", String(64)),
    Column("in_reply_to_id", String(64)),
    Column("url", String(500)),
    Column("reply_url", String(1000)),  # webhook sources: where acknowledgements are POSTed
    Column("created_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("screen_reason", String(200)),
    Column("category", String(16)),
    Column("confidence", Float),
    Column("reasons", JSON),
    Column("ticket_id", Id, ForeignKey("tickets.id", ondelete="SET NULL")),
    UniqueConstraint("platform", "external_id"),
    Index("ix_mentions_status", "status"),
    Index("ix_mentions_ticket_id", "ticket_id"),
    Index("ix_mentions_received_at", "received_at"),  # the retention purge reads the oldest
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("mention_id", Id, nullable=False),  # the opening mention (no FK: mentions point here)
    Column("platform", String(16), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("customer_handle", String(100), nullable=False),
    Column("state", String(16), nullable=False),
    Column("category", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("policy", String(64)),
    Column("policy_snapshot", JSON),
    Column("next_escalation_at", UTCDateTime),
    Column("escalation_step", Integer, nullable=False, default=0),  # ladder rung reached
    Column("notices_sent", Integer, nullable=False, default=0, server_default="0"),
    Column("claimed_by", String(100)),
    Column("claimed_at", UTCDateTime),
    Column("snoozed_until", UTCDateTime),
    Column("ladder_started_at", UTCDateTime),
    Column("last_notice_at", UTCDateTime),
    Column("last_staff_reply_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("acknowledged_at", UTCDateTime),
    Column("first_response_at", UTCDateTime),
    Column("resolved_at", UTCDateTime),
    # linked to an incident: the incident escalates as one item, this ticket's ladder waits
    Column("incident_id", Id, ForeignKey("incidents.id", ondelete="SET NULL")),
    Index("ix_tickets_state", "state"),
    Index("ix_tickets_incident_id", "incident_id"),
    Index("ix_tickets_customer_id", "customer_id"),  # the per-author flood cap, every batch
    Index("ix_tickets_next_escalation_at", "next_escalation_at"),
)

ticket_events = Table(
    "ticket_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("reason", Text, nullable=False, default=""),
    Column("data", JSON),
    Index("ix_ticket_events_ticket_id", "ticket_id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id", ondelete="SET NULL")),
    Column("kind", String(16), nullable=False),
    Column("platform", String(16), nullable=False),
    Column("destination", JSON, nullable=False),
    Column("text", Text, nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime),
    Column("claimed_by", String(128)),  # the process that claimed it (leases.holder)
    Column("sent_at", UTCDateTime),
    Column("external_id", String(64)),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("idempotency_key"),
    Index("ix_outbox_state_next_attempt_at", "state", "next_attempt_at"),
    Index("ix_outbox_external_id", "external_id"),  # replies to our messages join tickets
    Index("ix_outbox_ticket_id", "ticket_id"),  # the flood cap: each author's acks, every group
)

staff_cards = Table(
    "staff_cards",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("ticket_id", Id, ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
    Column("chat_id", BigInteger, nullable=False),
    Column("message_id", BigInteger),  # set when the card's first post is delivered
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("ticket_id", "chat_id"),
    Index("ix_staff_cards_chat_id_message_id", "chat_id", "message_id"),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("title", String(100), nullable=False),
    Column("terms", JSON, nullable=False),  # words or phrases; a mention matching one links
    Column("status_text", Text, nullable=False),  # the public status customers are told
    Column("state", String(16), nullable=False),  # investigating, identified, fixed
    Column("declared_by", String(100), nullable=False),
    Column("declared_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("fixed_at", UTCDateTime),
    Column("updates_sent", Integer, nullable=False, default=0, server_default="0"),
    Column("history", JSON, nullable=False),  # [{at, by, state, status}], newest last
    Column("card_chat_id", BigInteger),  # the incident's card in the staff chat
    Column("card_message_id", BigInteger),
    Column("card_linked", Integer, nullable=False, default=0, server_default="0"),
    Column("reminded_at", UTCDateTime),  # the leads were last paged again about it
    Index("ix_incidents_state", "state"),
)

surges = Table(
    "surges",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("platform", String(16), nullable=False),
    Column("theme", String(100), nullable=False),  # the term the complaints share
    Column("terms", JSON, nullable=False),  # the theme's top terms
    Column("complaints", Integer, nullable=False),  # similar complaints when last alerted
    Column("samples", JSON, nullable=False),
    Column("alerted_at", UTCDateTime, nullable=False),
    Column("incident_id", Id, ForeignKey("incidents.id", ondelete="SET NULL")),
    UniqueConstraint("platform", "theme"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
)

cursors = Table(
    "cursors",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("value", String(128)),
    Column("data", JSON),
    Column("updated_at", UTCDateTime, nullable=False),
)
