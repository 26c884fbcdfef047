"""The X fake, driven by the real tweepy AsyncClient, and the traffic generator."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import tweepy
from tweepy.asynchronous import AsyncClient, AsyncPaginator
from yarl import URL

from bot.domain import Category
from bot.sandbox.traffic import (
    DEFAULT_BOT_AUTHORS,
    SampleMention,
    TrafficGenerator,
    run_traffic,
)
from bot.sandbox.x_fake import FakeX, Fault, weighted_length

T0 = 1_760_000_000.25  # a fractional start, so "rounded up" is observable


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def to_fake(base: URL) -> aiohttp.ClientMiddlewareType:
    async def middleware(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        if req.url.host == "api.twitter.com":
            req.url = req.url.with_scheme(base.scheme).with_host(base.host).with_port(base.port)
        return await handler(req)

    return middleware


MakeFake = Callable[..., Awaitable[FakeX]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_fake(clock: Clock) -> AsyncIterator[MakeFake]:
    started: list[FakeX] = []

    async def make(**kwargs: Any) -> FakeX:
        fake = FakeX(clock=clock, **kwargs)
        await fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.stop()


@pytest.fixture
async def fake(make_fake: MakeFake) -> FakeX:
    return await make_fake()


@pytest.fixture
async def session(fake: FakeX) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(middlewares=(to_fake(URL(fake.base_url)),)) as session:
        yield session


def make_client(session: aiohttp.ClientSession) -> AsyncClient:
    client = AsyncClient(
        bearer_token="app-bearer",
        consumer_key="ck",
        consumer_secret="cs",
        access_token="1000-at",
        access_token_secret="ats",
        wait_on_rate_limit=False,
    )
    client.session = session
    return client


@pytest.fixture
def client(session: aiohttp.ClientSession) -> AsyncClient:
    return make_client(session)


async def all_mentions(client: AsyncClient, fake: FakeX, **params: object) -> list[int]:
    paginator = AsyncPaginator(client.get_users_mentions, fake.account_id, **params)
    return [tweet.id async for tweet in paginator.flatten()]


# -- reading ---------------------------------------------------------------------------------


async def test_get_me_returns_the_account(fake: FakeX, client: AsyncClient) -> None:
    response = await client.get_me()
    assert (response.data.id, response.data.username) == (1000, "acme_care")
    assert fake.requests[-1].route == "me"
    assert fake.requests[-1].status == 200


async def test_mentions_since_id_paginates_newest_first(fake: FakeX, client: AsyncClient) -> None:
    ids = [fake.inject_mention(author=f"user{i}", text=f"help {i}") for i in range(12)]
    got = await all_mentions(client, fake, since_id=ids[2], max_results=5)
    assert got == [int(i) for i in reversed(ids[3:])]  # exclusive since_id, newest first
    pages = [r for r in fake.requests if r.route == "mentions"]
    assert len(pages) == 2
    assert "pagination_token" not in pages[0].query
    assert pages[1].query["pagination_token"]
    assert pages[1].query["since_id"] == ids[2]


async def test_empty_mentions_answer_has_no_data(fake: FakeX, client: AsyncClient) -> None:
    response = await client.get_users_mentions(fake.account_id)
    assert response.data is None
    assert response.meta == {"result_count": 0}


async def test_mentions_meta_and_until_id(fake: FakeX, client: AsyncClient) -> None:
    ids = [fake.inject_mention(author="ann", text=f"t{i}") for i in range(7)]
    response = await client.get_users_mentions(
        fake.account_id, since_id=ids[0], until_id=ids[6], max_results=5
    )
    assert [t.id for t in response.data] == [int(i) for i in reversed(ids[1:6])]
    assert response.meta["newest_id"] == ids[5]
    assert response.meta["oldest_id"] == ids[1]
    assert "next_token" not in response.meta


async def test_injected_mention_is_prefixed_only_when_needed(
    fake: FakeX, client: AsyncClient
) -> None:
    plain = fake.inject_mention(author="ann", text="my order is late")
    tagged = fake.inject_mention(author="bob", text="hey @ACME_care where is my refund?")
    lookalike = fake.inject_mention(author="cat", text="cc @acme_care2 nope")
    texts = {str(t.id): t.text for t in (await client.get_users_mentions(1000)).data}
    assert texts[plain] == "@acme_care my order is late"
    assert texts[tagged] == "hey @ACME_care where is my refund?"
    assert texts[lookalike] == "@acme_care cc @acme_care2 nope"


async def test_expansions_and_tweet_fields(fake: FakeX, client: AsyncClient, clock: Clock) -> None:
    root = fake.inject_mention(author="ann_k", text="my router blinks red")
    clock.advance(5)
    ack = fake.post_as_account("Sorry to hear that, we are on it", in_reply_to=root)
    clock.advance(5)
    follow_up = fake.inject_mention(author="ann_k", text="still red", in_reply_to=ack)
    fake.inject_mention(author="bob", text="hi")
    response = await client.get_users_mentions(
        fake.account_id,
        expansions=["author_id", "referenced_tweets.id"],
        tweet_fields=[
            "author_id",
            "created_at",
            "conversation_id",
            "in_reply_to_user_id",
            "referenced_tweets",
        ],
        user_fields=["created_at"],
    )
    by_id = {str(t.id): t for t in response.data}
    assert ack not in by_id  # our reply does not mention us
    reply = by_id[follow_up]
    assert reply.text == "still red"  # a reply to our post is a mention without the @
    assert reply.conversation_id == int(root)
    assert reply.in_reply_to_user_id == 1000
    assert [(r.type, str(r.id)) for r in reply.referenced_tweets] == [("replied_to", ack)]
    assert reply.created_at == datetime.fromtimestamp(math.floor(T0) + 10, UTC)
    assert by_id[root].conversation_id == int(root)
    assert by_id[root].in_reply_to_user_id is None
    users = {u.username: u for u in response.includes["users"]}
    assert set(users) == {"ann_k", "bob"}
    assert str(users["ann_k"].id) == str(reply.author_id)
    assert [str(t.id) for t in response.includes["tweets"]] == [ack]


async def test_own_post_mentioning_us_is_in_mentions(fake: FakeX, client: AsyncClient) -> None:
    own = fake.post_as_account("Thanks for following @acme_care!")
    response = await client.get_users_mentions(1000, tweet_fields=["author_id"])
    assert [(str(t.id), t.author_id) for t in response.data] == [(own, 1000)]


async def test_overlap_pages_repeat_the_boundary_tweet(fake: FakeX, client: AsyncClient) -> None:
    ids = [int(fake.inject_mention(author="ann", text=f"m{i}")) for i in range(9)]
    fake.overlap_pages = True
    pages = [
        [t.id for t in response.data]
        async for response in AsyncPaginator(client.get_users_mentions, 1000, max_results=5)
    ]
    assert pages == [ids[8:3:-1], ids[4::-1]]
    assert pages[1][0] == pages[0][-1]


async def test_start_and_end_time_filter(fake: FakeX, client: AsyncClient) -> None:
    base = datetime.fromtimestamp(math.floor(T0), UTC)
    ids = [
        fake.inject_mention(author="ann", text=f"m{i}", created_at=base + timedelta(minutes=i))
        for i in range(4)
    ]
    response = await client.get_users_mentions(1000, start_time=base + timedelta(minutes=1))
    assert [str(t.id) for t in response.data] == ids[:0:-1]  # start_time is inclusive
    response = await client.get_users_mentions(
        1000, start_time=base + timedelta(minutes=1), end_time=base + timedelta(minutes=3)
    )
    assert [str(t.id) for t in response.data] == [ids[2], ids[1]]  # end_time is exclusive
    assert fake.requests[-1].query["start_time"].endswith("Z")


async def test_since_id_takes_precedence_over_start_time(fake: FakeX, client: AsyncClient) -> None:
    old = datetime.fromtimestamp(T0 - 3600, UTC)
    ids = [fake.inject_mention(author="ann", text=f"m{i}", created_at=old) for i in range(3)]
    response = await client.get_users_mentions(
        1000, since_id=ids[0], start_time=datetime.fromtimestamp(T0, UTC)
    )
    assert [str(t.id) for t in response.data] == [ids[2], ids[1]]


async def test_user_tweets_lists_our_replies(fake: FakeX, client: AsyncClient) -> None:
    mention = fake.inject_mention(author="ann", text="help")
    fake.post_as_account("an older post")
    await client.create_tweet(text="We're on it, ticket #7", in_reply_to_tweet_id=mention)
    response = await client.get_users_tweets(
        1000, tweet_fields=["referenced_tweets"], exclude=["retweets"]
    )
    assert [t.text for t in response.data] == ["We're on it, ticket #7", "an older post"]
    assert response.data[0].referenced_tweets[0].id == int(mention)
    replies_only = await client.get_users_tweets(1000, exclude="replies")
    assert [t.text for t in replies_only.data] == ["an older post"]


# -- validation errors -------------------------------------------------------------------------


@pytest.mark.parametrize("max_results", [4, 101])
async def test_max_results_out_of_range_is_bad_request(
    client: AsyncClient, max_results: int
) -> None:
    with pytest.raises(tweepy.BadRequest) as caught:
        await client.get_users_mentions(1000, max_results=max_results)
    assert caught.value.response.status == 400
    assert "max_results" in caught.value.api_messages[0]


async def test_unknown_field_value_is_bad_request(client: AsyncClient) -> None:
    with pytest.raises(tweepy.BadRequest) as caught:
        await client.get_users_mentions(1000, tweet_fields=["created_at", "create_at"])
    assert "tweet.fields" in caught.value.api_messages[0]
    assert "[create_at]" in caught.value.api_messages[0]


async def test_mentions_of_another_user_is_not_found(client: AsyncClient) -> None:
    with pytest.raises(tweepy.NotFound):
        await client.get_users_mentions(1001)


async def test_unknown_query_parameter_is_bad_request(
    fake: FakeX, session: aiohttp.ClientSession
) -> None:
    url = f"{fake.base_url}/2/users/1000/mentions"
    headers = {"Authorization": "Bearer app-bearer"}
    async with session.get(url, params={"sinceid": "1"}, headers=headers) as response:
        body = await response.json()
    assert response.status == 400
    assert body["errors"][0]["parameters"] == {"sinceid": ["1"]}
    assert response.content_type == "application/problem+json"


async def test_missing_authorization_is_401(fake: FakeX, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{fake.base_url}/2/users/1000/mentions") as response:
        body = await response.json()
    assert response.status == 401
    assert body["title"] == "Unauthorized"
    assert "x-rate-limit-limit" not in response.headers
    assert fake.requests[-1].status == 401


# -- posting ---------------------------------------------------------------------------------


async def test_create_tweet_in_reply_is_recorded(
    fake: FakeX, client: AsyncClient, clock: Clock
) -> None:
    mention = fake.inject_mention(author="ann", text="my card was charged twice")
    clock.advance(30)
    response = await client.create_tweet(
        text="Sorry Ann, ticket #12", in_reply_to_tweet_id=mention
    )
    new_id = response.data["id"]
    assert response.data["edit_history_tweet_ids"] == [new_id]
    assert fake.posts == [
        {
            "id": new_id,
            "text": "Sorry Ann, ticket #12",
            "in_reply_to_tweet_id": mention,
            "created_at": datetime.fromtimestamp(math.floor(T0) + 30, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.000Z"
            ),
            "at": T0 + 30,
            "auth": "oauth1",
        }
    ]
    assert fake.posts_in_reply_to(mention) == fake.posts
    assert fake.requests[-1].route == "create_tweet"
    assert fake.requests[-1].status == 201


async def test_create_tweet_with_user_bearer_is_recorded_as_bearer(
    fake: FakeX, client: AsyncClient
) -> None:
    await client.create_tweet(text="hello", user_auth=False)
    assert fake.posts[-1]["auth"] == "bearer"
    assert fake.posts[-1]["in_reply_to_tweet_id"] is None


async def test_duplicate_text_is_forbidden(fake: FakeX, client: AsyncClient) -> None:
    await client.create_tweet(text="We're looking into it")
    with pytest.raises(tweepy.Forbidden) as caught:
        await client.create_tweet(text="We're looking into it")
    assert caught.value.api_messages == [
        "You are not allowed to create a Tweet with duplicate content."
    ]
    assert len(fake.posts) == 1


async def test_weighted_length_limit(fake: FakeX, client: AsyncClient) -> None:
    await client.create_tweet(text="字" * 140)  # 140 x weight 2 = 280: fits
    with pytest.raises(tweepy.BadRequest) as caught:
        await client.create_tweet(text="字" * 141)
    assert "text" in caught.value.api_messages[0]
    await client.create_tweet(text="a" * 256 + " https://example.com/" + "x" * 300)  # 280
    with pytest.raises(tweepy.BadRequest):
        await client.create_tweet(text="a" * 281)
    assert len(fake.posts) == 2


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("", 0),
        ("hello", 5),
        ("café", 4),
        ("cafe\u0301", 4),  # NFC-normalised first
        ("\u201cquotes\u201d \u2013 dash\u2026", 17),  # quotes, en dash: 1; ellipsis: 2
        ("字", 2),
        ("😀", 2),
        ("see https://acme.example/very/long/path?q=1 now", 4 + 23 + 4),
        ("visit acme.com.", 6 + 23 + 1),  # bare domain; trailing dot is not part of it
        ("mail me@acme.com", 16),  # an e-mail address is not a link
        ("e.g. this", 9),
    ],
)
def test_weighted_length(text: str, weight: int) -> None:
    assert weighted_length(text) == weight


async def test_reply_to_unknown_tweet_is_bad_request(client: AsyncClient) -> None:
    with pytest.raises(tweepy.BadRequest) as caught:
        await client.create_tweet(text="hello", in_reply_to_tweet_id=42)
    assert "in_reply_to_tweet_id" in caught.value.api_messages[0]


async def test_empty_text_is_bad_request(client: AsyncClient) -> None:
    with pytest.raises(tweepy.BadRequest):
        await client.create_tweet(text="")


# -- rate limits and faults ------------------------------------------------------------------


async def test_rate_limit_headers_on_every_answer(
    fake: FakeX, session: aiohttp.ClientSession, clock: Clock
) -> None:
    url = f"{fake.base_url}/2/users/1000/mentions"
    remaining = []
    for _ in range(3):
        async with session.get(url, headers={"Authorization": "Bearer b"}) as response:
            assert response.headers["x-rate-limit-limit"] == "450"
            assert response.headers["x-rate-limit-reset"] == str(math.ceil(T0 + 900))
            remaining.append(response.headers["x-rate-limit-remaining"])
        clock.advance(1)
    assert remaining == ["449", "448", "447"]


async def test_429_fault_with_reset(fake: FakeX, client: AsyncClient) -> None:
    fake.fail_next("mentions", Fault(status=429, reset_in=30))
    with pytest.raises(tweepy.TooManyRequests) as caught:
        await client.get_users_mentions(1000)
    assert caught.value.reset_time == math.ceil(T0 + 30) == 1_760_000_031
    assert caught.value.api_messages == ["Too Many Requests"]
    assert (await client.get_users_mentions(1000)).meta == {"result_count": 0}  # consumed
    assert [r.status for r in fake.requests] == [429, 200]


async def test_429_fault_without_reset(fake: FakeX, client: AsyncClient) -> None:
    fake.fail_next("mentions", Fault(status=429))
    with pytest.raises(tweepy.TooManyRequests) as caught:
        await client.get_users_mentions(1000)
    assert caught.value.reset_time is None


async def test_503_text_body_is_content_type_error(fake: FakeX, client: AsyncClient) -> None:
    fake.fail_next("create_tweet", Fault(status=503, body="upstream connect error"))
    with pytest.raises(aiohttp.ContentTypeError):
        await client.create_tweet(text="hello")
    assert fake.posts == []


async def test_faults_are_consumed_in_order(fake: FakeX, client: AsyncClient) -> None:
    fake.fail_next("me", Fault(status=520), Fault(status=503))
    with pytest.raises(tweepy.TwitterServerError) as first:
        await client.get_me()
    with pytest.raises(tweepy.TwitterServerError) as second:
        await client.get_me()
    assert (first.value.response.status, second.value.response.status) == (520, 503)
    assert (await client.get_me()).data.username == "acme_care"


async def test_slow_answer_fault(fake: FakeX, client: AsyncClient) -> None:
    fake.inject_mention(author="ann", text="hi")
    fake.fail_next("mentions", Fault(status=200, delay=0.05))
    started = time.monotonic()
    response = await client.get_users_mentions(1000)
    assert time.monotonic() - started >= 0.05
    assert len(response.data) == 1


async def test_delay_fault_triggers_client_timeout(fake: FakeX) -> None:
    fake.fail_next("me", Fault(status=200, delay=3.0))
    timeout = aiohttp.ClientTimeout(total=0.5)  # margin for a loaded machine
    async with aiohttp.ClientSession(
        middlewares=(to_fake(URL(fake.base_url)),), timeout=timeout
    ) as session:
        client = make_client(session)
        with pytest.raises(TimeoutError):
            await client.get_me()
    for _ in range(400):  # the server notices the disconnect and cancels the handler
        if fake.requests and fake.requests[-1].status:
            break
        await asyncio.sleep(0.005)
    assert fake.requests[-1].status == 499


async def test_enforced_limits_refuse_over_budget(make_fake: MakeFake, clock: Clock) -> None:
    fake = await make_fake(enforce_limits=True, limits={"mentions": (3, 60.0)})
    async with aiohttp.ClientSession(middlewares=(to_fake(URL(fake.base_url)),)) as session:
        client = make_client(session)
        for _ in range(3):
            await client.get_users_mentions(1000)
            clock.advance(10)
        with pytest.raises(tweepy.TooManyRequests) as caught:
            await client.get_users_mentions(1000)
        assert caught.value.reset_time == math.ceil(T0 + 60)
        assert caught.value.response.headers["x-rate-limit-remaining"] == "0"
        await client.get_me()  # other routes have their own windows
        clock.advance(30)  # T0 + 60: a new window
        await client.get_users_mentions(1000)
    assert [r.status for r in fake.requests if r.route == "mentions"] == [200, 200, 200, 429, 200]


# -- control API -----------------------------------------------------------------------------


async def test_control_api(fake: FakeX, client: AsyncClient) -> None:
    base = fake.base_url
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/_sandbox/mentions", json={"author": "ann", "text": "hi"}
        ) as r:
            assert r.status == 201
            mention = (await r.json())["id"]
        reply = {"author": "ann", "text": "still there?", "in_reply_to": mention}
        async with http.post(f"{base}/_sandbox/mentions", json=reply) as r:
            assert r.status == 201
        faults = {"route": "mentions", "faults": [{"status": 429, "reset_in": 5}]}
        async with http.post(f"{base}/_sandbox/faults", json=faults) as r:
            assert (r.status, await r.json()) == (200, {"route": "mentions", "queued": 1})

        with pytest.raises(tweepy.TooManyRequests):
            await client.get_users_mentions(1000)
        got = await client.get_users_mentions(1000, tweet_fields=["conversation_id"])
        assert [t.conversation_id for t in got.data] == [int(mention)] * 2
        await client.create_tweet(text="Hi Ann!", in_reply_to_tweet_id=mention)

        async with http.get(f"{base}/_sandbox/posts") as r:
            posts = await r.json()
        assert [(p["text"], p["in_reply_to_tweet_id"]) for p in posts] == [("Hi Ann!", mention)]
        async with http.get(f"{base}/_sandbox/requests") as r:
            records = await r.json()
        assert [(x["route"], x["status"]) for x in records] == [
            ("mentions", 429),
            ("mentions", 200),
            ("create_tweet", 201),
        ]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("mentions", {"author": "not a handle!", "text": "x"}, "author"),
        ("mentions", {"author": "ann", "text": ""}, "text"),
        ("mentions", {"author": "ann", "text": "x", "in_reply_to": "99"}, "in_reply_to"),
        ("mentions", {"author": "ann", "text": "x", "colour": "red"}, "colour"),
        ("faults", {"route": "timeline", "faults": [{}]}, "route"),
        ("faults", {"route": "me", "faults": []}, "faults"),
        ("faults", {"route": "me", "faults": [{"status": "429"}]}, "faults[0].status"),
        ("faults", {"route": "me", "faults": [{}, {"status": 42}]}, "faults[1].status"),
        ("faults", {"route": "me", "faults": [{"delay": -1}]}, "faults[0].delay"),
        ("faults", {"route": "me", "faults": [{"wait": 1}]}, "faults[0].wait"),
        ("faults", [1, 2], "body"),
    ],
)
async def test_control_api_rejects_bad_input(
    fake: FakeX, path: str, body: object, field: str
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.base_url}/_sandbox/{path}", json=body) as response,
    ):
        assert response.status == 400
        message = (await response.json())["error"]
    assert message.startswith(f"{field}:")


def test_constructor_and_helpers_validate() -> None:
    fake = FakeX()
    with pytest.raises(ValueError, match="route"):
        fake.fail_next("timeline", Fault())
    with pytest.raises(ValueError, match="status"):
        Fault(status=42)
    with pytest.raises(ValueError, match="handle"):
        fake.add_user("promo_blaster_bot")  # 17 characters: too long for X
    with pytest.raises(ValueError, match="unknown tweet"):
        fake.inject_mention(author="ann", text="x", in_reply_to="123")
    with pytest.raises(ValueError, match="limits"):
        FakeX(limits={"timeline": (1, 1.0)})
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    assert fake.add_user("Ann") == fake.add_user("ann")
    assert fake.add_user("acme_care") == "1000"


# -- traffic ---------------------------------------------------------------------------------


def test_traffic_mix_and_shape() -> None:
    samples = TrafficGenerator(rng=random.Random(1)).samples(4000)
    share = Counter(s.intended for s in samples)
    for category, expected in [
        (Category.COMPLAINT, 0.35),
        (Category.QUESTION, 0.25),
        (Category.PRAISE, 0.20),
        (Category.OTHER, 0.20),
    ]:
        assert abs(share[category] / 4000 - expected) < 0.03
    bots = [s for s in samples if s.is_bot]
    assert 0.015 < len(bots) / 4000 < 0.045
    assert {s.author for s in bots} <= set(DEFAULT_BOT_AUTHORS)
    assert not {s.author for s in samples if not s.is_bot} & set(DEFAULT_BOT_AUTHORS)
    assert all(re.fullmatch(r"[A-Za-z0-9_]{1,15}", s.author) for s in samples)
    assert all(0 < weighted_length(s.text) <= 280 for s in samples)
    assert len({s.text for s in samples}) > 2000  # varied
    assert len({s.author for s in samples}) > 2000
    complaints = " ".join(s.text for s in samples if s.intended is Category.COMPLAINT)
    assert "again" in complaints  # sarcasm / repeats
    assert "charged twice?" in complaints  # questions that are complaints


def test_traffic_is_deterministic_per_seed() -> None:
    def draw(seed: int) -> list[SampleMention]:
        return TrafficGenerator(rng=random.Random(seed), brand="Globex").samples(200)

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    assert any("Globex" in s.text for s in draw(5))


async def test_run_traffic_injects_until_stopped(fake: FakeX, client: AsyncClient) -> None:
    stop = asyncio.Event()
    injected: list[tuple[str, SampleMention]] = []
    task = asyncio.create_task(
        run_traffic(
            fake,
            TrafficGenerator(rng=random.Random(3)),
            rate_per_minute=60_000,
            stop=stop,
            first_after=0.01,
            on_inject=lambda tweet_id, sample: injected.append((tweet_id, sample)),
        )
    )
    await asyncio.sleep(0.1)
    stop.set()
    count = await asyncio.wait_for(task, 1)
    assert count == len(injected) > 5
    got = await all_mentions(client, fake, max_results=100)
    assert sorted(got) == sorted(int(tweet_id) for tweet_id, _ in injected)
