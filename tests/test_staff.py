"""Staff escalation in Telegram, end to end: real PTB against the fake Bot API, real tweepy
against the fake X, the escalation sweep driven with an injected clock."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from bot.cli import main
from bot.domain import Category
from bot.sandbox.telegram_fake import FakeTelegram, TgUser
from bot.sandbox.x_fake import FakeX
from handlers.staff import Action, Verb
from tests.conftest import ConfigDir
from tests.harness import FakeClock, Service, eventually, make_config, polls_after, start_service

STAFF_ON = {"enabled": True}
SUPPORT = -1001000000001  # the default config's groups
LEADS = -1001000000002
SAM = TgUser(1002, "Sam", "sam_support")
DANA = TgUser(1001, "Dana", "dana_lead")
STRANGER = TgUser(999, "Mallory", "mallory")
COMPLAINT = "@acme_care my parcel is lost <b>again</b> & nobody answers"


async def open_ticket(svc: Service, fake_x: FakeX, text: str = COMPLAINT) -> tuple[str, int]:
    await polls_after(fake_x, 1)
    tweet = fake_x.inject_mention(author="jenny_k", text=text)
    await eventually(lambda: _has_ticket(svc))
    [ticket] = await svc.tickets()
    return tweet, ticket["id"]


async def _has_ticket(svc: Service) -> bool:
    return len(await svc.tickets()) == 1


async def card_in(fake_tg: FakeTelegram, chat: int) -> dict[str, object]:
    await eventually(lambda: len(fake_tg.sent(chat)) >= 1)
    return fake_tg.sent(chat)[0]


async def swept_card(svc: Service, fake_tg: FakeTelegram, chat: int) -> dict[str, object]:
    """Sweep until the card is posted (on PostgreSQL a sweep skips rows locked at that instant,
    as the next scheduled sweep would pick them up)."""
    sweep = svc.running.sweep
    assert sweep is not None

    async def check() -> bool:
        if fake_tg.sent(chat):
            return True
        await sweep.run_once()
        return False

    await eventually(check)
    return fake_tg.sent(chat)[0]


async def known(svc: Service, chat: int, message_id: object) -> None:
    """Wait until carebot has recorded which ticket a message of its own belongs to."""
    desk = svc.running.desk
    assert desk is not None

    async def check() -> bool:
        return await desk.ticket_for_card(chat, int(str(message_id))) is not None

    await eventually(check)


async def test_a_complaint_becomes_a_card_that_staff_claim_and_strangers_cannot(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    svc = await start_service(
        make_config(config_copy, sqlite_url, staff=STAFF_ON), fake_x, telegram=fake_tg
    )
    try:
        _, tid = await open_ticket(svc, fake_x)
        assert svc.running.sweep is not None
        await svc.running.sweep.run_once()
        card = await card_in(fake_tg, SUPPORT)
        text = str(card["text"])
        assert f"CB-{tid}" in text
        assert "my parcel is lost <b>again</b> & nobody answers" in text  # escaped, shown as typed
        assert "@jenny_k" in text
        datas = [d for row in fake_tg.buttons(SUPPORT, int(card["message_id"])) for _, d in row]
        for verb in ("claim", "resolve", "snooze30", "snooze4h", "escalate", "cat_question"):
            assert f"{verb}:{tid}" in datas

        mid = int(card["message_id"])
        fake_tg.click(SUPPORT, mid, STRANGER, f"claim:{tid}")
        await eventually(lambda: len(fake_tg.callback_answers) == 1)
        refusal = fake_tg.callback_answers[0]
        assert refusal["show_alert"] is True
        assert "Only configured support staff" in refusal["text"]

        assert "Dana" in text  # the urgent policy pages the lead on the card itself
        fake_tg.click(SUPPORT, mid, SAM, f"claim:{tid}")
        await eventually(lambda: len(fake_tg.callback_answers) == 2)
        assert fake_tg.callback_answers[1]["text"] == f"You have CB-{tid}."
        await eventually(lambda: "claimed by Sam" in str(fake_tg.sent(SUPPORT)[0]["text"]))
        assert len(fake_tg.sent(SUPPORT)) == 1  # edited in place, never re-posted
        assert len(fake_tg.edits(SUPPORT, mid)) >= 2
    finally:
        await svc.shutdown()
    [ticket] = await svc.tickets()
    assert (ticket["state"], ticket["claimed_by"]) == ("claimed", "Sam")
    kinds = [(e["kind"], e["actor"]) for e in await svc.events(tid)]
    assert ("refused", "telegram:999 (@mallory)") in kinds
    assert ("claimed", "Sam") in kinds


async def test_two_concurrent_claims_have_exactly_one_winner(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    svc = await start_service(
        make_config(config_copy, db_url, staff=STAFF_ON), fake_x, telegram=fake_tg
    )
    try:
        _, tid = await open_ticket(svc, fake_x)
        desk = svc.running.desk
        assert desk is not None
        outcomes = await asyncio.gather(
            desk.act(Action(Verb.CLAIM, tid), SAM.id, "sam"),
            desk.act(Action(Verb.CLAIM, tid), DANA.id, "dana"),
        )
    finally:
        await svc.shutdown()
    messages = sorted(o.message for o in outcomes)
    assert sum(m == f"You have CB-{tid}." for m in messages) == 1
    [loser] = [m for m in messages if m != f"You have CB-{tid}."]
    [ticket] = await svc.tickets()
    assert loser == f"CB-{tid} is already claimed by {ticket['claimed_by']}."
    claims = [e for e in await svc.events(tid) if e["kind"] == "claimed"]
    assert len(claims) == 1


async def test_a_staff_reply_reaches_the_customer_in_thread_exactly_once(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    svc = await start_service(
        make_config(config_copy, db_url, staff=STAFF_ON), fake_x, telegram=fake_tg
    )
    try:
        tweet, tid = await open_ticket(svc, fake_x)
        card = await swept_card(svc, fake_tg, SUPPORT)
        await eventually(lambda: len(fake_x.posts_in_reply_to(tweet)) == 1)  # the ack
        reply = "Found it: your parcel is at the depot, it will be with you tomorrow."
        await known(svc, SUPPORT, card["message_id"])
        fake_tg.user_message(SUPPORT, SAM, reply, reply_to_message_id=int(card["message_id"]))
        await eventually(lambda: len(fake_x.posts_in_reply_to(tweet)) == 2)
        chatter = fake_tg.user_message(SUPPORT, DANA, "nice one Sam")  # not a reply to a card
        await polls_after(fake_x, 3)
    finally:
        await svc.shutdown()
    posts = fake_x.posts_in_reply_to(tweet)
    assert [p["text"] for p in posts][1:] == [reply]
    [ticket] = await svc.tickets()
    assert ticket["first_response_at"] is not None
    events = [e for e in await svc.events(tid) if e["kind"] == "staff_reply"]
    assert [(e["actor"], e["reason"]) for e in events] == [("Sam", reply)]
    assert chatter["text"] == "nice one Sam"
    assert "No human response yet".lower() not in str(fake_tg.sent(SUPPORT)[0]["text"]).lower()


async def test_the_ladder_climbs_until_resolved_and_survives_a_restart(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    config = make_config(config_copy, sqlite_url, staff=STAFF_ON)
    # a calm question: the "standard" policy (support at 0, reminder at 10m, leads at 30m)
    question = "@acme_care hi, quick question: do you ship to Norway?"
    svc = await start_service(config, fake_x, telegram=fake_tg, clock=clock)
    try:
        _, tid = await open_ticket(svc, fake_x, question)
        sweep = svc.running.sweep
        assert sweep is not None
        assert await sweep.run_once() >= 1
        await card_in(fake_tg, SUPPORT)
        clock.advance(minutes=9)
        assert await sweep.run_once() == 0
        clock.advance(minutes=1)
        assert await sweep.run_once() >= 1  # +10m: reminder to support
        await eventually(lambda: len(fake_tg.sent(SUPPORT)) == 2)
        assert "reminder" in str(fake_tg.sent(SUPPORT)[1]["text"]).lower()
    finally:
        await svc.shutdown()

    clock.advance(minutes=25)  # down over the +30m step
    svc = await start_service(config, fake_x, telegram=fake_tg, clock=clock)
    try:
        sweep = svc.running.sweep
        assert sweep is not None
        assert await sweep.run_once() >= 1  # tier 2 fires once after the restart
        assert await sweep.run_once() == 0
        card = await card_in(fake_tg, LEADS)
        assert f"CB-{tid}" in str(card["text"])
        desk = svc.running.desk
        assert desk is not None
        await desk.act(Action(Verb.RESOLVE, tid), DANA.id, "dana")
        clock.advance(hours=3)
        assert await sweep.run_once() == 0  # only resolved ends it
        await eventually(lambda: "resolved" in str(fake_tg.sent(SUPPORT)[0]["text"]))
    finally:
        await svc.shutdown()
    notices = [e for e in await svc.events(tid) if e["kind"] == "escalated"]
    assert len(notices) == 3
    assert len(fake_tg.sent(LEADS)) == 1


async def test_recategorise_changes_category_and_policy_and_records_a_label_correction(
    config_copy: ConfigDir,
    sqlite_url: str,
    fake_x: FakeX,
    fake_tg: FakeTelegram,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Every verdict is unsure here, so the card first asks for triage.
    config_copy.update("rules.yaml", classifier={"threshold": 0.9999})
    svc = await start_service(
        make_config(config_copy, sqlite_url, staff=STAFF_ON), fake_x, telegram=fake_tg
    )
    try:
        _, tid = await open_ticket(svc, fake_x, "@acme_care how do I change my delivery address?")
        assert svc.running.sweep is not None
        await svc.running.sweep.run_once()
        card = await card_in(fake_tg, SUPPORT)
        assert "Needs triage" in str(card["text"])
        [before] = await svc.tickets()
        assert (before["category"], before["policy"]) == ("question", "standard")
        fake_tg.click(SUPPORT, int(card["message_id"]), SAM, f"cat_praise:{tid}")
        await eventually(lambda: len(fake_tg.callback_answers) == 1)
        assert fake_tg.callback_answers[0]["text"] == f"CB-{tid} is now a praise."
        await eventually(lambda: "Praise · CB-" in str(fake_tg.sent(SUPPORT)[0]["text"]))
        assert "Needs triage" not in str(fake_tg.sent(SUPPORT)[0]["text"])  # a person decided
    finally:
        await svc.shutdown()
    [after] = await svc.tickets()
    assert (after["category"], after["policy"]) == ("praise", "kudos")
    assert after["policy_snapshot"]["name"] == "kudos"
    [event] = [e for e in await svc.events(tid) if e["kind"] == "recategorised"]
    assert event["actor"] == "Sam"
    assert event["data"] == {"from": "question", "to": "praise", "label_correction": True}
    # The correction is training data: export-labels writes it for `carebot train`.
    labels = config_copy.path.parent / "labels.csv"
    env = {"CAREBOT_DATABASE_URL": sqlite_url}
    args = ["export-labels", "--config", str(config_copy.path), "--out", str(labels)]
    assert await asyncio.to_thread(main, args, env) == 0
    assert labels.read_text(encoding="utf-8").splitlines() == [
        "text,label",
        "@acme_care how do I change my delivery address?,praise",
    ]
    capsys.readouterr()
    args = ["export-labels", "--config", str(config_copy.path), "--since", "1h"]
    assert await asyncio.to_thread(main, args, env) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1] == "@acme_care how do I change my delivery address?,praise"
    assert captured.err == "1 label correction(s) written\n"
    # The stored mentions can be replayed: export-mentions writes what replay reads.
    mentions = config_copy.path.parent / "mentions.jsonl"
    args = ["export-mentions", "--config", str(config_copy.path), "--out", str(mentions)]
    assert await asyncio.to_thread(main, args, env) == 0
    [record] = [json.loads(line) for line in mentions.read_text(encoding="utf-8").splitlines()]
    assert record["text"] == "@acme_care how do I change my delivery address?"
    assert record["platform"] == "x"
    capsys.readouterr()
    assert main(["replay", "--config", str(config_copy.path), "--json", str(mentions)], env) == 0
    assert json.loads(capsys.readouterr().out)["config"]["categories"] == {"question": 1}
    # A destination that cannot be written is the operator's to fix, not the database's.
    args = ["export-mentions", "--config", str(config_copy.path), "--out", "/nonexistent/m.jsonl"]
    assert await asyncio.to_thread(main, args, env) == 2
    assert "cannot write /nonexistent/m.jsonl" in capsys.readouterr().err


def _max_per_minute(fake: FakeTelegram, chat: int) -> int:
    times = sorted(
        r.at
        for r in fake.requests
        if r.method == "sendMessage" and r.chat_id == chat and r.status == 200
    )
    return max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)


async def _staff_queue_settled(svc: Service, clock: FakeClock) -> bool:
    rows = await svc.outbox()
    return not any(
        r["platform"] == "staff"
        and r["state"] in ("pending", "sending")
        and r["next_attempt_at"] <= clock.now()
        for r in rows
    )


async def test_a_storm_stays_inside_the_group_budget_and_every_ticket_is_shown(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    clock = FakeClock()
    fake_tg = FakeTelegram(clock=lambda: clock.now().timestamp())  # flood control on our time
    await fake_tg.start()
    config = make_config(config_copy, sqlite_url, staff=STAFF_ON)
    svc = await start_service(config, fake_x, telegram=fake_tg, clock=clock)
    try:
        await polls_after(fake_x, 1)
        for i in range(300):
            fake_x.inject_mention(
                author=f"angry_{i}",
                text=f"@acme_care order {i} never arrived, still no refund, terrible",
            )
        await eventually(lambda: _count_tickets(svc, 300), timeout=60)
        sweep = svc.running.sweep
        assert sweep is not None
        for _ in range(4):  # four minutes of the storm, swept and delivered minute by minute
            await sweep.run_once()
            await eventually(lambda: _staff_queue_settled(svc, clock), timeout=60)
            clock.advance(seconds=61)
    finally:
        await svc.shutdown()
        await fake_tg.stop()
    assert fake_tg.flood_refusals == 0  # no 429 at all: we stay under the limit ourselves
    assert _max_per_minute(fake_tg, SUPPORT) <= 20
    shown = "\n".join(str(m["text"]) for m in fake_tg.sent(SUPPORT))
    tickets = await svc.tickets()
    missing = [t["id"] for t in tickets if f"CB-{t['id']}" not in shown]
    assert not missing, f"{len(missing)} tickets never reached the support group"
    assert "Digest:" in shown
    assert len(fake_tg.sent(SUPPORT)) <= 20 * 4


async def _count_tickets(svc: Service, n: int) -> bool:
    return len(await svc.tickets()) >= n


async def test_commands_queue_stats_ticket_and_resolve(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    svc = await start_service(
        make_config(config_copy, sqlite_url, staff=STAFF_ON), fake_x, telegram=fake_tg
    )
    try:
        _, tid = await open_ticket(svc, fake_x)
        await eventually(lambda: _acked(svc))

        def replies() -> list[str]:
            return [str(m["text"]) for m in fake_tg.sent(SUPPORT)]

        fake_tg.user_message(SUPPORT, SAM, "/queue")
        await eventually(lambda: any("Open tickets" in r for r in replies()))
        assert f"CB-{tid} p1" in replies()[-1]
        fake_tg.user_message(SUPPORT, SAM, "/stats@carebot_bot")
        await eventually(lambda: any(r.startswith("Today") for r in replies()))
        stats = replies()[-1]
        assert "Received: 1 (complaint 1)" in stats
        assert "Acknowledged: 1 of 1 tickets" in stats
        fake_tg.user_message(SUPPORT, SAM, f"/ticket {tid}")
        await eventually(lambda: any(f"Complaint · CB-{tid}" in r for r in replies()))
        card = fake_tg.sent(SUPPORT)[-1]
        assert fake_tg.buttons(SUPPORT, int(card["message_id"]))  # a card staff can act on
        fake_tg.user_message(SUPPORT, STRANGER, f"/resolve {tid}")
        await eventually(lambda: "Only configured support staff" in replies()[-1])
        fake_tg.user_message(SUPPORT, DANA, f"/resolve CB-{tid} refunded in full")
        await eventually(lambda: replies()[-1] == f"CB-{tid} resolved. Note: refunded in full")
        card_id = card["message_id"]
        await eventually(
            lambda: any(
                m["message_id"] == card_id and "State: resolved" in str(m["text"])
                for m in fake_tg.sent(SUPPORT)
            )
        )
    finally:
        await svc.shutdown()
    [ticket] = await svc.tickets()
    assert ticket["state"] == "resolved"
    resolved = [e for e in await svc.events(tid) if e["kind"] == "resolved"]
    assert [(e["actor"], e["reason"]) for e in resolved] == [
        ("Dana", f"CB-{tid} resolved. Note: refunded in full")
    ]


async def _acked(svc: Service) -> bool:
    rows = await svc.tickets()
    return bool(rows) and rows[0]["acknowledged_at"] is not None


async def test_snooze_holds_the_ladder_and_an_idle_claim_re_escalates(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(
        make_config(config_copy, sqlite_url, staff=STAFF_ON), fake_x, telegram=fake_tg, clock=clock
    )
    try:
        # a question: the standard policy (reminder at +10m, claim_idle 20m)
        _, tid = await open_ticket(svc, fake_x, "@acme_care hi, how do I update my card details?")
        sweep, desk = svc.running.sweep, svc.running.desk
        assert sweep is not None
        assert desk is not None
        await sweep.run_once()
        await card_in(fake_tg, SUPPORT)
        await desk.act(Action(Verb.SNOOZE, tid, snooze=timedelta(minutes=30)), SAM.id, "sam")
        clock.advance(minutes=20)  # the +10m reminder falls inside the snooze
        assert await sweep.run_once() == 0
        clock.advance(minutes=11)  # snooze over at +31m: one notice, not a burst
        assert await sweep.run_once() == 1  # tier 2: the card goes to the leads, paging Dana
        assert await sweep.run_once() == 0
        leads_card = await card_in(fake_tg, LEADS)
        assert "1 overdue step skipped" in str(leads_card["text"])
        assert "Dana" in str(leads_card["text"])
        [ticket] = await svc.tickets()
        assert ticket["state"] == "escalated"

        await desk.act(Action(Verb.CLAIM, tid), SAM.id, "sam")
        clock.advance(minutes=19)
        assert await sweep.run_once() == 0  # claimed: the ladder waits for Sam
        clock.advance(minutes=2)  # 21m with no reply from Sam: re-escalate to the leads
        assert await sweep.run_once() == 2  # the card brought up to date + a ping under it
        await eventually(lambda: len(fake_tg.sent(LEADS)) == 2)
        assert "claim" in str(fake_tg.sent(LEADS)[-1]["text"]).lower()
    finally:
        await svc.shutdown()
    kinds = [e["kind"] for e in await svc.events(tid)]
    assert kinds.count("escalated") == 3
    assert "snoozed" in kinds
    assert "claimed" in kinds


async def test_replies_to_reminders_reach_the_customer_and_ticket_points_at_the_card(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(
        make_config(config_copy, sqlite_url, staff=STAFF_ON), fake_x, telegram=fake_tg, clock=clock
    )
    try:
        tweet, tid = await open_ticket(svc, fake_x, "@acme_care hi, do you ship to Norway?")
        sweep = svc.running.sweep
        assert sweep is not None
        await sweep.run_once()
        card = await card_in(fake_tg, SUPPORT)
        clock.advance(minutes=10)
        await sweep.run_once()  # the +10m reminder, posted under the card
        await eventually(lambda: len(fake_tg.sent(SUPPORT)) == 2)
        reminder = fake_tg.sent(SUPPORT)[1]
        await known(svc, SUPPORT, reminder["message_id"])
        fake_tg.user_message(
            SUPPORT,
            SAM,
            "Yes, we ship to Norway!",
            reply_to_message_id=int(reminder["message_id"]),
        )
        await eventually(lambda: len(fake_x.posts_in_reply_to(tweet)) == 2)

        fake_tg.user_message(SUPPORT, SAM, f"/ticket {tid}")  # its card is already here
        await eventually(lambda: len(fake_tg.sent(SUPPORT)) == 3)
        pointer = fake_tg.sent(SUPPORT)[2]
        assert pointer["text"] == "Here is its card."
        assert pointer["reply_to_message"]["message_id"] == card["message_id"]
    finally:
        await svc.shutdown()
    assert fake_x.posts_in_reply_to(tweet)[1]["text"] == "Yes, we ship to Norway!"


async def test_escalate_now_notifies_the_next_tier_at_once_and_resolved_cards_relabel(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    clock = FakeClock()
    svc = await start_service(
        make_config(config_copy, sqlite_url, staff=STAFF_ON), fake_x, telegram=fake_tg, clock=clock
    )
    try:
        _, tid = await open_ticket(svc, fake_x, "@acme_care hi, do you ship to Norway?")
        sweep, desk = svc.running.sweep, svc.running.desk
        assert sweep is not None
        assert desk is not None
        await sweep.run_once()
        await card_in(fake_tg, SUPPORT)
        await desk.act(Action(Verb.CLAIM, tid), SAM.id, "sam")
        clock.advance(minutes=2)
        outcome = await desk.act(Action(Verb.ESCALATE, tid), SAM.id, "sam")
        assert outcome.message == f"CB-{tid} escalated now to support."
        await eventually(lambda: len(fake_tg.sent(SUPPORT)) == 2)  # the ping, right away
        assert "escalated now by Sam" in str(fake_tg.sent(SUPPORT)[1]["text"])
        [ticket] = await svc.tickets()
        assert (ticket["state"], ticket["claimed_by"]) == ("escalated", None)

        await desk.act(Action(Verb.RESOLVE, tid), SAM.id, "sam")
        fixed = await desk.act(
            Action(Verb.RECATEGORISE, tid, category=Category.COMPLAINT), SAM.id, "sam"
        )
        assert fixed.message == f"CB-{tid} is now a complaint."
    finally:
        await svc.shutdown()
    [ticket] = await svc.tickets()
    assert (ticket["state"], ticket["category"]) == ("resolved", "complaint")
    manual = [e for e in await svc.events(tid) if e["kind"] == "escalated" and e["actor"] == "Sam"]
    assert len(manual) == 1
