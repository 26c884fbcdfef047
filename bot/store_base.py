"""The store's foundation: engine set-up, transactions, and the values carebot stores.

SQLite (the embedded default) runs each write transaction as ``BEGIN IMMEDIATE`` so
read-then-write transactions never lose updates, and reads stay deferred; PostgreSQL claims
work with ``FOR UPDATE SKIP LOCKED`` so several processes can share it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import RowMapping, Table, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from bot.clock import Clock
from bot.domain import (
    Mention,
    MentionStatus,
    OutboxKind,
    OutboxState,
    Plan,
    Platform,
    TicketState,
    Verdict,
)

SYSTEM_ACTOR: Final = "carebot"
READ_ONLY: Final = "carebot_read_only"
APPLY_CHUNK: Final = 200  # decisions per write transaction: keeps the SQLite write lock short
WAL_ATTEMPTS: Final = 40  # about 40 s of retries in all
SQLITE_PRAGMAS: Final = (
    "busy_timeout=10000",  # first: switching to WAL waits for other connections, not fails
    "journal_mode=WAL",
    "foreign_keys=ON",
    "synchronous=NORMAL",
)


def _pragma(cur: Any, pragma: str) -> None:
    """Run a PRAGMA; switching a new file to WAL is retried while another connection writes.

    SQLite answers "database is locked" at once (no busy wait) when the journal mode changes
    under another connection's transaction, e.g. processes migrating a fresh file together.
    This runs on aiosqlite's worker thread, so the short sleeps never block the event loop.
    """
    for attempt in range(WAL_ATTEMPTS):
        try:
            cur.execute(f"PRAGMA {pragma}")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
        else:
            return


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    """Create the engine; on SQLite, set the pragmas and ``BEGIN IMMEDIATE`` transactions."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: DBAPIConnection, _rec: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            for pragma in SQLITE_PRAGMAS:
                _pragma(cur, pragma)
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Writers take the lock up front (no lost updates, no deadlocked upgrades);
            # readers stay deferred, so under WAL they never wait for a writer.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def ticket_ref(prefix: str, ticket_id: int) -> str:
    """The reference customers and staff see for a ticket (``CB-42``)."""
    return f"{prefix}{ticket_id}"


@dataclass(frozen=True, slots=True)
class StoredMention:
    """A mention and its row id."""

    id: int
    mention: Mention


@dataclass(frozen=True, slots=True)
class CursorUpdate:
    """Where a source has read up to; written in the same transaction as the mentions."""

    source: str
    value: str | None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AckSpec:
    """An acknowledgement to queue: text rendered once the ticket id (its reference) is known."""

    render: Callable[[int], str]
    destination: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pipeline decided for one stored mention."""

    stored: StoredMention
    status: MentionStatus
    screen_reason: str | None = None
    verdict: Verdict | None = None
    plan: Plan | None = None
    policy_snapshot: dict[str, Any] | None = None
    ack: AckSpec | None = None
    join_ticket_id: int | None = None  # FOLLOW_UP: the ticket it joins
    reopen: bool = False  # FOLLOW_UP on a resolved ticket inside the reopen window
    note: str = ""
    incident_id: int | None = None  # TICKETED: linked to this incident (no ladder of its own)


@dataclass(frozen=True, slots=True)
class TicketLink:
    """A ticket a new mention may belong to."""

    ticket_id: int
    state: TicketState
    resolved_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuthorActivity:
    """What one author received lately, for the per-author flood cap."""

    acks_last_hour: int
    open_ticket_id: int | None


@dataclass(frozen=True, slots=True)
class Applied:
    """What committing a decision produced."""

    decision: Decision
    ticket_id: int | None
    ack_text: str | None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed outbox row."""

    id: int
    ticket_id: int | None
    kind: OutboxKind
    platform: Platform
    destination: dict[str, Any]
    text: str
    idempotency_key: str
    attempts: int
    claimed_at: datetime | None
    claimed_by: str | None = None
    created_at: datetime | None = None  # written with the mention: receipt, for an ack

    @classmethod
    def from_row(cls, row: RowMapping) -> OutboxRow:
        """Build from a database row."""
        return cls(
            id=row["id"],
            ticket_id=row["ticket_id"],
            kind=OutboxKind(row["kind"]),
            platform=Platform(row["platform"]),
            destination=dict(row["destination"]),
            text=row["text"],
            idempotency_key=row["idempotency_key"],
            attempts=row["attempts"],
            claimed_at=row["claimed_at"],
            claimed_by=row.get("claimed_by"),
            created_at=row.get("created_at"),
        )


def pending_row(
    *,
    ticket_id: int | None,
    kind: OutboxKind,
    platform: Platform,
    destination: dict[str, Any],
    text: str,
    key: str,
    priority: int,
    now: datetime,
) -> dict[str, Any]:
    """The values of a new outbox row, due now."""
    return {
        "ticket_id": ticket_id,
        "kind": kind.value,
        "platform": platform.value,
        "destination": destination,
        "text": text,
        "idempotency_key": key,
        "state": OutboxState.PENDING.value,
        "priority": priority,
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_at": None,
        "claimed_by": None,
        "sent_at": None,
        "external_id": None,
        "last_error": None,
        "created_at": now,
    }


def mention_from_row(row: Mapping[Any, Any]) -> StoredMention:
    """Rebuild a stored mention from its row."""
    return StoredMention(
        id=row["id"],
        mention=Mention(
            platform=Platform(row["platform"]),
            external_id=row["external_id"],
            author_id=row["author_id"],
            author_handle=row["author_handle"],
            text=row["text"],
            created_at=row["created_at"],
            thread_id=row["thread_id"],
            in_reply_to_id=row["in_reply_to_id"],
            author_is_bot=row["author_is_bot"],
            url=row["url"],
            reply_url=row["reply_url"],
        ),
    )


class StoreBase:
    """Engine, clock and transactions; the operations live in the subclasses."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._pg = engine.dialect.name == "postgresql"
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._write_lock = None if self._pg else asyncio.Lock()
        # why the last write transaction could not reach the database (None: it could):
        # /readyz says not ready meanwhile (SQLite locked by another program, a restart)
        self.write_failure: str | None = None

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        return postgresql.insert(table) if self._pg else sqlite.insert(table)

    def dialect_insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT that can say ON CONFLICT on this database."""
        return self._insert(table)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction. On SQLite, writers of this process queue up fairly here.

        SQLite has one writer at a time; left to its busy handler, a writer that commits in a
        loop (a big batch in chunks) can starve the others past the busy timeout. An asyncio
        lock is first-come first-served, so every writer gets its turn between chunks.
        """
        try:
            if self._write_lock is None:
                async with self.engine.begin() as conn:
                    yield conn
            else:
                async with self._write_lock, self.engine.begin() as conn:
                    yield conn
        except DBAPIError as exc:
            if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
                self.write_failure = f"{type(exc.orig).__name__}: {exc.orig}"[:200]
            raise
        self.write_failure = None

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads only (a deferred transaction on SQLite)."""
        return self._reader.connect()

    @asynccontextmanager
    async def using(
        self, conn: AsyncConnection | None, *, write: bool
    ) -> AsyncIterator[AsyncConnection]:
        """``conn`` when the caller's transaction is to be joined; else a new one."""
        if conn is not None:
            yield conn
            return
        async with self.write() if write else self.read() as own:
            yield own

    async def ping(self) -> None:
        """Check that the database answers."""
        async with self.read() as conn:
            await conn.execute(select(1))
