"""The Mastodon fake, driven by plain aiohttp: REST, SSE stream, idempotency, limits, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from yarl import URL

from bot.sandbox.mastodon_fake import SANDBOX_TOKEN, FakeMastodon, Fault, status_length
from tests.harness import eventually

T0 = 1_760_000_000.25
AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeFake = Callable[..., Awaitable[FakeMastodon]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_fake(clock: Clock) -> AsyncIterator[MakeFake]:
    started: list[FakeMastodon] = []

    async def make(**kwargs: Any) -> FakeMastodon:
        fake = FakeMastodon(clock=clock, **kwargs)
        await fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.stop()


@pytest.fixture
async def fake(make_fake: MakeFake) -> FakeMastodon:
    return await make_fake()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def get_json(
    http: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.get(url, **kwargs) as resp:
        return resp.status, await resp.json(), resp


async def post_status(
    http: aiohttp.ClientSession, fake: FakeMastodon, key: str | None = None, **body: Any
) -> tuple[int, Any]:
    headers = dict(AUTH)
    if key is not None:
        headers["Idempotency-Key"] = key
    async with http.post(f"{fake.base_url}/api/v1/statuses", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_verify_credentials_needs_the_token(
    fake: FakeMastodon, http: aiohttp.ClientSession
) -> None:
    url = f"{fake.base_url}/api/v1/accounts/verify_credentials"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        status, body, _ = await get_json(http, url, headers=headers)
        assert (status, body) == (401, {"error": "The access token is invalid"})
    status, me, resp = await get_json(http, url, headers=AUTH)
    assert status == 200
    assert (me["id"], me["username"], me["acct"], me["bot"]) == (
        fake.account_id,
        "acmecare",
        "acmecare",
        False,
    )
    assert me["url"] == f"{fake.base_url}/@acmecare"
    assert resp.headers["X-RateLimit-Limit"] == "300"
    assert resp.headers["X-RateLimit-Remaining"] == "297"  # the two refusals counted too
    reset = datetime.fromisoformat(resp.headers["X-RateLimit-Reset"])
    assert reset.tzinfo is not None
    assert 0 < reset.timestamp() - T0 <= 300


async def test_instance_announces_limits_and_streaming_url(
    make_fake: MakeFake, http: aiohttp.ClientSession
) -> None:
    fake = await make_fake(max_characters=280)
    status, instance, _ = await get_json(http, f"{fake.base_url}/api/v2/instance")  # public
    assert status == 200
    assert instance["configuration"]["statuses"]["max_characters"] == 280
    assert instance["configuration"]["statuses"]["characters_reserved_per_url"] == 23
    assert instance["configuration"]["urls"]["streaming"] == fake.base_url
    fake.streaming_url = "wss://streaming.example"
    _, instance, _ = await get_json(http, f"{fake.base_url}/api/v2/instance")
    assert instance["configuration"]["urls"]["streaming"] == "wss://streaming.example"


async def test_mentions_have_mastodon_shapes(
    fake: FakeMastodon, http: aiohttp.ClientSession
) -> None:
    first = fake.post_mention(
        "jenny", "my order is late & <broken>\n\nsee https://shop.example/o/1"
    )
    second = fake.post_mention(
        "relay@bots.example", "@acmecare ping", visibility="direct", in_reply_to=first, bot=True
    )
    assert int(second) > int(first)
    url = f"{fake.base_url}/api/v1/notifications?types[]=mention"
    status, notes, _ = await get_json(http, url, headers=AUTH)
    assert status == 200
    assert [n["status"]["id"] for n in notes] == [second, first]  # newest first
    assert int(notes[0]["id"]) > int(notes[1]["id"])
    note = notes[1]
    assert note["type"] == "mention"
    assert note["account"] == note["status"]["account"]
    status_json = note["status"]
    assert status_json["visibility"] == "public"
    assert status_json["in_reply_to_id"] is None
    assert status_json["account"]["acct"] == "jenny"
    assert status_json["url"] == f"{fake.base_url}/@jenny/{first}"
    assert status_json["mentions"] == [
        {
            "id": fake.account_id,
            "username": "acmecare",
            "url": f"{fake.base_url}/@acmecare",
            "acct": "acmecare",
        }
    ]
    content = status_json["content"]
    assert content.startswith(
        '<p><span class="h-card" translate="no">'
        f'<a href="{fake.base_url}/@acmecare" class="u-url mention">@<span>acmecare</span></a>'
        "</span> my order is late &amp; &lt;broken&gt;</p><p>see "
    )
    assert '<span class="invisible">https://</span>' in content
    assert 'href="https://shop.example/o/1"' in content
    reply = notes[0]["status"]
    assert (reply["visibility"], reply["in_reply_to_id"]) == ("direct", first)
    assert reply["in_reply_to_account_id"] == status_json["account"]["id"]
    assert (reply["account"]["acct"], reply["account"]["bot"]) == ("relay@bots.example", True)
    assert reply["account"]["url"] == "https://bots.example/@relay"
    assert reply["content"].count("@<span>acmecare</span>") == 1  # not prepended twice


async def test_notifications_paginate_like_mastodon(
    fake: FakeMastodon, http: aiohttp.ClientSession
) -> None:
    ids = [fake.post_mention("jenny", f"mention {i}") for i in range(5)]
    url = f"{fake.base_url}/api/v1/notifications?types[]=mention&limit=2"
    _, page, resp = await get_json(http, url, headers=AUTH)
    assert [n["status"]["id"] for n in page] == [ids[4], ids[3]]
    next_url, prev_url = resp.links["next"]["url"], resp.links["prev"]["url"]
    assert isinstance(next_url, URL)
    assert isinstance(prev_url, URL)
    assert next_url.query["max_id"] == page[-1]["id"]
    assert next_url.query.getall("types[]") == ["mention"]
    assert prev_url.query["min_id"] == page[0]["id"]
    _, older, _ = await get_json(http, str(next_url), headers=AUTH)
    assert [n["status"]["id"] for n in older] == [ids[2], ids[1]]

    _, everything, _ = await get_json(http, f"{url[:-1]}80", headers=AUTH)
    since = everything[2]["id"]  # the notification of ids[2]
    _, newer, resp = await get_json(http, f"{url}&since_id={since}", headers=AUTH)
    assert [n["status"]["id"] for n in newer] == [ids[4], ids[3]]  # since_id is exclusive
    _, after, _ = await get_json(http, f"{url}&min_id={everything[4]['id']}", headers=AUTH)
    assert [n["status"]["id"] for n in after] == [ids[2], ids[1]]  # just after min_id
    _, empty, resp = await get_json(http, f"{url}&since_id={everything[0]['id']}", headers=AUTH)
    assert empty == []
    assert "Link" not in resp.headers
    status, body, _ = await get_json(http, f"{url}&since_id=abc", headers=AUTH)
    assert status == 400
    assert "error" in body


async def read_until(resp: aiohttp.ClientResponse, marker: bytes, seen: bytearray) -> None:
    while marker not in seen:
        chunk = await asyncio.wait_for(resp.content.readany(), timeout=2)
        if not chunk:
            raise AssertionError(f"stream ended before {marker!r}; got {bytes(seen)!r}")
        seen += chunk


async def test_stream_sends_notifications_and_heartbeats(
    make_fake: MakeFake, http: aiohttp.ClientSession
) -> None:
    fake = await make_fake(heartbeat=0.05)
    url = f"{fake.base_url}/api/v1/streaming/user/notification"
    async with http.get(url) as resp:
        assert resp.status == 401
    async with http.get(url, headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "X-RateLimit-Limit" not in resp.headers  # the streaming server is not Rails
        seen = bytearray()
        await read_until(resp, b":thump\n", seen)
        status_id = fake.post_mention("jenny", "hello")
        await read_until(resp, b"\n\n", seen)
        event = bytes(seen).split(b"event: notification\ndata: ", 1)[1].split(b"\n\n")[0]
        notification = json.loads(event)
        assert notification["type"] == "mention"
        assert notification["status"]["id"] == status_id
    assert fake.stream_connects == 1
    async with http.get(f"{url}?access_token={SANDBOX_TOKEN}") as resp:
        assert resp.status == 200  # the streaming API also takes the token in the query
    assert fake.stream_connects == 2


async def test_drop_streams_cuts_an_event_in_half(
    fake: FakeMastodon, http: aiohttp.ClientSession
) -> None:
    url = f"{fake.base_url}/api/v1/streaming/user/notification"
    async with http.get(url, headers=AUTH) as resp:
        seen = bytearray()
        await read_until(resp, b":)\n", seen)
        await asyncio.sleep(0.05)
        assert fake.open_streams == 1
        fake.post_mention("jenny", "this one is cut")
        assert fake.drop_streams() == 1
        fake.post_mention("jenny", "this one goes nowhere")
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_until(resp, b"never comes", seen)
    assert b"event: notification\ndata: {" in seen
    assert not seen.endswith(b"\n\n")
    assert b"goes nowhere" not in seen
    assert fake.open_streams == 0


async def test_post_status_json_and_form(fake: FakeMastodon, http: aiohttp.ClientSession) -> None:
    mention = fake.post_mention("jenny", "help", visibility="private")
    status, created = await post_status(
        http, fake, status="@jenny on it", in_reply_to_id=mention, visibility="private"
    )
    assert status == 200
    assert (created["in_reply_to_id"], created["visibility"]) == (mention, "private")
    assert created["account"]["id"] == fake.account_id
    assert created["mentions"][0]["acct"] == "jenny"
    form = {"status": "hello world", "visibility": "unlisted"}
    async with http.post(f"{fake.base_url}/api/v1/statuses", data=form, headers=AUTH) as resp:
        assert resp.status == 200
        plain = await resp.json()
    assert (plain["in_reply_to_id"], plain["visibility"]) == (None, "unlisted")
    assert [p["status"] for p in fake.posts] == ["@jenny on it", "hello world"]
    assert fake.posts[0]["in_reply_to_id"] == mention
    assert fake.posts[1]["visibility"] == "unlisted"


async def test_idempotency_key_returns_the_same_status_for_an_hour(
    fake: FakeMastodon, http: aiohttp.ClientSession, clock: Clock
) -> None:
    mention = fake.post_mention("jenny", "help")
    body = {"status": "@jenny thanks", "in_reply_to_id": mention}
    _, first = await post_status(http, fake, key="ack-1", **body)
    _, again = await post_status(http, fake, key="ack-1", **body)
    assert again["id"] == first["id"]
    assert len(fake.posts) == 1
    assert fake.posts[0]["idempotency_key"] == "ack-1"
    _, other = await post_status(http, fake, key="ack-2", **body)
    assert other["id"] != first["id"]
    clock.advance(3601)
    _, later = await post_status(http, fake, key="ack-1", **body)
    assert later["id"] not in {first["id"], other["id"]}  # Mastodon forgets keys after an hour
    assert len(fake.posts) == 3


async def test_status_validation(fake: FakeMastodon, http: aiohttp.ClientSession) -> None:
    status, body = await post_status(http, fake, status="x" * 501)
    assert (status, body) == (
        422,
        {"error": "Validation failed: Text character limit of 500 exceeded"},
    )
    link = "https://example.com/" + "a" * 600
    status, _ = await post_status(http, fake, status=f"{'x' * 470} {link}")
    assert status == 200  # a URL counts 23, whatever its length
    assert status_length("@bob@far.example.org hi") == len("@bob hi")
    status, body = await post_status(http, fake, status="hi", in_reply_to_id="999")
    assert (status, body) == (404, {"error": "Record not found"})
    status, body = await post_status(http, fake, status="  ")
    assert (status, body) == (422, {"error": "Validation failed: Text can't be blank"})
    status, _ = await post_status(http, fake, status="hi", visibility="everyone")
    assert status == 422
    assert len(fake.posts) == 1


async def test_rate_limit_is_enforced_per_window(
    make_fake: MakeFake, http: aiohttp.ClientSession, clock: Clock
) -> None:
    fake = await make_fake(enforce_limits=True, rate_limit=2)
    url = f"{fake.base_url}/api/v1/accounts/verify_credentials"
    remaining = []
    for _ in range(2):
        status, _, resp = await get_json(http, url, headers=AUTH)
        assert status == 200
        remaining.append(resp.headers["X-RateLimit-Remaining"])
    assert remaining == ["1", "0"]
    status, body, resp = await get_json(http, url, headers=AUTH)
    assert (status, body) == (429, {"error": "Too many requests"})
    window_end = (T0 // 300 + 1) * 300
    assert datetime.fromisoformat(resp.headers["X-RateLimit-Reset"]) == datetime.fromtimestamp(
        window_end, UTC
    )
    assert resp.headers["X-RateLimit-Remaining"] == "0"
    clock.advance(300)
    status, _, _ = await get_json(http, url, headers=AUTH)
    assert status == 200


async def test_faults(fake: FakeMastodon, http: aiohttp.ClientSession, clock: Clock) -> None:
    url = f"{fake.base_url}/api/v1/notifications"
    fake.fail_next(
        "notifications",
        Fault(503),
        Fault(502, body="<html>bad gateway</html>"),
        Fault(429, reset_in=30),
    )
    status, body, _ = await get_json(http, url, headers=AUTH)
    assert status == 503
    assert "error" in body
    async with http.get(url, headers=AUTH) as resp:
        assert (resp.status, resp.content_type) == (502, "text/plain")
    status, _, resp = await get_json(http, url, headers=AUTH)
    assert status == 429
    assert datetime.fromisoformat(resp.headers["X-RateLimit-Reset"]).timestamp() == T0 + 30
    status, _, _ = await get_json(http, url, headers=AUTH)
    assert status == 200
    fake.fail_next("stream", Fault(500))
    async with http.get(f"{fake.base_url}/api/v1/streaming/user/notification", headers=AUTH) as r:
        assert r.status == 500
    assert fake.stream_connects == 0
    with pytest.raises(ValueError, match="unknown route"):
        fake.fail_next("timeline", Fault())
    assert [r.route for r in fake.requests][-1] == "stream"
    assert [r.status for r in fake.requests][:4] == [503, 502, 429, 200]
    assert fake.requests[0].query == {}


async def test_late_fault_creates_the_status_but_loses_the_answer(
    fake: FakeMastodon, http: aiohttp.ClientSession
) -> None:
    fake.fail_next("statuses", Fault(200, delay=5.0, late=True))
    with pytest.raises(TimeoutError):
        async with http.post(
            f"{fake.base_url}/api/v1/statuses",
            json={"status": "hi"},
            headers={**AUTH, "Idempotency-Key": "k"},
            timeout=aiohttp.ClientTimeout(total=1.0),  # margin for a loaded machine
        ):
            pass
    await eventually(lambda: len(fake.posts) == 1)  # created all the same
    _, again = await post_status(http, fake, key="k", status="hi")
    assert again["id"] == fake.posts[0]["id"]
    assert len(fake.posts) == 1


async def test_control_api(fake: FakeMastodon, http: aiohttp.ClientSession) -> None:
    base = f"{fake.base_url}/_sandbox"
    async with http.post(f"{base}/mentions", json={"author": "jenny", "text": "hi"}) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert fake.status(created["id"])["account"]["acct"] == "jenny"
    async with http.post(f"{base}/mentions", json={"author": "no such!", "text": "hi"}) as resp:
        assert resp.status == 400
    async with http.post(f"{base}/mentions", json={"author": "a", "txt": "hi"}) as resp:
        assert resp.status == 400
    await post_status(http, fake, status="@jenny hello", in_reply_to_id=created["id"])
    async with http.get(f"{base}/posts") as resp:
        assert [p["status"] for p in await resp.json()] == ["@jenny hello"]
    async with http.post(f"{base}/drop_streams") as resp:
        assert await resp.json() == {"dropped": 0}
    async with http.get(f"{base}/requests") as resp:
        assert [r["route"] for r in await resp.json()] == ["statuses"]


def test_post_mention_rejects_bad_input() -> None:
    fake = FakeMastodon()
    with pytest.raises(ValueError, match="visibility"):
        fake.post_mention("jenny", "hi", visibility="secret")
    with pytest.raises(ValueError, match="unknown status"):
        fake.post_mention("jenny", "hi", in_reply_to="42")
    with pytest.raises(ValueError, match="own account"):
        fake.post_mention("acmecare", "hi")
    with pytest.raises(ValueError, match="not a Mastodon account"):
        fake.post_mention("bad name", "hi")
    with pytest.raises(RuntimeError):
        _ = fake.base_url
