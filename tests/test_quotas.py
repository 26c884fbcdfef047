"""Acknowledgements within the platform's quota: most urgent first, and never a 429."""

from __future__ import annotations

from bot.config import Config
from bot.sandbox.x_fake import FakeX
from tests.conftest import ConfigDir
from tests.harness import FakeClock, eventually, make_config, polls_after, start_service

COMPLAINTS = [
    "@acme_care my parcel never arrived and nobody answers the phone",
    "@acme_care charged twice for one order, I want my money back",
    "@acme_care the app crashes every time I open my basket, useless",
    "@acme_care still no refund after three weeks, this is ridiculous",
]
QUESTIONS = [
    "@acme_care do you ship to Norway?",
    "@acme_care what time does the Leeds store open on Sunday?",
    "@acme_care can I change the size of my order before it ships?",
]
PRAISE = [
    "@acme_care the new app is brilliant, thank you!",
    "@acme_care shoutout to Maria at the Bristol store, so helpful",
    "@acme_care fastest delivery ever, love it",
]


async def _x_with_quota(
    config_copy: ConfigDir, db_url: str, clock: FakeClock, *, limit: int, seconds: int
) -> tuple[FakeX, Config]:
    """A started fake X that answers 429 past ``limit`` posts, and carebot told the same."""
    fake = FakeX(
        clock=lambda: clock.now().timestamp(),
        enforce_limits=True,
        limits={"create_tweet": (limit, float(seconds))},
    )
    await fake.start()
    quota = {"x": {"limit": limit, "window": f"{seconds}s"}}
    return fake, make_config(config_copy, db_url, outbox={"quotas": quota})


async def test_acks_leave_within_the_quota_most_urgent_first(
    config_copy: ConfigDir, db_url: str
) -> None:
    clock = FakeClock()
    # The fake refuses a sixth post within a minute with 429, as X does past its budget.
    fake, config = await _x_with_quota(config_copy, db_url, clock, limit=5, seconds=60)
    svc = await start_service(config, fake, clock=clock)
    try:
        await polls_after(fake, 1)
        # Praise first, complaints last: arrival order is the opposite of urgency.
        ids = {}
        for text in [*PRAISE, *QUESTIONS, *COMPLAINTS]:
            ids[fake.inject_mention(author=f"user{len(ids)}", text=text)] = text
        await eventually(lambda: len(fake.posts) == 5)
        await polls_after(fake, 3)  # nothing more leaves while the quota is spent
        first = [ids[p["in_reply_to_tweet_id"]] for p in fake.posts]
        assert first == [*COMPLAINTS, QUESTIONS[0]]  # complaints, oldest first, then questions

        clock.advance(seconds=61)
        await eventually(lambda: len(fake.posts) == 10)
        second = [ids[p["in_reply_to_tweet_id"]] for p in fake.posts[5:]]
        assert second == [*QUESTIONS[1:], *PRAISE]
    finally:
        await svc.shutdown()
        await fake.stop()
    statuses = [r.status for r in fake.requests if r.route == "create_tweet"]
    assert statuses == [201] * 10  # zero 429s: the quota was kept, not discovered
    rows = await svc.outbox()
    assert sorted(r["state"] for r in rows) == ["sent"] * 10


async def test_a_restart_remembers_what_the_quota_already_spent(
    config_copy: ConfigDir, db_url: str
) -> None:
    clock = FakeClock()
    fake, config = await _x_with_quota(config_copy, db_url, clock, limit=2, seconds=600)
    try:
        svc = await start_service(config, fake, clock=clock)
        try:
            await polls_after(fake, 1)
            fake.inject_mention(author="ana", text=COMPLAINTS[0])
            fake.inject_mention(author="bo", text=COMPLAINTS[1])
            await eventually(lambda: len(fake.posts) == 2)
        finally:
            await svc.shutdown()
        clock.advance(minutes=1)
        svc = await start_service(config, fake, clock=clock)
        try:
            await polls_after(fake, 1)
            fake.inject_mention(author="cy", text=COMPLAINTS[2])
            await polls_after(fake, 3)
            assert len(fake.posts) == 2  # the window still holds the two sent before
            clock.advance(minutes=10)
            await eventually(lambda: len(fake.posts) == 3)
        finally:
            await svc.shutdown()
    finally:
        await fake.stop()
    assert all(r.status == 201 for r in fake.requests if r.route == "create_tweet")
