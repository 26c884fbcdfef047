"""The core loop on X, end to end: the real tweepy client against the sandbox's fake X API."""

from __future__ import annotations

import math

from sqlalchemy import update

from bot.domain import TicketState
from bot.models import cursors
from bot.sandbox.x_fake import FakeX, Fault
from tests.conftest import ConfigDir
from tests.harness import eventually, make_config, polls_after, start_service

COMPLAINT = "@acme_care my order never arrived and your support line keeps hanging up on me"


def posted_to(fake: FakeX, tweet_id: str) -> list[dict[str, object]]:
    return [p for p in fake.posts if p["in_reply_to_tweet_id"] == tweet_id]


async def test_complaint_gets_one_reply_in_thread_and_a_ticket(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, db_url), fake_x)
    try:
        await polls_after(fake_x, 1)  # the first start has recorded where "now" is
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: len(fake_x.posts) == 1)
        await polls_after(fake_x, 3)  # a few more polls: nothing else is posted

        assert len(fake_x.posts) == 1
        reply = fake_x.posts[0]
        assert reply["in_reply_to_tweet_id"] == tweet
        assert reply["auth"] == "oauth1"  # posted as the account, not the app
        [ticket] = await svc.tickets()
        ref = f"CB-{ticket['id']}"
        assert ref in str(reply["text"])
        assert "http" not in str(reply["text"])
        assert ticket["category"] == "complaint"
        await eventually(lambda: _state(svc, ticket["id"], TicketState.ACKNOWLEDGED))
        events = await svc.events(ticket["id"])
        assert [(e["from_state"], e["to_state"]) for e in events] == [
            (None, "open"),
            ("open", "acknowledged"),
        ]
        assert events[1]["data"]["message_id"] == reply["id"]
        [row] = await svc.outbox()
        assert (row["state"], row["external_id"], row["attempts"]) == ("sent", reply["id"], 1)
    finally:
        await svc.shutdown()
    assert "ticket CB-" in svc.out.getvalue()


async def _state(svc: object, ticket_id: int, state: TicketState) -> bool:
    rows = await svc.tickets()  # type: ignore[attr-defined]
    return any(t["id"] == ticket_id and t["state"] == state.value for t in rows)


async def test_first_start_does_not_answer_the_backlog(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    old = [
        fake_x.inject_mention(author=f"old_{i}", text=f"@acme_care broken again {i}")
        for i in range(3)
    ]
    svc = await start_service(make_config(config_copy, sqlite_url), fake_x)
    try:
        await polls_after(fake_x, 3)
        new = fake_x.inject_mention(author="new_one", text="@acme_care my card was charged twice")
        await eventually(lambda: len(fake_x.posts) == 1)
        await polls_after(fake_x, 2)
    finally:
        await svc.shutdown()
    assert [p["in_reply_to_tweet_id"] for p in fake_x.posts] == [new]
    assert all(not posted_to(fake_x, t) for t in old)


async def test_restart_sends_no_second_reply_and_respects_the_cursor(
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
    assert (await svc.cursor("x:mentions"))["value"] == tweet  # type: ignore[index]

    seen = len(fake_x.requests)
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 3)
    finally:
        await svc.shutdown()
    polls = [r for r in fake_x.requests[seen:] if r.route == "mentions"]
    assert polls
    assert all(r.query.get("since_id") == tweet for r in polls)
    assert len(fake_x.posts) == 1
    assert len(await svc.tickets()) == 1


async def test_overlapping_pages_give_one_ticket_and_one_reply_each(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    fake_x.overlap_pages = True
    config = make_config(config_copy, db_url, platforms={"x": {"page_size": 5}})
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        ids = [
            fake_x.inject_mention(
                author=f"cust_{i}", text=f"@acme_care where is my refund for order {i}?"
            )
            for i in range(12)
        ]
        await eventually(lambda: len(fake_x.posts) >= 12)
        await polls_after(fake_x, 2)
    finally:
        await svc.shutdown()
    pages = [
        r for r in fake_x.requests if r.route == "mentions" and r.query.get("pagination_token")
    ]
    assert pages, "the burst was not paginated"
    assert sorted(p["in_reply_to_tweet_id"] for p in fake_x.posts) == sorted(ids)
    assert len(await svc.tickets()) == 12
    assert len(await svc.mentions()) == 12


async def test_redelivery_after_a_restart_before_the_cursor_moved(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    config = make_config(config_copy, db_url)
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        before = (await svc.cursor("x:mentions"))["value"]  # type: ignore[index]
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: len(fake_x.posts) == 1)
    finally:
        await svc.shutdown()
    # As if the process had died after storing the mention but before the cursor moved.
    await svc.execute(update(cursors).values(value=before))
    seen = len(fake_x.requests)
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 3)
    finally:
        await svc.shutdown()
    redelivered = [r for r in fake_x.requests[seen:] if r.route == "mentions"]
    assert redelivered[0].query.get("since_id") == before  # the fake really sent it again
    assert len(posted_to(fake_x, tweet)) == 1
    assert len(await svc.tickets()) == 1
    assert (await svc.cursor("x:mentions"))["value"] == tweet  # type: ignore[index]


async def test_own_posts_and_bots_are_never_acknowledged(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    config = make_config(
        config_copy, sqlite_url, screening={"bot_accounts": ["x:deals_robot", "spamfarm"]}
    )
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        own = fake_x.post_as_account("@acme_care note to self: the app is broken for some users")
        bot1 = fake_x.inject_mention(
            author="deals_robot", text="@acme_care terrible service, refund now"
        )
        bot2 = fake_x.inject_mention(
            author="SpamFarm", text="@acme_care thanks for the great help!"
        )
        real = fake_x.inject_mention(
            author="real_person", text="@acme_care thanks, you fixed it fast!"
        )
        await eventually(lambda: len(fake_x.posts) >= 1)
        await polls_after(fake_x, 3)
    finally:
        await svc.shutdown()
    assert [p["in_reply_to_tweet_id"] for p in fake_x.posts] == [real]
    by_id = {m["external_id"]: m for m in await svc.mentions()}
    assert by_id[own]["status"] == "screened"
    assert by_id[own]["screen_reason"] == "our own account"
    assert by_id[bot1]["screen_reason"] == "author is a configured bot account"
    assert by_id[bot2]["screen_reason"] == "author is a configured bot account"
    assert by_id[real]["status"] == "ticketed"
    assert len(await svc.tickets()) == 1


async def test_429_with_reset_waits_for_the_reset_then_sends_once(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, sqlite_url), fake_x)
    try:
        await polls_after(fake_x, 1)
        fake_x.fail_next("create_tweet", Fault(status=429, reset_in=1.2))
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: len(fake_x.posts) == 1)
        await polls_after(fake_x, 2)
    finally:
        await svc.shutdown()
    posts = [r for r in fake_x.requests if r.route == "create_tweet"]
    assert [r.status for r in posts] == [429, 201]
    reset = math.ceil(posts[0].at + 1.2)
    assert posts[1].at >= reset, "a request was made before x-rate-limit-reset"
    assert len(posted_to(fake_x, tweet)) == 1
    [row] = await svc.outbox()
    assert row["state"] == "sent"


async def test_mentions_429_with_reset_pauses_polling_until_the_reset(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, sqlite_url), fake_x)
    try:
        await polls_after(fake_x, 1)
        fake_x.fail_next("mentions", Fault(status=429, reset_in=1.0))
        await polls_after(fake_x, 3)
    finally:
        await svc.shutdown()
    polls = [r for r in fake_x.requests if r.route == "mentions"]
    limited = next(i for i, r in enumerate(polls) if r.status == 429)
    assert polls[limited + 1].at >= math.ceil(polls[limited].at + 1.0)


async def test_server_errors_and_timeouts_are_retried_and_the_ack_goes_out_once(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    config = make_config(
        config_copy,
        db_url,
        platforms={"x": {"request_timeout": "300ms"}},
        outbox={"backoff_base": "300ms", "backoff_max": "3s"},  # the slow post lands first
    )
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        fake_x.fail_next(
            "create_tweet",
            Fault(status=503),
            Fault(status=502, body="<html>Bad Gateway</html>"),  # a proxy's non-JSON error
            Fault(status=429),  # no reset header: plain backoff
            Fault(status=200, delay=1.0, late=True),  # posted, but the answer comes too late
        )
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: _acknowledged(svc))
        await polls_after(fake_x, 2)
    finally:
        await svc.shutdown()
    statuses = [r.status for r in fake_x.requests if r.route == "create_tweet"]
    # 499: posted, but we stopped waiting for the answer; 403: X refusing the retry as a
    # duplicate, after which the sender finds the earlier post instead of posting again.
    assert statuses == [503, 502, 429, 499, 403]
    assert len(posted_to(fake_x, tweet)) == 1
    [row] = await svc.outbox()
    assert row["state"] == "sent"
    assert row["external_id"] == posted_to(fake_x, tweet)[0]["id"]


async def _acknowledged(svc: object) -> bool:
    rows = await svc.tickets()  # type: ignore[attr-defined]
    return bool(rows) and rows[0]["state"] == "acknowledged"
