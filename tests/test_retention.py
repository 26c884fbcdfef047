"""Retention: customers' texts and identities erased after retention.days, statistics kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bot.clock import SystemClock
from bot.config import load_config
from bot.errors import ConfigError
from bot.models import mentions, tickets
from bot.retention import Retention
from bot.sandbox.x_fake import FakeX
from bot.store import Store, make_engine
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, polls_after, start_service

OLD = datetime.now(UTC) - timedelta(days=400)


async def _erased(svc: Service, mention_id: int) -> bool:
    return any(m["id"] == mention_id and m["text"] == "" for m in await svc.mentions())


async def test_old_resolved_tickets_and_old_unticketed_mentions_are_erased(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    config = make_config(config_copy, db_url, screening={"bot_accounts": ["x:deals_robot"]})
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        texts = {
            "old_resolved": "@acme_care my parcel never arrived, order 4411",
            "new_resolved": "@acme_care my refund is three weeks late",
            "old_open": "@acme_care the app logs me out every single time",
        }
        for author, text in texts.items():
            fake_x.inject_mention(author=author, text=text)
        fake_x.inject_mention(author="deals_robot", text="@acme_care 50% off today only")
        await eventually(lambda: _decided(svc, 4))
    finally:
        await svc.shutdown()
    by_author = {m["author_handle"]: m for m in await svc.mentions()}
    ticket_of = {h: m["ticket_id"] for h, m in by_author.items()}
    assert ticket_of["deals_robot"] is None  # screened: stored, no ticket
    # As if months had passed: two tickets resolved (one long ago), one still open.
    for handle, resolved_at in (("old_resolved", OLD), ("new_resolved", datetime.now(UTC))):
        await svc.execute(
            update(tickets)
            .where(tickets.c.id == ticket_of[handle])
            .values(state="resolved", resolved_at=resolved_at)
        )
    # new_resolved's mention is old too: its ticket was resolved lately, so it stays
    for handle in ("old_resolved", "old_open", "deals_robot", "new_resolved"):
        await svc.execute(
            update(mentions).where(mentions.c.author_handle == handle).values(received_at=OLD)
        )

    svc = await start_service(config, fake_x)  # the purge runs at start, then every hour
    try:
        await eventually(lambda: _erased(svc, by_author["old_resolved"]["id"]))
    finally:
        await svc.shutdown()

    after = {m["id"]: m for m in await svc.mentions()}
    for handle in ("old_resolved", "deals_robot"):
        m = after[by_author[handle]["id"]]
        assert (m["text"], m["author_id"], m["author_handle"]) == ("", "", "")
        assert m["category"] == by_author[handle]["category"]  # statistics stay
        assert m["created_at"] == by_author[handle]["created_at"]
    for handle in ("new_resolved", "old_open"):
        assert after[by_author[handle]["id"]]["text"] == texts[handle]
    old_ticket = {t["id"]: t for t in await svc.tickets()}[ticket_of["old_resolved"]]
    assert (old_ticket["customer_id"], old_ticket["customer_handle"]) == ("", "")
    assert old_ticket["category"] == "complaint"
    assert old_ticket["acknowledged_at"] is not None  # timings kept for the reports
    assert {t["customer_handle"] for t in await svc.tickets()} == {"", "new_resolved", "old_open"}
    events = await svc.events(old_ticket["id"])
    assert events  # the ticket's history stays, its notes and data go
    assert all(e["reason"] == "" and e["data"] is None for e in events)
    assert all(o["text"] == "" for o in await svc.outbox() if o["ticket_id"] == old_ticket["id"])

    # an old mention not decided yet (its process died before deciding) keeps its text
    await svc.execute(
        update(mentions)
        .where(mentions.c.author_handle == "old_open")
        .values(status="received", ticket_id=None)
    )
    engine = make_engine(svc.db_url)
    try:
        again = await Retention(Store(engine, SystemClock()), SystemClock(), 365).purge()
    finally:
        await engine.dispose()
    assert (again.tickets, again.mentions) == (0, 0)  # nothing left to erase
    kept = {m["author_handle"]: m for m in await svc.mentions()}
    assert kept["old_open"]["text"] == texts["old_open"]


def test_retention_shorter_than_the_reopen_window_is_refused(config_copy: ConfigDir) -> None:
    config_copy.update("carebot.yaml", retention={"days": 3})
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy.path, {})
    [problem] = caught.value.problems
    assert problem.file.endswith("carebot.yaml")
    assert problem.key == "retention.days"
    assert problem.line is not None
    assert "reopen_window" in problem.message


async def _decided(svc: Service, n: int) -> bool:
    rows = await svc.mentions()
    return len(rows) == n and all(m["status"] != "received" for m in rows)
