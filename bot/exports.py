"""Reading the database for operators: staff's label corrections, and past mentions.

``carebot export-labels`` writes, as ``text,label`` CSV, the text of every ticket whose
category a person changed in the staff chat, with the category they chose last: data to
train on (``carebot train FILE --base``). ``carebot export-mentions`` writes mentions as
the JSON Lines that ``carebot replay`` reads.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.domain import Category, OutboxState
from bot.models import mentions, outbox, ticket_events, tickets
from bot.pipeline import OWN_ACCOUNT

__all__ = ["Writer", "export_labels", "export_mentions"]


class Writer(Protocol):
    """Where an export goes: anything with ``write``."""

    def write(self, text: str, /) -> int:
        """Write ``text``."""


RECATEGORISED = "recategorised"
LABELS = frozenset(c.value for c in Category)
_PAGE = 1000


async def export_labels(engine: AsyncEngine, out: Writer, since: datetime | None) -> int:
    """Write staff's label corrections as CSV (``text,label``); return how many rows.

    Only corrections made at or after ``since`` count (None: all). A ticket corrected
    several times gives one row, with the last category chosen.
    """
    query = (
        select(ticket_events.c.ticket_id, ticket_events.c.data, mentions.c.text)
        .join(tickets, tickets.c.id == ticket_events.c.ticket_id)
        .join(mentions, mentions.c.id == tickets.c.mention_id)
        .where(ticket_events.c.kind == RECATEGORISED)
        .order_by(ticket_events.c.id)
    )
    if since is not None:
        query = query.where(ticket_events.c.at >= since)
    latest: dict[int, tuple[str, str]] = {}
    async with engine.connect() as conn:
        for ticket_id, data, text in await conn.execute(query):
            label = (data or {}).get("to")
            if isinstance(label, str) and label in LABELS:
                latest[int(ticket_id)] = (str(text), label)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "label"])
    for text, label in latest.values():
        writer.writerow([text, label])
    return len(latest)


async def _mention_pages(
    engine: AsyncEngine, since: datetime | None
) -> AsyncIterator[tuple[list[dict[str, Any]], dict[int, list[str]]]]:
    """Mentions in id order, a page at a time, with our sent replies per opening mention.

    Keyset pagination: no long transaction.
    """
    last = 0
    while True:
        query = select(mentions).where(mentions.c.id > last).order_by(mentions.c.id).limit(_PAGE)
        if since is not None:
            query = query.where(mentions.c.received_at >= since)
        async with engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(query)).mappings().all()]
            if not rows:
                return
            replies: dict[int, list[str]] = {}
            sent = await conn.execute(
                select(tickets.c.mention_id, outbox.c.external_id)
                .join(outbox, outbox.c.ticket_id == tickets.c.id)
                .where(
                    tickets.c.mention_id.in_([r["id"] for r in rows]),
                    outbox.c.state == OutboxState.SENT.value,
                    outbox.c.external_id.is_not(None),
                    outbox.c.platform == tickets.c.platform,  # not the staff chat's messages
                )
                .order_by(outbox.c.id)
            )
            for mention_id, external_id in sent:
                replies.setdefault(int(mention_id), []).append(str(external_id))
        yield rows, replies
        last = int(rows[-1]["id"])


async def export_mentions(engine: AsyncEngine, out: Writer, since: datetime | None) -> int:
    """Write mentions as JSON Lines for ``carebot replay``; return how many.

    Besides the mention itself each line holds what replay needs to link threads as the
    service did: ``thread_id``, ``in_reply_to_id``, ``our_replies`` (the ids of our sent
    acknowledgements and replies on the ticket it opened), ``reply_url`` (webhook sources),
    and ``ours: true`` for a post of our own account.
    """
    count = 0
    async for rows, replies in _mention_pages(engine, since):
        for row in rows:
            created = row["created_at"]
            record: dict[str, object] = {
                "platform": row["platform"],
                "id": row["external_id"],
                "author": {
                    "id": row["author_id"],
                    "handle": row["author_handle"],
                    "is_bot": bool(row["author_is_bot"]),
                },
                "text": row["text"],
                "created_at": created.isoformat() if isinstance(created, datetime) else created,
            }
            for key in ("thread_id", "in_reply_to_id", "reply_url"):
                if row[key]:
                    record[key] = row[key]
            if row["id"] in replies:
                record["our_replies"] = replies[row["id"]]
            if row["screen_reason"] == OWN_ACCOUNT:
                record["ours"] = True
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
