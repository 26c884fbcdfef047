"""Customers on Telegram: the real PTB against the fake Bot API, on the staff chat's bot."""

from __future__ import annotations

import socket

import aiohttp

from bot.sandbox.telegram_fake import FakeTelegram, TgUser
from bot.sandbox.x_fake import FakeX
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, start_service

SUPPORT = -1001000000001
FANS = -1002000000042
OLA = TgUser(5551, "Ola", "ola_n")
PIA = TgUser(5552, "Pia", "pia_k")
SAM = TgUser(1002, "Sam", "sam_support")


async def _acks_recorded(svc: Service, n: int) -> bool:
    rows = await svc.outbox()
    return sum(1 for r in rows if r["kind"] == "ack" and r["state"] == "sent") >= n


async def _decided(svc: Service, n: int) -> bool:
    rows = [m for m in await svc.mentions() if m["platform"] == "telegram"]
    return len(rows) >= n and all(m["status"] != "received" for m in rows)


async def test_dms_and_group_mentions_are_acked_in_their_chats_and_chatter_is_not(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    config = make_config(
        config_copy, db_url, staff={"enabled": True}, platforms={"telegram": {"enabled": True}}
    )
    svc = await start_service(config, fake_x, telegram=fake_tg)
    try:
        dm = fake_tg.user_message(OLA.id, OLA, "hi, my card payment keeps failing, help?")
        mention = fake_tg.user_message(
            FANS, PIA, "@carebot_bot the app crashes when I open my orders", chat_title="Fans"
        )
        chatter = fake_tg.user_message(FANS, PIA, "anyone watching the match tonight?")
        staff_talk = fake_tg.user_message(SUPPORT, SAM, "@carebot_bot lunch at 1?")
        await eventually(lambda: _decided(svc, 2))
        await eventually(lambda: len(fake_tg.sent(OLA.id)) == 1 and len(fake_tg.sent(FANS)) == 1)
        await eventually(lambda: _acks_recorded(svc, 2))  # as a customer sees it, seconds later
        # a reply to our ack in the group is a follow-up: it joins the ticket, no second ack
        ack_in_group = fake_tg.sent(FANS)[0]
        follow = fake_tg.user_message(
            FANS,
            PIA,
            "it's the iOS app, version 5",
            reply_to_message_id=int(ack_in_group["message_id"]),
        )
        await eventually(lambda: _decided(svc, 3))
    finally:
        await svc.shutdown()
    dm_ack = fake_tg.sent(OLA.id)[0]
    assert dm_ack["reply_to_message"]["message_id"] == dm["message_id"]
    assert "CB-" in str(dm_ack["text"])
    group_ack = fake_tg.sent(FANS)
    assert len(group_ack) == 1  # chatter and the follow-up got nothing
    assert group_ack[0]["reply_to_message"]["message_id"] == mention["message_id"]
    rows = {m["external_id"]: m for m in await svc.mentions() if m["platform"] == "telegram"}
    assert f"{FANS}:{chatter['message_id']}" not in rows
    assert f"{SUPPORT}:{staff_talk['message_id']}" not in rows  # staff are never customers
    joined = rows[f"{FANS}:{follow['message_id']}"]
    assert joined["status"] == "follow_up"
    assert joined["ticket_id"] == rows[f"{FANS}:{mention['message_id']}"]["ticket_id"]
    assert len([t for t in await svc.tickets() if t["platform"] == "telegram"]) == 2


async def test_the_webhook_route_takes_updates_and_refuses_a_wrong_secret(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    with socket.socket() as probe:  # a free port for carebot's HTTP server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "tg-webhook-secret-0123456789"
    config = make_config(
        config_copy,
        sqlite_url,
        env={"CAREBOT_TELEGRAM_WEBHOOK_SECRET": secret, "CAREBOT_HTTP_PORT": str(port)},
        staff={"enabled": True, "telegram_webhook_url": f"http://127.0.0.1:{port}/telegram"},
        platforms={"telegram": {"enabled": True}},
    )
    svc = await start_service(config, fake_x, telegram=fake_tg)
    try:
        assert fake_tg.webhook_url == f"http://127.0.0.1:{port}/telegram"
        polls = sum(1 for r in fake_tg.requests if r.method == "getUpdates")
        dm = fake_tg.user_message(OLA.id, OLA, "my order arrived broken, what now?")
        await eventually(lambda: len(fake_tg.sent(OLA.id)) == 1)
        assert fake_tg.sent(OLA.id)[0]["reply_to_message"]["message_id"] == dm["message_id"]
        assert sum(1 for r in fake_tg.requests if r.method == "getUpdates") == polls
        update = {"update_id": 99, "message": {"message_id": 1, "date": 0, "text": "hi"}}
        async with aiohttp.ClientSession() as session:
            for header in ({}, {"X-Telegram-Bot-Api-Secret-Token": "nope"}):
                async with session.post(
                    f"http://127.0.0.1:{port}/telegram", json=update, headers=header
                ) as resp:
                    assert resp.status == 403
    finally:
        await svc.shutdown()
