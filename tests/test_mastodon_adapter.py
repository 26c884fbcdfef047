"""The Mastodon adapter against the fake instance, storing into a real Store on SQLite."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot.clock import SystemClock
from bot.config import MastodonConfig
from bot.domain import Mention, Platform
from bot.errors import AuthError, PermanentError, RateLimited, StartupError, TransientError
from bot.migrate import upgrade
from bot.models import mentions
from bot.platforms.mastodon import (
    SOURCE,
    TASK_NAME,
    MastodonAdapter,
    SSEParser,
    fit_status,
    html_to_text,
    status_length,
)
from bot.sandbox.mastodon_fake import SANDBOX_TOKEN, FakeMastodon, Fault
from bot.store import CursorUpdate, Store, make_engine
from bot.tasks import TaskSupervisor

AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
FAST = {"retry_base": timedelta(milliseconds=20), "retry_cap": timedelta(milliseconds=100)}


class RecordingSink:
    """Stands in for the pipeline: stores what it is given (mentions + cursor) and keeps it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[list[Mention]] = []
        self.cursors: list[CursorUpdate | None] = []

    async def submit(self, batch: Sequence[Mention], cursor: CursorUpdate | None = None) -> None:
        await self.store.record(batch, cursor)
        self.batches.append(list(batch))
        self.cursors.append(cursor)

    @property
    def mentions(self) -> list[Mention]:
        return [m for batch in self.batches for m in batch]

    def by_id(self, status_id: str) -> Mention:
        [found] = [m for m in self.mentions if m.external_id == status_id]
        return found


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    engine = make_engine(sqlite_url)
    await upgrade(engine)
    yield Store(engine, SystemClock())
    await engine.dispose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeMastodon]:
    fake = FakeMastodon()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


MakeAdapter = Callable[..., MastodonAdapter]


@pytest.fixture
def make_adapter(session: aiohttp.ClientSession, store: Store) -> MakeAdapter:
    def make(
        fake: FakeMastodon,
        *,
        token: str = SANDBOX_TOKEN,
        base_url: str | None = None,
        **settings: Any,
    ) -> MastodonAdapter:
        values = {"enabled": True, "request_timeout": timedelta(seconds=2), "page_size": 2}
        return MastodonAdapter(
            session=session,
            base_url=base_url or fake.base_url,
            token=SecretStr(token),
            settings=MastodonConfig.model_validate(values | settings),
            store=store,
            clock=SystemClock(),
            **FAST,
        )

    return make


class Running:
    def __init__(self, adapter: MastodonAdapter, sink: RecordingSink) -> None:
        self.adapter = adapter
        self.sink = sink
        self.supervisor = TaskSupervisor()

    async def start(self) -> None:
        await self.adapter.open()
        await self.adapter.start(self.sink, self.supervisor)
        await eventually(lambda: self.adapter.connected)

    async def stop(self) -> None:
        await self.adapter.stop()
        await self.supervisor.close()


@pytest.fixture
async def run(
    make_adapter: MakeAdapter, store: Store, fake: FakeMastodon
) -> AsyncIterator[Callable[[FakeMastodon], Awaitable[Running]]]:
    started: list[Running] = []

    async def start(fake: FakeMastodon) -> Running:
        running = Running(make_adapter(fake), RecordingSink(store))
        started.append(running)
        await running.start()
        return running

    yield start
    for running in started:
        await running.stop()


async def notification_ids(session: aiohttp.ClientSession, fake: FakeMastodon) -> list[str]:
    url = f"{fake.base_url}/api/v1/notifications?types[]=mention&limit=80"
    async with session.get(url, headers=AUTH) as resp:
        return [n["id"] for n in await resp.json()]


async def stored_ids(store: Store) -> list[str]:
    async with store.read() as conn:
        rows = await conn.execute(select(mentions.c.external_id).order_by(mentions.c.id))
        return list(rows.scalars())


# -- open ------------------------------------------------------------------------------------


async def test_open_learns_account_limit_and_streaming_url(
    make_adapter: MakeAdapter, store: Store
) -> None:
    fake = FakeMastodon(max_characters=280)
    await fake.start()
    try:
        fake.streaming_url = fake.base_url.replace("http://", "ws://")  # as Mastodon announces
        adapter = make_adapter(fake)
        assert adapter.own_account_ids == frozenset()
        await adapter.open()
        assert adapter.own_account_ids == frozenset({fake.account_id})
        assert (adapter.acct, adapter.max_characters) == ("acmecare", 280)
        running = Running(adapter, RecordingSink(store))
        await running.adapter.start(running.sink, running.supervisor)
        await eventually(lambda: adapter.connected)  # ws:// was mapped to http:// for SSE
        assert running.supervisor.running == [TASK_NAME]
        await running.stop()
    finally:
        await fake.stop()


async def test_bad_token_or_no_server_is_a_startup_error(
    make_adapter: MakeAdapter, fake: FakeMastodon
) -> None:
    with pytest.raises(StartupError, match="CAREBOT_MASTODON_ACCESS_TOKEN"):
        await make_adapter(fake, token="revoked").open()
    closed = FakeMastodon()
    await closed.start()
    url = closed.base_url
    await closed.stop()
    with pytest.raises(StartupError, match="cannot reach Mastodon"):
        await make_adapter(fake, base_url=url).open()


# -- intake ----------------------------------------------------------------------------------


async def test_first_start_answers_no_backlog_then_streams_mentions(
    run: Callable[[FakeMastodon], Awaitable[Running]],
    fake: FakeMastodon,
    session: aiohttp.ClientSession,
    store: Store,
) -> None:
    for i in range(3):
        fake.post_mention("old_customer", f"an old complaint {i}")
    backlog = await notification_ids(session, fake)
    running = await run(fake)
    assert (await store.get_cursor(SOURCE)) == CursorUpdate(SOURCE, backlog[0], None)
    assert running.sink.mentions == []

    status_id = fake.post_mention(
        "jenny",
        "my order is late & <damaged>\nreally\n\nsee https://shop.example/orders/1234567890/details",
    )
    await eventually(lambda: len(running.sink.mentions) == 1)
    mention = running.sink.by_id(status_id)
    assert mention.platform is Platform.MASTODON
    assert mention.text == (
        "@acmecare my order is late & <damaged>\nreally\n\n"
        "see https://shop.example/orders/1234567890/details"
    )
    assert (mention.author_handle, mention.author_is_bot) == ("jenny", False)
    assert mention.author_id != fake.account_id
    assert (mention.thread_id, mention.in_reply_to_id) == (status_id, None)
    assert mention.url == f"{fake.base_url}/@jenny/{status_id}"
    assert mention.created_at.tzinfo is not None
    newest = (await notification_ids(session, fake))[0]
    assert running.sink.cursors[-1] == CursorUpdate(SOURCE, newest)
    assert (await store.get_cursor(SOURCE)) == CursorUpdate(SOURCE, newest, None)
    assert await stored_ids(store) == [status_id]


async def test_remote_bot_reply_keeps_its_handle_thread_and_visibility(
    run: Callable[[FakeMastodon], Awaitable[Running]], fake: FakeMastodon
) -> None:
    running = await run(fake)
    first = fake.post_mention("jenny", "hello")
    reply = fake.post_mention(
        "relay@bots.example", "@acmecare ping", visibility="direct", in_reply_to=first, bot=True
    )
    await eventually(lambda: len(running.sink.mentions) == 2)
    mention = running.sink.by_id(reply)
    assert (mention.author_handle, mention.author_is_bot) == ("relay@bots.example", True)
    assert (mention.thread_id, mention.in_reply_to_id) == (first, first)
    assert running.adapter.reply_destination(mention) == {
        "in_reply_to_id": reply,
        "acct": "relay@bots.example",
        "visibility": "direct",
    }
    public = running.adapter.reply_destination(running.sink.by_id(first))
    assert public["visibility"] == "public"
    unseen = Mention(Platform.MASTODON, "1", "2", "someone", "hi", datetime.now(UTC))
    assert running.adapter.reply_destination(unseen)["visibility"] == "direct"  # never wider


async def test_a_dropped_stream_loses_nothing_and_doubles_nothing(
    run: Callable[[FakeMastodon], Awaitable[Running]],
    fake: FakeMastodon,
    session: aiohttp.ClientSession,
    store: Store,
) -> None:
    running = await run(fake)
    before = fake.stream_connects
    posted = [fake.post_mention("jenny", "first, over the stream")]
    await eventually(lambda: len(running.sink.mentions) == 1)

    posted.append(fake.post_mention("jenny", "second: its event is cut in half"))
    assert fake.drop_streams() == 1
    posted += [fake.post_mention(f"user{i}", f"posted while down {i}") for i in range(3)]
    await eventually(lambda: len(running.sink.mentions) == 5)
    await eventually(lambda: running.adapter.connected)
    posted.append(fake.post_mention("jenny", "after the reconnect"))
    await eventually(lambda: len(running.sink.mentions) == 6)

    assert fake.stream_connects == before + 1
    received = Counter(m.external_id for m in running.sink.mentions)
    assert received == Counter(posted)  # each exactly once
    assert await stored_ids(store) == posted  # one row per status, oldest first
    catch_ups = [r for r in fake.requests if r.route == "notifications" and "since_id" in r.query]
    assert len(catch_ups) >= 2  # 4 missed mentions at 2 per page: followed the Link header
    newest = (await notification_ids(session, fake))[0]
    assert (await store.get_cursor(SOURCE)) == CursorUpdate(SOURCE, newest, None)


async def test_reconnects_through_refusals_and_rate_limits(
    run: Callable[[FakeMastodon], Awaitable[Running]], fake: FakeMastodon, store: Store
) -> None:
    running = await run(fake)
    fake.fail_next("stream", Fault(503), Fault(502, body="bad gateway"))
    fake.fail_next("notifications", Fault(429, reset_in=0.3))
    fake.drop_streams()
    missed = fake.post_mention("jenny", "posted during the outage")
    await eventually(lambda: len(running.sink.mentions) == 1)
    assert await stored_ids(store) == [missed]
    refused = [(r.route, r.status) for r in fake.requests if r.status >= 400]
    assert refused == [
        ("stream", 503),
        ("stream", 502),
        ("stream", 499),  # abandoned: the catch-up that follows its opening was refused
        ("notifications", 429),
    ]
    [limited] = [r for r in fake.requests if r.status == 429]
    after = next(r for r in fake.requests if r.route == "notifications" and r.at > limited.at)
    assert after.at - limited.at >= 0.25  # waited for X-RateLimit-Reset


async def test_restart_catches_up_from_the_stored_cursor(
    run: Callable[[FakeMastodon], Awaitable[Running]], fake: FakeMastodon, store: Store
) -> None:
    first = await run(fake)
    seen = fake.post_mention("jenny", "before the restart")
    await eventually(lambda: len(first.sink.mentions) == 1)
    await first.stop()
    missed = [fake.post_mention("jenny", f"while stopped {i}") for i in range(3)]
    second = await run(fake)
    await eventually(lambda: len(second.sink.mentions) == 3)
    assert [m.external_id for m in second.sink.mentions] == missed  # oldest first
    assert second.sink.batches[0] == second.sink.mentions  # one batch, one transaction
    assert await stored_ids(store) == [seen, *missed]


async def test_stop_ends_the_stream_task_promptly(
    run: Callable[[FakeMastodon], Awaitable[Running]], fake: FakeMastodon
) -> None:
    running = await run(fake)
    assert running.supervisor.running == [TASK_NAME]
    began = time.monotonic()
    await running.adapter.stop()
    assert time.monotonic() - began < 0.5
    assert running.supervisor.running == []
    await running.adapter.stop()  # idempotent
    await running.adapter.close()
    await eventually(lambda: fake.open_streams == 0)


# -- replies ---------------------------------------------------------------------------------


async def test_send_replies_in_thread_with_the_same_visibility_once(
    run: Callable[[FakeMastodon], Awaitable[Running]], fake: FakeMastodon
) -> None:
    running = await run(fake)
    adapter = running.adapter
    dm = fake.post_mention("jenny@far.example", "my card was charged twice", visibility="direct")
    await eventually(lambda: len(running.sink.mentions) == 1)
    destination = adapter.reply_destination(running.sink.by_id(dm))

    sent = await adapter.send(destination, "Sorry! Ticket CB-7 is open.", "ack-7")
    assert sent == fake.posts[0]["id"]
    post = fake.posts[0]
    assert post["status"] == "@jenny@far.example Sorry! Ticket CB-7 is open."
    assert (post["in_reply_to_id"], post["visibility"]) == (dm, "direct")
    assert post["idempotency_key"] == "ack-7"

    again = await adapter.send(destination, "Sorry! Ticket CB-7 is open.", "ack-7")
    assert again == sent
    assert len(fake.posts) == 1  # the retry returned the same status
    assert await adapter.find_delivery(destination, "Sorry! Ticket CB-7 is open.") is None

    await adapter.send(destination, "@jenny@far.example already addressed", "ack-8")
    assert fake.posts[1]["status"] == "@jenny@far.example already addressed"


async def test_send_trims_to_the_instance_limit(
    make_adapter: MakeAdapter, session: aiohttp.ClientSession
) -> None:
    fake = FakeMastodon(max_characters=60)
    await fake.start()
    try:
        adapter = make_adapter(fake)
        await adapter.open()
        parent = fake.post_mention("jenny", "help")
        destination = {"in_reply_to_id": parent, "acct": "jenny", "visibility": "public"}
        link = "https://help.example/articles/" + "x" * 80
        text = f"Thanks! Read {link} and we will get back to you as soon as we possibly can."
        await adapter.send(destination, text, "ack-1")
        status = fake.posts[0]["status"]
        assert status.startswith(f"@jenny Thanks! Read {link} ")  # the URL counts 23, kept whole
        assert status.endswith("…")
        assert status_length(status) <= 60
    finally:
        await fake.stop()


async def test_send_translates_errors(make_adapter: MakeAdapter) -> None:
    t0 = 1_760_000_000.25
    fake = FakeMastodon(clock=lambda: t0)
    await fake.start()
    try:
        adapter = make_adapter(fake)
        await adapter.open()
        parent = fake.post_mention("jenny", "help")
        dest = {"in_reply_to_id": parent, "acct": "jenny", "visibility": "public"}

        fake.fail_next("statuses", Fault(422))
        with pytest.raises(PermanentError):
            await adapter.send(dest, "hi", "k1")
        with pytest.raises(PermanentError, match="Record not found"):
            await adapter.send({**dest, "in_reply_to_id": "12345"}, "hi", "k2")
        with pytest.raises(PermanentError):
            await adapter.send({"acct": "jenny"}, "hi", "k3")

        fake.fail_next("statuses", Fault(429, reset_in=120))
        with pytest.raises(RateLimited) as limited:
            await adapter.send(dest, "hi", "k4")
        assert limited.value.reset_at == datetime.fromtimestamp(t0 + 120, UTC)

        fake.fail_next("statuses", Fault(401))
        with pytest.raises(AuthError):
            await adapter.send(dest, "hi", "k5")
        fake.fail_next("statuses", Fault(503), Fault(502, body="<html>proxy</html>"))
        for _ in range(2):
            with pytest.raises(TransientError):
                await adapter.send(dest, "hi", "k6")
        fake.fail_next("statuses", Fault(200, delay=3.0))  # past request_timeout (2 s)
        slow = make_adapter(fake, request_timeout=timedelta(milliseconds=200))
        await slow.open()
        with pytest.raises(TransientError, match="Timeout"):
            await slow.send(dest, "hi", "k7")
        assert fake.posts == []
    finally:
        await fake.stop()
    with pytest.raises(TransientError, match="cannot reach"):
        await adapter.send(dest, "hi", "k8")


# -- parsing ---------------------------------------------------------------------------------


def test_sse_parser_handles_split_chunks_comments_and_cut_events() -> None:
    parser = SSEParser()
    wire = (
        b':)\n:thump\nevent: notification\r\ndata: {"a":\ndata: 1}\n\nevent: delete\ndata: 9\n\n'
    )
    events = [e for i in range(len(wire)) for e in parser.feed(wire[i : i + 1])]
    assert [(e.event, e.data) for e in events] == [
        ("notification", '{"a":\n1}'),
        ("delete", "9"),
    ]
    assert parser.feed(b'event: notification\ndata: {"id": "1') == []  # cut: never dispatched
    small = SSEParser(max_event_bytes=10)
    with pytest.raises(ValueError, match="larger than"):
        small.feed(b"data: " + b"x" * 20)


def test_html_to_text() -> None:
    content = (
        '<p><span class="h-card" translate="no"><a href="https://m.example/@acmecare" '
        'class="u-url mention">@<span>acmecare</span></a></span> it&#39;s &quot;late&quot; &amp; '
        'broken<br />line two</p><p>see <a href="https://x.example/abc"><span class="invisible">'
        'https://</span><span class="ellipsis">x.example/a</span><span class="invisible">bc'
        "</span></a>  now</p>"
    )
    assert html_to_text(content) == (
        '@acmecare it\'s "late" & broken\nline two\n\nsee https://x.example/abc now'
    )
    assert html_to_text("") == ""


def test_fit_status_counts_like_mastodon() -> None:
    assert fit_status("@a ", "short", 500) == "@a short"
    assert status_length("@bob@far.example.org hi https://a.example/" + "x" * 50) == 4 + 4 + 23
    cut = fit_status("@jenny ", "word " * 40, 30)
    assert cut.startswith("@jenny word")
    assert cut.endswith("word…")
    assert status_length(cut) <= 30
    with pytest.raises(PermanentError):
        fit_status("@" + "x" * 40 + " ", "hi", 10)
