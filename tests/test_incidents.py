"""Crisis mode end to end: surge alerts, incidents declared from the staff chat, incident
acknowledgements, one escalation, follow-ups within quotas when fixed, reopening one ticket.

Real tweepy against the fake X, real PTB against the fake Bot API, an injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bot.config import Config
from bot.domain import Category
from bot.errors import ConfigError
from bot.incidents import IncidentDesk
from bot.models import incidents, outbox, surges, tickets
from bot.retention import Retention
from bot.sandbox.staff_sim import StaffSimulator
from bot.sandbox.telegram_fake import FakeTelegram, TgUser
from bot.sandbox.traffic import TrafficGenerator, outage_complaint, run_outage
from bot.sandbox.x_fake import FakeX
from bot.themes import Complaint, find_themes
from handlers.staff import Action, Verb
from tests.conftest import ConfigDir
from tests.harness import FakeClock, Service, eventually, make_config, polls_after, start_service

STAFF_ON = {"enabled": True}
SUPPORT = -1001000000001
LEADS = -1001000000002  # the shipped staff.alerts_group: surge alerts and incident cards
DANA = TgUser(1001, "Dana", "dana_lead")
SAM = TgUser(1002, "Sam", "sam_support")
CHECKOUT = [
    "checkout is broken, card payment fails every single time",
    "is your checkout down? been trying to pay for 20 minutes",
    "checkout keeps spinning and then errors out. Fix it please",
    "can't get through checkout, it just says something went wrong",
    "your checkout page won't load, I'm trying to give you money!!",
    "checkout error again. Third time today 😡",
    "stuck at checkout with a full basket, nothing happens when I press pay",
]
ORDINARY = [
    "my parcel never arrived and nobody answers the phone",
    "charged twice for one order, I want my money back",
    "the app crashes every time I open my basket, useless",
    "still no refund after three weeks, this is ridiculous",
]


def _config(config_copy: ConfigDir, db_url: str, **sections: dict[str, object]) -> Config:
    surge = {"threshold": 5, "window": "10m", "every": "30s"}
    return make_config(
        config_copy,
        db_url,
        staff=STAFF_ON,
        incidents={"surge": surge},
        screening={"max_acks_per_author_per_hour": 5},
        **sections,
    )


async def _ticketed(svc: Service, n: int) -> None:
    async def check() -> bool:
        return len(await svc.tickets()) >= n

    await eventually(check)


async def _desk(svc: Service, fake_x: FakeX) -> IncidentDesk:
    """The service's incident desk, once the service has polled X."""
    desk = svc.running.incidents
    assert desk is not None
    await polls_after(fake_x, 1)
    return desk


async def _complaints(svc: Service, fake_x: FakeX, texts: list[str], prefix: str) -> None:
    """Each text from another customer; wait until all are ticketed."""
    before = len(await svc.tickets())
    for i, text in enumerate(texts):
        fake_x.inject_mention(author=f"{prefix}{i}", text=text)
    await _ticketed(svc, before + len(texts))


async def _acked(fake_x: FakeX, tweet: str, n: int = 1) -> list[str]:
    await eventually(lambda: len(fake_x.posts_in_reply_to(tweet)) >= n)
    return [str(p["text"]) for p in fake_x.posts_in_reply_to(tweet)]


async def _command(fake_tg: FakeTelegram, user: TgUser, text: str) -> str:
    """Send a command in the leads group; return carebot's answer to it."""
    sent = fake_tg.user_message(LEADS, user, text)

    def answered() -> bool:
        return any(
            (m.get("reply_to_message") or {}).get("message_id") == sent["message_id"]
            for m in fake_tg.sent(LEADS)
        )

    await eventually(answered)
    [answer] = [
        m
        for m in fake_tg.sent(LEADS)
        if (m.get("reply_to_message") or {}).get("message_id") == sent["message_id"]
    ]
    return str(answer["text"])


def _buttons(fake_tg: FakeTelegram, chat: int, prefix: str) -> list[tuple[int, str]]:
    return [
        (int(m["message_id"]), data)
        for m in fake_tg.sent(chat)
        for row in fake_tg.buttons(chat, int(m["message_id"]))
        for _, data in row
        if data.startswith(prefix)
    ]


def test_a_themed_window_is_one_theme_and_ordinary_traffic_is_none() -> None:
    at = datetime(2026, 11, 22, 12, tzinfo=UTC)
    rng = random.Random(7)
    gen = TrafficGenerator(rng=rng)
    ordinary = [
        Complaint("x", f"u{i}", gen.sample(Category.COMPLAINT).text, at) for i in range(200)
    ]
    brand = frozenset({"acme"})  # the brand's name is in many complaints: never a theme
    storm = [Complaint("x", f"s{i}", outage_complaint(rng, "Acme"), at) for i in range(25)]
    # a busy ordinary hour: nothing is shared by enough of the complaints to be a theme
    assert find_themes(ordinary, [], threshold=20, min_ratio=3, min_share=0.3, skip=brand) == []
    themes = find_themes(
        [*storm, *ordinary[:40]],
        ordinary[40:],
        threshold=20,
        min_ratio=3,
        min_share=0.3,
        skip=brand,
    )
    assert [t.key for t in themes] == ["checkout"]
    also = sum("checkout" in c.text.lower() for c in ordinary[:40])  # the usual few
    assert themes[0].customers == 25 + also
    assert all("checkout" in s for s in themes[0].samples)
    # one customer writing 25 times is no surge
    same = [Complaint("x", "one", outage_complaint(rng, "Acme"), at) for _ in range(25)]
    assert find_themes(same, [], threshold=20, min_ratio=3, min_share=0.3, skip=brand) == []


async def test_a_themed_storm_raises_exactly_one_surge_alert_and_its_button_declares(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg, clock=clock)
    try:
        desk = await _desk(svc, fake_x)
        for i, text in enumerate([*ORDINARY, *CHECKOUT]):
            fake_x.inject_mention(author=f"customer{i}", text=text)
        await _ticketed(svc, len(ORDINARY) + len(CHECKOUT))
        assert await desk.check_surges() == 1
        clock.advance(seconds=30)
        fake_x.inject_mention(author="angry_late", text="checkout STILL failing, come on")
        await _ticketed(svc, len(ORDINARY) + len(CHECKOUT) + 1)
        assert await desk.check_surges() == 0  # the same theme: no second alert
        clock.advance(seconds=30)
        assert await desk.check_surges() == 0
        await eventually(lambda: len(fake_tg.sent(LEADS)) == 1)
        alert = str(fake_tg.sent(LEADS)[0]["text"])
        assert "Surge on x" in alert
        assert "7 customers" in alert  # as many as when it was raised
        assert "checkout" in alert
        [(message_id, data)] = _buttons(fake_tg, LEADS, "inc_declare:")

        fake_tg.click(LEADS, message_id, SAM, data)  # an agent may not declare
        await eventually(lambda: len(fake_tg.callback_answers) == 1)
        assert "Only leads" in str(fake_tg.callback_answers[0]["text"])
        fake_tg.click(LEADS, message_id, DANA, data)
        fake_tg.click(LEADS, message_id, DANA, data)  # a double click declares once
        await eventually(lambda: len(fake_tg.callback_answers) == 3)
        answers = [str(a["text"]) for a in fake_tg.callback_answers[1:]]
        assert sum(a.startswith("INC-1 declared") for a in answers) == 1
        assert any("Already declared: INC-1" in a for a in answers)
        await eventually(lambda: len(fake_tg.sent(LEADS)) == 2)  # the incident's card
        card = str(fake_tg.sent(LEADS)[1]["text"])
        assert "Incident INC-1 · investigating" in card
        assert "Linked: 8 ticket(s) from 8 customer(s)" in card
        assert "Dana" in card  # the leads are paged, once
        sweep = svc.running.sweep
        assert sweep is not None
        await sweep.run_once()
        await eventually(lambda: len(fake_tg.sent(SUPPORT)) == len(ORDINARY))
        await polls_after(fake_x, 2)
        await sweep.run_once()
    finally:
        await svc.shutdown()
    rows = await svc.tickets()
    linked = [t for t in rows if t["incident_id"] == 1]
    assert len(linked) == len(CHECKOUT) + 1
    assert all(t["next_escalation_at"] is None for t in linked)
    # only the ordinary complaints got cards of their own; the storm is one item
    assert len(fake_tg.sent(SUPPORT)) == len(ORDINARY)
    assert all("checkout" not in str(m["text"]) for m in fake_tg.sent(SUPPORT))


async def _limited_x(clock: FakeClock, limit: int) -> FakeX:
    """A fake X that answers 429 past ``limit`` posts a minute, as X does past its budget."""
    fake_x = FakeX(
        clock=lambda: clock.now().timestamp(),
        enforce_limits=True,
        limits={"create_tweet": (limit, 60.0)},
    )
    await fake_x.start()
    return fake_x


async def _follow_ups_stored(svc: Service, n: int) -> None:
    async def check() -> bool:
        return sum(m["status"] == "follow_up" for m in await svc.mentions()) >= n

    await eventually(check)


async def test_a_declared_incident_links_old_and_new_matching_mentions_and_acks_them_honestly(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg)
    try:
        await polls_after(fake_x, 1)
        before = fake_x.inject_mention(author="early_bird", text=CHECKOUT[0])
        calm = fake_x.inject_mention(author="calm_one", text=ORDINARY[0])
        await _acked(fake_x, before)
        await _acked(fake_x, calm)

        refused = await _command(fake_tg, SAM, '/incident declare "Checkout down" checkout')
        assert refused == "Only leads can declare, update or fix incidents."
        answer = await _command(
            fake_tg, DANA, '/incident declare "checkout failures" checkout "card declined"'
        )
        assert answer.startswith("INC-1 declared")
        assert "1 open ticket(s) linked" in answer  # the complaint from before the incident

        new = [
            fake_x.inject_mention(author=f"buyer{i}", text=text)
            for i, text in enumerate([*CHECKOUT[1:3], "my card declined twice at the till"])
        ]
        other = fake_x.inject_mention(author="calm_two", text=ORDINARY[1])
        for tweet in new:
            [ack] = await _acked(fake_x, tweet)
            assert "(checkout failures)" in ack  # the incident's template, its title
            assert "Reply here if you'd like updates." in ack  # its public status
            assert "CB-" in ack  # and the customer's own reference
        [other_ack] = await _acked(fake_x, other)
        assert "checkout failures" not in other_ack  # not about the incident: the usual ack
        sweep = svc.running.sweep
        assert sweep is not None
        await sweep.run_once()
        await eventually(lambda: len(fake_tg.sent(SUPPORT)) == 2)  # the two ordinary ones
        await sweep.run_once()
    finally:
        await svc.shutdown()
    cards = [str(m["text"]) for m in fake_tg.sent(SUPPORT)]
    assert len(cards) == 2
    assert any("@calm_one" in c for c in cards)
    assert any("@calm_two" in c for c in cards)
    rows = {t["customer_handle"]: t for t in await svc.tickets()}
    assert {h for h, t in rows.items() if t["incident_id"] == 1} == {
        "early_bird",
        "buyer0",
        "buyer1",
        "buyer2",
    }
    assert rows["calm_one"]["incident_id"] is None


async def test_updates_reach_who_asked_and_the_fix_reaches_each_customer_once_within_quota(
    config_copy: ConfigDir, db_url: str, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    fake_x = await _limited_x(clock, 6)
    quota = {"x": {"limit": 6, "window": "60s"}}
    config = _config(config_copy, db_url, outbox={"quotas": quota})
    svc = await start_service(config, fake_x, telegram=fake_tg, clock=clock)
    try:
        await polls_after(fake_x, 1)
        await _command(fake_tg, DANA, '/incident declare "checkout failures" checkout')
        new = {
            fake_x.inject_mention(author=f"buyer{i}", text=text): f"buyer{i}"
            for i, text in enumerate(CHECKOUT[1:5])
        }
        for tweet in new:
            await _acked(fake_x, tweet)
        # One customer replies to their acknowledgement: they asked to be kept informed.
        first = next(iter(new))
        ack_id = str(fake_x.posts_in_reply_to(first)[0]["id"])
        fake_x.inject_mention(
            author=new[first], text="any news? still can't pay", in_reply_to=ack_id
        )
        await _follow_ups_stored(svc, 1)
        clock.advance(seconds=61)
        answer = await _command(
            fake_tg, DANA, '/incident update 1 identified "A bad release; rolling back now."'
        )
        assert answer == (
            "INC-1 is identified. Status: “A bad release; rolling back now.”, "
            "sent to 1 customer(s)."
        )
        posts = await _acked(fake_x, first, 2)  # in the customer's thread, after the ack
        assert posts[1] == (
            f"Update on checkout failures, @{new[first]}: A bad release; rolling back now. "
            f"({_ref_of(posts[0])})"
        )
        # A second complaint from a linked customer: still one follow-up for them.
        again = fake_x.inject_mention(author="buyer1", text="checkout failing on the app too now")
        await _acked(fake_x, again)
        # Spend the rest of the minute's quota, so the follow-ups must wait for the next one.
        for i in range(4):
            await _acked(fake_x, fake_x.inject_mention(author=f"filler{i}", text=ORDINARY[i]))
        sent = len(fake_x.posts)
        answer = await _command(fake_tg, DANA, "/incident fix 1 Rolled back, payments work.")
        assert answer == "INC-1 is fixed: a follow-up to 4 customer(s), 5 ticket(s) resolved."
        await polls_after(fake_x, 3)
        assert len(fake_x.posts) == sent  # the quota is spent: they wait, none is refused
        clock.advance(seconds=61)
        await eventually(lambda: len(fake_x.posts) == sent + 4)
        await polls_after(fake_x, 3)
        authors = {**new, again: "buyer1"}  # buyer1's follow-up goes to their newest thread
        fixed = [
            authors[str(p["in_reply_to_tweet_id"])]
            for p in fake_x.posts
            if str(p["text"]) in _fixed_posts(fake_x)
        ]
        assert sorted(fixed) == sorted(new.values())  # exactly one each
    finally:
        await svc.shutdown()
        await fake_x.stop()
    assert all(r.status != 429 for r in fake_x.requests)
    assert len(_fixed_posts(fake_x)) == 4
    rows = await svc.tickets()
    assert sorted(t["state"] for t in rows if t["incident_id"] == 1) == ["resolved"] * 5
    assert all(t["first_response_at"] is not None for t in rows if t["incident_id"] == 1)
    assert all(t["state"] != "resolved" for t in rows if t["incident_id"] is None)
    [inc] = await svc.rows(incidents)
    assert (inc["state"], inc["status_text"]) == ("fixed", "Rolled back, payments work.")


def _fixed_posts(fake_x: FakeX) -> list[str]:
    """Posts that are the incident's "fixed" follow-up (the shipped templates' wordings)."""
    texts = [str(p["text"]) for p in fake_x.posts]
    return [
        t for t in texts if " is fixed. If you still have trouble" in t or "is sorted now" in t
    ]


def _ref_of(text: str) -> str:
    match = re.search(r"CB-\d+", text)
    assert match is not None, text
    return match.group(0)


async def test_a_reply_after_the_fix_reopens_only_that_customers_ticket(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg, clock=clock)
    try:
        await polls_after(fake_x, 1)
        answer = await _command(fake_tg, DANA, '/incident declare "checkout failures" checkout')
        assert answer.startswith("INC-1 declared")
        tweets = {
            fake_x.inject_mention(author=f"buyer{i}", text=text): f"buyer{i}"
            for i, text in enumerate(CHECKOUT[:3])
        }
        for tweet in tweets:
            await _acked(fake_x, tweet)
        answer = await _command(fake_tg, DANA, "/incident fix 1")
        assert answer == "INC-1 is fixed: a follow-up to 3 customer(s), 3 ticket(s) resolved."
        for tweet in tweets:
            await _acked(fake_x, tweet, 2)
        first = next(iter(tweets))
        follow_up = fake_x.posts_in_reply_to(first)[1]
        assert str(follow_up["text"]) in _fixed_posts(fake_x)
        clock.advance(hours=1)
        fake_x.inject_mention(
            author=tweets[first], text="still failing for me", in_reply_to=str(follow_up["id"])
        )

        async def reopened() -> bool:
            return any(t["state"] == "reopened" for t in await svc.tickets())

        await eventually(reopened)
        sweep = svc.running.sweep
        assert sweep is not None
        await sweep.run_once()  # the reopened ticket escalates on its own now
        await eventually(lambda: len(fake_tg.sent(SUPPORT)) == 1)
        # after the fix, a new complaint on the theme is handled as usual
        late = fake_x.inject_mention(author="late_one", text=CHECKOUT[4])
        [late_ack] = await _acked(fake_x, late)
    finally:
        await svc.shutdown()
    states = {t["customer_handle"]: (t["state"], t["incident_id"]) for t in await svc.tickets()}
    assert states["buyer0"] == ("escalated", 1)  # reopened, and on the ladder again
    assert states["buyer1"] == states["buyer2"] == ("resolved", 1)
    assert states["late_one"][1] is None  # the incident is over: not linked
    assert "checkout failures" not in late_ack
    [card] = fake_tg.sent(SUPPORT)
    assert "@buyer0" in str(card["text"])


async def test_a_public_resolution_note_reaches_the_customer_and_a_reply_reopens(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg)
    try:
        await polls_after(fake_x, 1)
        tweet = fake_x.inject_mention(author="jenny_k", text=ORDINARY[1])
        await _acked(fake_x, tweet)
        [ticket] = await svc.tickets()
        tid = ticket["id"]
        fake_tg.user_message(SUPPORT, SAM, f"/resolve {tid} refunded via Stripe")
        await eventually(lambda: any("resolved" in str(m["text"]) for m in fake_tg.sent(SUPPORT)))
        await polls_after(fake_x, 2)
        assert len(fake_x.posts_in_reply_to(tweet)) == 1  # an internal note stays internal
        # A thank-you is recorded on the ticket, not taken for a new problem...
        fake_x.inject_mention(
            author="jenny_k", text="thank you so much, brilliant!", in_reply_to=tweet
        )
        await _follow_ups_stored(svc, 1)
        [t] = await svc.tickets()
        assert t["state"] == "resolved"
        # ...but the trouble coming back reopens it.
        fake_x.inject_mention(
            author="jenny_k", text="the refund still hasn't arrived, useless", in_reply_to=tweet
        )

        async def reopened() -> bool:
            [t] = await svc.tickets()
            return t["state"] == "reopened"

        await eventually(reopened)
        too_long = "x" * 201
        fake_tg.user_message(SUPPORT, SAM, f"/resolve {tid} public: {too_long}")
        await eventually(
            lambda: any("at most 200" in str(m["text"]) for m in fake_tg.sent(SUPPORT))
        )
        assert await reopened()  # refused whole: not resolved without its note
        fake_tg.user_message(
            SUPPORT,
            SAM,
            f"/resolve {tid} public: Your refund of £12 left today; 3-5 days to arrive.",
        )
        posts = await _acked(fake_x, tweet, 2)
        assert posts[1] == f"Your refund of £12 left today; 3-5 days to arrive. (CB-{tid})"
    finally:
        await svc.shutdown()
    [t] = await svc.tickets()
    assert t["state"] == "resolved"
    assert t["first_response_at"] is not None


async def test_the_sandbox_outage_storm_is_alerted_declared_and_fixed_by_the_simulated_lead(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    config = make_config(config_copy, db_url, staff=STAFF_ON)  # the shipped surge settings
    svc = await start_service(config, fake_x, telegram=fake_tg, clock=clock)
    try:
        desk = await _desk(svc, fake_x)
        stop = asyncio.Event()
        storm = await run_outage(
            lambda s: fake_x.inject_mention(author=s.author, text=s.text),
            TrafficGenerator(rng=random.Random(3)),
            after=0,
            complaints=30,
            over=0.3,
            stop=stop,
        )
        assert storm == 30
        await _ticketed(svc, 30)
        assert await desk.check_surges() == 1
        lead = StaffSimulator(
            fake_tg, chats=[], members=[], rng=random.Random(1), leads=[DANA], lead_chat=LEADS
        )
        await eventually(lambda: bool(_buttons(fake_tg, LEADS, "inc_declare:")))
        for _ in range(3):
            lead.tick()
        await eventually(lambda: bool(_buttons(fake_tg, LEADS, "inc_fixed:")))

        async def stepped(state: str) -> bool:
            lead.tick()
            rows = await svc.rows(incidents)
            return bool(rows) and rows[0]["state"] == state

        await eventually(lambda: stepped("identified"))
        await eventually(lambda: stepped("fixed"))
        await eventually(lambda: len(_fixed_posts(fake_x)) == 30, timeout=30)
    finally:
        await svc.shutdown()
    rows = await svc.rows(tickets, tickets.c.incident_id.is_not(None))
    assert len(rows) == 30
    assert {t["state"] for t in rows} == {"resolved"}


def test_an_unknown_incident_group_is_a_config_error_naming_file_line_and_key(
    config_copy: ConfigDir,
) -> None:
    config_copy.update("carebot.yaml", incidents={"group": "war-room"})
    with pytest.raises(ConfigError) as caught:
        make_config(config_copy, "sqlite+aiosqlite:///unused.db")
    [problem] = [p for p in caught.value.problems if p.key == "incidents.group"]
    assert problem.file.endswith("carebot.yaml")
    assert problem.line is not None
    assert "war-room" in problem.message


async def test_complaints_older_than_the_window_do_not_make_a_surge(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg, clock=clock)
    try:
        desk = await _desk(svc, fake_x)
        await _complaints(svc, fake_x, CHECKOUT[:4], "early")
        clock.advance(minutes=11)  # those four are out of the window
        fake_x.inject_mention(author="late0", text=CHECKOUT[4])
        await _ticketed(svc, 5)
        assert await desk.check_surges() == 0  # one in the window, below the threshold
    finally:
        await svc.shutdown()
    assert fake_tg.sent(LEADS) == []


async def test_retention_erases_the_customers_words_quoted_in_surge_alerts(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg, clock=clock)
    try:
        desk = await _desk(svc, fake_x)
        await _complaints(svc, fake_x, CHECKOUT[:5], "customer")
        assert await desk.check_surges() == 1

        async def alert_sent() -> bool:
            rows = await svc.rows(outbox, outbox.c.ticket_id.is_(None))
            return [r["state"] for r in rows] == ["sent"]

        await eventually(alert_sent)
        [surge] = await svc.rows(surges)
        assert len(surge["samples"]) == 3
        clock.advance(days=366)
        await Retention(svc.store, clock, 365).purge()
    finally:
        await svc.shutdown()
    [surge] = await svc.rows(surges)
    assert (surge["samples"], surge["theme"]) == ([], "checkout")  # the theme is no one's words
    [alert] = await svc.rows(outbox, outbox.c.ticket_id.is_(None))
    assert alert["text"] == ""


async def test_claimed_tickets_stay_with_their_agent_and_a_late_link_is_settled_like_the_rest(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg)
    try:
        desk, incidents_desk = svc.running.desk, svc.running.incidents
        assert desk is not None
        assert incidents_desk is not None
        await polls_after(fake_x, 1)
        held = fake_x.inject_mention(author="with_sam", text=CHECKOUT[0])
        await _acked(fake_x, held)
        [ticket] = await svc.tickets()
        await desk.act(Action(Verb.CLAIM, ticket["id"]), SAM.id, "sam")
        answer = await _command(fake_tg, DANA, '/incident declare "checkout failures" checkout')
        assert "0 open ticket(s) linked" in answer  # Sam has that one
        late = fake_x.inject_mention(author="late_buyer", text=CHECKOUT[1])
        await _acked(fake_x, late)
        assert await _command(fake_tg, DANA, "/incident fix 1") == (
            "INC-1 is fixed: a follow-up to 1 customer(s), 1 ticket(s) resolved."
        )
        # A mention decided while the incident was active but committed after the fix (a
        # race between the pipeline and the staff chat) leaves a linked, open ticket behind.
        straggler = fake_x.inject_mention(author="racer", text="hello, a quick question")
        await _acked(fake_x, straggler)
        await svc.execute(
            update(tickets)
            .where(tickets.c.customer_handle == "racer")
            .values(incident_id=1, next_escalation_at=None)
        )
        assert await incidents_desk.settle_stragglers() == 1
        posts = await _acked(fake_x, straggler, 2)
        assert posts[1] in _fixed_posts(fake_x)
        assert await incidents_desk.settle_stragglers() == 0
    finally:
        await svc.shutdown()
    states = {t["customer_handle"]: (t["state"], t["incident_id"]) for t in await svc.tickets()}
    assert states["with_sam"] == ("claimed", None)
    assert states["late_buyer"] == ("resolved", 1)
    assert states["racer"] == ("resolved", 1)
    assert len(fake_x.posts_in_reply_to(held)) == 1  # only its ack: Sam answers it


async def test_one_outage_in_two_wordings_is_one_alert_and_the_watch_runs_on_its_own(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    config = _config(config_copy, db_url)
    svc = await start_service(config, fake_x, telegram=fake_tg)
    try:
        desk = await _desk(svc, fake_x)
        for i in range(6):
            fake_x.inject_mention(author=f"a{i}", text=f"login is broken again, error {i}")
            fake_x.inject_mention(author=f"b{i}", text=f"the app won't let me sign in, code {i}")
        await _ticketed(svc, 12)
        watch = asyncio.create_task(desk.run(timedelta(milliseconds=50)))
        try:
            await eventually(lambda: len(fake_tg.sent(LEADS)) == 1)
            await polls_after(fake_x, 5)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        assert await desk.check_surges() == 0  # each theme was alerted: not again
    finally:
        await svc.shutdown()
    [alert] = fake_tg.sent(LEADS)
    datas = [d for row in fake_tg.buttons(LEADS, int(alert["message_id"])) for _, d in row]
    assert len(datas) == 2  # one message, a Declare button per wording
    assert "login" in str(alert["text"])


async def test_an_incident_without_news_pages_the_leads_again_until_fixed(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(_config(config_copy, db_url), fake_x, telegram=fake_tg, clock=clock)
    try:
        desk = svc.running.incidents
        assert desk is not None
        await _command(fake_tg, DANA, '/incident declare "checkout failures" checkout')
        await eventually(lambda: bool(_buttons(fake_tg, LEADS, "inc_fixed:")))
        clock.advance(minutes=29)
        assert await desk.remind() == 0
        clock.advance(minutes=2)
        assert await desk.remind() == 1
        assert await desk.remind() == 0  # once per remind_every
        reminder = await _posted(fake_tg, LEADS, "still investigating")
        card_id = _buttons(fake_tg, LEADS, "inc_fixed:")[0][0]
        assert (reminder.get("reply_to_message") or {}).get("message_id") == card_id
        assert "Dana" in str(reminder["text"])
        await _command(fake_tg, DANA, '/incident update 1 "Rolling back."')
        clock.advance(minutes=20)
        assert await desk.remind() == 0  # news resets the clock
        await _command(fake_tg, DANA, "/incident fix 1")
        clock.advance(hours=2)
        assert await desk.remind() == 0
    finally:
        await svc.shutdown()


async def _posted(fake_tg: FakeTelegram, chat: int, words: str) -> dict[str, object]:
    await eventually(lambda: any(words in str(m["text"]) for m in fake_tg.sent(chat)))
    return next(m for m in fake_tg.sent(chat) if words in str(m["text"]))
