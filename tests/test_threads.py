"""Conversations: follow-ups join their ticket, reopen it after resolve, and nobody can flood."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from bot.models import tickets
from bot.sandbox.x_fake import FakeX
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, polls_after, start_service


async def _mention(svc: Service, external_id: str) -> dict[str, object] | None:
    for m in await svc.mentions():
        if m["external_id"] == external_id:
            return dict(m)
    return None


async def _decided(svc: Service, external_id: str) -> bool:
    m = await _mention(svc, external_id)
    return m is not None and m["status"] != "received"


async def test_a_follow_up_joins_the_ticket_and_reopens_it_after_resolve(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, db_url), fake_x)
    try:
        await polls_after(fake_x, 1)
        first = fake_x.inject_mention(author="jenny_k", text="@acme_care my parcel is lost")
        await eventually(lambda: len(fake_x.posts) == 1)
        ack = fake_x.posts[0]["id"]
        reply = fake_x.inject_mention(
            author="jenny_k", text="@acme_care it was order 5521", in_reply_to=ack
        )
        stranger = fake_x.inject_mention(
            author="someone_else",
            text="@acme_care same here, my parcel is lost too",
            in_reply_to=ack,
        )
        await eventually(lambda: _decided(svc, reply))
        await eventually(lambda: _decided(svc, stranger))
        await polls_after(fake_x, 2)
        assert [p["in_reply_to_tweet_id"] for p in fake_x.posts] == [first, stranger]

        [ticket, other] = await svc.tickets()
        joined = await _mention(svc, reply)
        assert joined is not None
        assert (joined["status"], joined["ticket_id"]) == ("follow_up", ticket["id"])
        events = await svc.events(ticket["id"])
        assert events[-1]["kind"] == "customer_follow_up"
        assert "it was order 5521" in events[-1]["reason"]
        assert other["customer_handle"] == "someone_else"  # not the thread's customer

        resolved_at = datetime.now(UTC)
        await svc.execute(
            update(tickets)
            .where(tickets.c.id == ticket["id"])
            .values(state="resolved", resolved_at=resolved_at)
        )
        again = fake_x.inject_mention(
            author="jenny_k", text="@acme_care it never came, still nothing", in_reply_to=first
        )
        await eventually(lambda: _decided(svc, again))
        [reopened, _] = await svc.tickets()
        assert reopened["state"] == "reopened"
        assert reopened["resolved_at"] is None
        assert [e["kind"] for e in await svc.events(ticket["id"])][-2:] == [
            "customer_follow_up",
            "reopened",
        ]

        long_ago = datetime.now(UTC) - timedelta(days=8)
        await svc.execute(
            update(tickets)
            .where(tickets.c.id == ticket["id"])
            .values(state="resolved", resolved_at=long_ago)
        )
        later = fake_x.inject_mention(
            author="jenny_k", text="@acme_care another problem with a new order", in_reply_to=first
        )
        await eventually(lambda: len(fake_x.posts) == 3)
    finally:
        await svc.shutdown()
    assert fake_x.posts[-1]["in_reply_to_tweet_id"] == later  # a new ticket, a new ack
    assert len(await svc.tickets()) == 3


async def test_one_author_flooding_gets_at_most_the_capped_acks_and_nothing_is_lost(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    config = make_config(config_copy, db_url, screening={"max_acks_per_author_per_hour": 3})
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        ids = []
        for i in range(50):
            ids.append(
                fake_x.inject_mention(author="spammy_sam", text=f"@acme_care refund now!!! ({i})")
            )
            if i % 10 == 9:
                await polls_after(fake_x, 1)  # spread over several polls, like a real minute
        await eventually(lambda: _all_decided(svc, 50))
        await polls_after(fake_x, 3)
    finally:
        await svc.shutdown()
    assert len(fake_x.posts) == 3
    rows = [m for m in await svc.mentions() if m["author_handle"] == "spammy_sam"]
    assert len(rows) == 50
    assert all(m["ticket_id"] is not None for m in rows)  # every mention attached to a ticket
    assert sum(m["status"] == "follow_up" for m in rows) == 47


async def _all_decided(svc: Service, n: int) -> bool:
    rows = await svc.mentions()
    return len(rows) >= n and all(m["status"] != "received" for m in rows)
