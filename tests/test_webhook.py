"""The signed webhook: any system can hand carebot a mention, and get the acknowledgement back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.platforms.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from bot.sandbox.x_fake import FakeX
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, start_service

SECRET = "a-long-webhook-secret-1234"


class Receiver:
    """The source's reply_url: records what carebot POSTs back."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], dict[str, Any], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.got.append((dict(request.headers), json.loads(raw), raw))
        return web.json_response({"id": f"reply-{len(self.got)}"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/replies", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/replies"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def svc(config_copy: ConfigDir, db_url: str, fake_x: FakeX) -> AsyncIterator[Service]:
    config = make_config(
        config_copy,
        db_url,
        env={"CAREBOT_WEBHOOK_SECRET": SECRET, "CAREBOT_HTTP_PORT": "0"},
        platforms={"webhook": {"enabled": True}},
    )
    service = await start_service(config, fake_x)
    yield service
    await service.shutdown()


def body(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "source": "reviews",
        "external_id": "r-1",
        "text": "The blender broke after two days and support never answered",
        "author": {"id": "u-9", "handle": "jane"},
        "created_at": "2026-11-22T10:00:00Z",
    }
    data.update(over)
    return data


async def post(
    svc: Service, payload: bytes, *, secret: str = SECRET, stamp: str | None = None
) -> tuple[int, dict[str, Any]]:
    assert svc.running.web is not None
    ts = stamp or str(int(time.time()))
    headers = {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, payload)}
    url = f"http://127.0.0.1:{svc.running.web.port}/ingest"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=payload, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_a_signed_mention_becomes_a_ticket_and_the_ack_goes_to_the_reply_url(
    svc: Service, receiver: Receiver
) -> None:
    payload = json.dumps(body(reply_url=receiver.url)).encode()
    status, answer = await post(svc, payload)
    assert (status, answer["status"]) == (202, "accepted")
    [ticket] = await svc.tickets()  # stored and ticketed before the 202
    assert ticket["category"] == "complaint"
    assert ticket["customer_handle"] == "jane"
    await eventually(lambda: len(receiver.got) == 1)
    headers, reply, raw = receiver.got[0]
    assert reply["in_reply_to"] == "r-1"
    assert f"CB-{ticket['id']}" in reply["text"]
    stamp = headers[TIMESTAMP_HEADER]
    assert headers[SIGNATURE_HEADER] == sign(SECRET, stamp, raw)  # signed the same way
    status, _ = await post(svc, payload)  # delivered twice: still one ticket, one ack
    assert status == 202
    assert len(await svc.tickets()) == 1
    await eventually(lambda: _sent(svc))
    assert len(receiver.got) == 1


async def _sent(svc: Service) -> bool:
    rows = await svc.outbox()
    return bool(rows) and all(r["state"] == "sent" for r in rows)


async def test_without_a_reply_url_the_ticket_opens_and_no_ack_is_sent(svc: Service) -> None:
    status, _ = await post(svc, json.dumps(body(external_id="r-2")).encode())
    assert status == 202
    assert len(await svc.tickets()) == 1
    assert await svc.outbox() == []


async def test_bad_signatures_and_stale_timestamps_are_refused_and_nothing_is_stored(
    svc: Service,
) -> None:
    payload = json.dumps(body()).encode()
    status, answer = await post(svc, payload, secret="someone-elses-secret-xx")
    assert status == 401
    assert "X-Carebot-Signature" in answer["error"]
    status, answer = await post(svc, payload, stamp=str(int(time.time()) - 3600))
    assert status == 401
    assert "outside the allowed window" in answer["error"]
    assert svc.running.web is not None
    url = f"http://127.0.0.1:{svc.running.web.port}/ingest"
    async with aiohttp.ClientSession() as session, session.post(url, data=payload) as r:
        assert r.status == 401
    assert await svc.mentions() == []


async def test_a_bad_body_is_a_400_naming_the_field_and_a_huge_one_a_413(svc: Service) -> None:
    status, answer = await post(svc, json.dumps(body(text="")).encode())
    assert (status, answer["field"]) == (400, "text")
    status, answer = await post(svc, json.dumps(body(author="jane")).encode())
    assert (status, answer["field"]) == (400, "author")
    status, answer = await post(svc, json.dumps(body(created_at="yesterday")).encode())
    assert (status, answer["field"]) == (400, "created_at")
    status, answer = await post(svc, b"{not json")
    assert (status, answer["field"]) == (400, "body")
    huge = json.dumps(body(text="x" * 70_000)).encode()
    status, answer = await post(svc, huge)
    assert status == 413
    assert await svc.mentions() == []


async def test_a_reply_to_our_ack_joins_the_ticket_and_odd_timestamps_are_401(
    svc: Service, receiver: Receiver
) -> None:
    status, _ = await post(svc, json.dumps(body(reply_url=receiver.url)).encode())
    assert status == 202
    await eventually(lambda: len(receiver.got) == 1)
    await eventually(lambda: _sent(svc))
    their_id = "reply-1"  # the id the receiver gave our acknowledgement
    follow = body(external_id="r-2", text="it is still broken", in_reply_to_id=their_id)
    follow["reply_url"] = receiver.url
    status, _ = await post(svc, json.dumps(follow).encode())
    assert status == 202
    [ticket] = await svc.tickets()  # joined, not a second ticket
    kinds = [e["kind"] for e in await svc.events(ticket["id"])]
    assert "customer_follow_up" in kinds
    assert len(receiver.got) == 1  # and no second ack
    for stamp in ("²", "9" * 5000):
        status, answer = await post(svc, b"{}", stamp=stamp)
        assert status == 401
        assert "X-Carebot-Timestamp" in answer["error"]


async def test_a_concurrent_storm_with_redeliveries_stores_and_acks_each_mention_once(
    svc: Service, receiver: Receiver
) -> None:
    # 300 distinct mentions from 150 authors, 60 of them delivered twice, all at once:
    # they are committed in groups, and batching must neither lose nor double any.
    texts = [
        "my order never arrived and nobody answers",
        "do you ship to Norway?",
        "the new app is brilliant, thank you!",
    ]
    payloads = [
        json.dumps(
            body(
                external_id=f"s-{i}",
                author={"id": f"a-{i % 150}", "handle": f"user{i % 150}"},
                text=f"{texts[i % 3]} ({i})",
                reply_url=receiver.url,
            )
        ).encode()
        for i in range(300)
    ]
    deliveries = payloads + payloads[::5]
    results = await asyncio.gather(*(post(svc, p) for p in deliveries))
    assert all(status in (200, 202) for status, _ in results), results[:3]
    rows = await svc.mentions()
    assert sorted(r["external_id"] for r in rows) == sorted(f"reviews:s-{i}" for i in range(300))
    assert all(r["status"] != "received" for r in rows)  # every one decided
    tickets = await svc.tickets()
    ticketed = [r for r in rows if r["status"] == "ticketed"]
    assert len(tickets) == len(ticketed) == len({r["ticket_id"] for r in ticketed})
    await eventually(lambda: len(receiver.got) == len(ticketed), timeout=30)
    acked = [json.loads(raw)["in_reply_to"] for _, _, raw in receiver.got]
    assert len(acked) == len(set(acked))  # no mention acknowledged twice
