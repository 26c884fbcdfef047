"""The outbox after a crash mid-send, and replies the platform refuses for good."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, update

from bot.models import outbox, ticket_events, tickets
from bot.sandbox.x_fake import FakeX, Fault
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, polls_after, start_service

COMPLAINT = "@acme_care the app crashes every time I open my basket"


async def _acked(svc: Service) -> bool:
    rows = await svc.tickets()
    return bool(rows) and rows[0]["state"] == "acknowledged"


async def _crashed_mid_send(svc: Service) -> None:
    """Leave the ack row as a dead process would: claimed, outcome unknown."""
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    await svc.execute(
        update(outbox)
        .where(outbox.c.kind == "ack")
        .values(state="sending", claimed_at=long_ago, external_id=None, sent_at=None)
    )
    await svc.execute(update(tickets).values(state="open", acknowledged_at=None))
    await svc.execute(delete(ticket_events).where(ticket_events.c.kind == "acknowledged"))


async def test_a_send_that_reached_x_before_the_crash_is_not_sent_again(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    config = make_config(config_copy, db_url)
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: len(fake_x.posts) == 1)
    finally:
        await svc.shutdown()
    await _crashed_mid_send(svc)

    seen = len(fake_x.requests)
    svc = await start_service(config, fake_x)
    try:
        await eventually(lambda: _acked(svc))
    finally:
        await svc.shutdown()
    after = [r.route for r in fake_x.requests[seen:]]
    assert "user_tweets" in after  # it looked for the reply on X...
    assert "create_tweet" not in after  # ...found it, and did not post again
    assert len(fake_x.posts_in_reply_to(tweet)) == 1
    [row] = await svc.outbox()
    assert (row["state"], row["external_id"]) == ("sent", fake_x.posts[0]["id"])
    [ticket] = await svc.tickets()
    events = await svc.events(ticket["id"])
    assert events[-1]["reason"] == "acknowledgement delivered (confirmed after restart)"


async def test_a_send_that_never_reached_x_is_sent_once_after_the_crash(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    config = make_config(
        config_copy, sqlite_url, outbox={"backoff_base": "1h", "backoff_max": "1h"}
    )
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        fake_x.fail_next("create_tweet", Fault(status=503))
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: any(r.route == "create_tweet" for r in fake_x.requests))
    finally:
        await svc.shutdown()
    assert fake_x.posts == []
    await _crashed_mid_send(svc)

    svc = await start_service(config, fake_x)
    try:
        await eventually(lambda: _acked(svc))
        await polls_after(fake_x, 2)
    finally:
        await svc.shutdown()
    assert len(fake_x.posts_in_reply_to(tweet)) == 1
    [row] = await svc.outbox()
    assert row["state"] == "sent"


async def test_a_reply_x_refuses_for_good_is_failed_and_recorded_on_the_ticket(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, sqlite_url), fake_x)
    try:
        await polls_after(fake_x, 1)
        fake_x.fail_next("create_tweet", Fault(status=400))
        fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: _failed(svc))
        await polls_after(fake_x, 2)
    finally:
        await svc.shutdown()
    assert fake_x.posts == []
    assert [r.status for r in fake_x.requests if r.route == "create_tweet"] == [400]
    [ticket] = await svc.tickets()
    assert ticket["state"] == "open"  # never acknowledged: staff must see it
    events = await svc.events(ticket["id"])
    assert events[-1]["kind"] == "ack_failed"
    assert "X rejected the request" in events[-1]["reason"]


async def _failed(svc: Service) -> bool:
    rows = await svc.outbox()
    return bool(rows) and rows[0]["state"] == "failed"
