"""X (Twitter) through tweepy's AsyncClient on our shared aiohttp session.

Mentions are polled (``GET /2/users/:id/mentions``) with ``since_id`` kept in the cursors table
and advanced only in the transaction that stores the mentions. tweepy hard-codes
``https://api.twitter.com``; :func:`rebase_middleware` sends its requests to the configured API
base URL instead (``https://api.x.com``, a proxy, or the sandbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, TypeVar

import aiohttp
import tweepy
from tweepy.asynchronous import AsyncClient
from yarl import URL

from bot.backoff import Backoff
from bot.clock import Clock
from bot.config import XCredentials
from bot.domain import Mention, Platform
from bot.errors import (
    AdapterError,
    AuthError,
    PermanentError,
    RateLimited,
    StartupError,
    TransientError,
)
from bot.faults import FaultLog
from bot.platforms.base import MentionSink, PlatformAdapter
from bot.store import CursorUpdate, Store
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

TWEEPY_HOST: Final = "api.twitter.com"
SOURCE: Final = "x:mentions"
MAX_PAGES: Final = 10_000  # a guard against a server that never stops paging, not a quota
FIND_PAGES: Final = 100  # 10,000 of our own posts since the mention: past that, ask later
TWEET_FIELDS: Final = ["author_id", "created_at", "conversation_id", "referenced_tweets"]
T = TypeVar("T")

Middleware = Callable[
    [aiohttp.ClientRequest, Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]]],
    Awaitable[aiohttp.ClientResponse],
]


def rebase_middleware(base_url: str) -> Middleware:
    """An aiohttp client middleware that points tweepy's requests at ``base_url``.

    Only requests for tweepy's hard-coded host are touched; the session is shared with other
    platforms.
    """
    target = URL(base_url)

    async def middleware(
        req: aiohttp.ClientRequest,
        handler: Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]],
    ) -> aiohttp.ClientResponse:
        if req.url.host == TWEEPY_HOST:
            req.url = (
                req.url.with_scheme(target.scheme)
                .with_host(target.host or "")
                .with_port(target.port)
            )
        return await handler(req)

    return middleware


@dataclass(frozen=True, slots=True)
class XSettings:
    """What the adapter needs from config."""

    poll_interval: timedelta
    page_size: int
    backfill: timedelta
    request_timeout: timedelta


def translate(exc: BaseException) -> AdapterError:  # noqa: PLR0911 — one return per error kind
    """Turn tweepy / aiohttp failures into our hierarchy."""
    if isinstance(exc, tweepy.TooManyRequests):
        reset = exc.reset_time
        reset_at = datetime.fromtimestamp(reset, UTC) if reset is not None else None
        return RateLimited("X answered 429 Too Many Requests", reset_at)
    if isinstance(exc, tweepy.Unauthorized):
        return AuthError(f"X refused our credentials: {_detail(exc)}")
    if isinstance(exc, tweepy.Forbidden):
        detail = _detail(exc)
        return PermanentError(f"X refused: {detail}", duplicate="duplicate" in detail.lower())
    if isinstance(exc, tweepy.BadRequest | tweepy.NotFound):
        return PermanentError(f"X rejected the request: {_detail(exc)}")
    if isinstance(exc, tweepy.HTTPException):
        return TransientError(f"X answered {exc.response.status}: {_detail(exc)}")
    if isinstance(exc, aiohttp.ContentTypeError):
        return TransientError(f"X answered {exc.status} with a body that is not JSON")
    if isinstance(exc, TimeoutError):
        return TransientError("X did not answer in time")
    if isinstance(exc, aiohttp.ClientError):
        return TransientError(f"cannot reach X: {type(exc).__name__}: {exc}")
    raise exc


def _detail(exc: tweepy.HTTPException) -> str:
    return "; ".join(str(m) for m in exc.api_messages if m) or str(exc.response.status)


class XAdapter(PlatformAdapter):
    """Mentions of our X account in, replies in thread out."""

    platform: ClassVar[Platform] = Platform.X
    intake_lease = "x"
    send_lease = "outbox:x"

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        credentials: XCredentials,
        settings: XSettings,
        store: Store,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._client = AsyncClient(
            bearer_token=credentials.bearer_token.get_secret_value(),
            consumer_key=credentials.consumer_key.get_secret_value(),
            consumer_secret=credentials.consumer_secret.get_secret_value(),
            access_token=credentials.access_token.get_secret_value(),
            access_token_secret=credentials.access_token_secret.get_secret_value(),
            wait_on_rate_limit=False,  # we schedule around x-rate-limit-reset ourselves
        )
        self._client.session = session  # tweepy reuses a session it did not create
        self._user_id: str | None = None
        self.username: str | None = None
        self._stopping = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._faults = FaultLog(logger, "X mentions", clock)

    @property
    def own_account_ids(self) -> frozenset[str]:
        """Our account's id once ``open`` has run."""
        return frozenset({self._user_id}) if self._user_id else frozenset()

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._settings.request_timeout.total_seconds() + 1):
                return await make()
        except (tweepy.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
            raise translate(exc) from exc

    def intake_problem(self) -> str | None:
        """What is wrong with intake now (None: the last poll worked)."""
        return self._faults.problem

    async def open(self) -> None:
        """Learn our own account (``GET /2/users/me``); refuse to start on bad credentials."""
        try:
            resp = await self._call(lambda: self._client.get_me(user_auth=True))
        except AuthError as exc:
            raise StartupError(f"{exc}; check the CAREBOT_X_* variables") from exc
        except AdapterError as exc:
            raise StartupError(f"cannot reach X to verify credentials: {exc}") from exc
        self._user_id = str(resp.data.id)
        self.username = str(resp.data.username)
        logger.info("X: signed in as @%s (%s)", self.username, self._user_id)

    async def start(self, sink: MentionSink, supervisor: TaskSupervisor) -> None:
        """Start polling mentions."""
        self._stopping.clear()
        self._poller = supervisor.spawn(self._poll_loop(sink), name="x-poll")

    async def stop(self) -> None:
        """Stop polling; a poll in progress finishes storing what it fetched."""
        self._stopping.set()
        if self._poller is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._poller), timeout=5)
            except TimeoutError:
                self._poller.cancel()
            self._poller = None

    async def close(self) -> None:
        """Nothing to release: the session belongs to the app."""

    async def _sleep(self, delay: timedelta) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=max(delay.total_seconds(), 0))

    async def _poll_loop(self, sink: MentionSink) -> None:
        backoff = Backoff(timedelta(seconds=2), timedelta(minutes=5))
        while not self._stopping.is_set():
            try:
                await self.poll_once(sink)
            except RateLimited as exc:
                wait = (exc.reset_at - self._clock.now()) if exc.reset_at else backoff.failed()
                self._faults.failed(
                    f"rate limited until {exc.reset_at or 'later'}", wait.total_seconds()
                )
                await self._sleep(wait + timedelta(seconds=1))
                continue
            except (TransientError, PermanentError, AuthError) as exc:
                wait = backoff.failed()
                self._faults.failed(str(exc), wait.total_seconds())
                await self._sleep(wait)
                continue
            except Exception as exc:  # noqa: BLE001 — the database is away, say: logged, retried
                wait = backoff.failed()
                self._faults.failed(
                    f"{type(exc).__name__}: {exc}", wait.total_seconds(), unexpected=True
                )
                await self._sleep(wait)
                continue
            backoff.succeeded()
            self._faults.succeeded()
            await self._sleep(self._settings.poll_interval)

    async def poll_once(self, sink: MentionSink) -> int:
        """Fetch every mention newer than the cursor and hand them to ``sink``; return how many."""
        cursor = await self._store.get_cursor(SOURCE)
        if cursor is None:
            cursor = await self._first_cursor()
            if cursor.value is not None or self._settings.backfill <= timedelta(0):
                await self._store.put_cursor(cursor)
                return 0
        params: dict[str, Any] = {}
        if cursor.value is not None:
            params["since_id"] = cursor.value
        elif cursor.data and cursor.data.get("start_time"):
            params["start_time"] = cursor.data["start_time"]
        found, newest = await self._fetch(params)
        # called with nothing too: the pipeline uses it to finish anything left undecided
        await sink.submit(found, CursorUpdate(SOURCE, newest) if found else None)
        return len(found)

    async def _first_cursor(self) -> CursorUpdate:
        """First start: remember where "now" is, so the backlog is not answered."""
        now = self._clock.now()
        if self._settings.backfill > timedelta(0):
            start = now - self._settings.backfill
            return CursorUpdate(SOURCE, None, {"start_time": _rfc3339(start)})
        resp = await self._call(
            lambda: self._client.get_users_mentions(self._user_id, max_results=5)
        )
        newest = resp.meta.get("newest_id") if resp.meta else None
        if newest is None and resp.data:
            newest = str(resp.data[0].id)
        logger.info("X mentions: first start, not answering the backlog (newest id %s)", newest)
        return CursorUpdate(SOURCE, str(newest) if newest else None, {"start_time": _rfc3339(now)})

    async def _fetch(self, params: dict[str, Any]) -> tuple[list[Mention], str | None]:
        tweets: dict[str, Mention] = {}
        newest: str | None = None
        token: str | None = None
        for _ in range(MAX_PAGES):
            page_params = dict(params)
            if token:
                page_params["pagination_token"] = token
            resp = await self._call(
                lambda p=page_params: self._client.get_users_mentions(  # type: ignore[misc]
                    self._user_id,
                    max_results=self._settings.page_size,
                    expansions=["author_id"],
                    tweet_fields=TWEET_FIELDS,
                    user_fields=["username"],
                    **p,
                )
            )
            users = {str(u.id): u for u in (resp.includes or {}).get("users", [])}
            for tweet in resp.data or []:
                mention = self._to_mention(tweet, users)
                tweets.setdefault(mention.external_id, mention)
                if newest is None or int(mention.external_id) > int(newest):
                    newest = mention.external_id
            token = (resp.meta or {}).get("next_token")
            if not token:
                break
        else:
            logger.error(
                "X mentions: still paging after %d pages; storing what we have", MAX_PAGES
            )
        ordered = sorted(tweets.values(), key=lambda m: int(m.external_id))
        return ordered, newest

    def _to_mention(self, tweet: Any, users: dict[str, Any]) -> Mention:
        author_id = str(tweet.author_id)
        user = users.get(author_id)
        handle = str(user.username) if user is not None else author_id
        replied_to = next(
            (str(r.id) for r in (tweet.referenced_tweets or []) if r.type == "replied_to"), None
        )
        created = tweet.created_at or self._clock.now()
        return Mention(
            platform=Platform.X,
            external_id=str(tweet.id),
            author_id=author_id,
            author_handle=handle,
            text=str(tweet.text),
            created_at=created,
            thread_id=str(tweet.conversation_id) if tweet.conversation_id else None,
            in_reply_to_id=replied_to,
            url=f"https://x.com/{handle}/status/{tweet.id}",
        )

    def reply_destination(self, mention: Mention) -> dict[str, Any]:
        """Replies go in thread, under the mention itself."""
        return {"in_reply_to_tweet_id": mention.external_id}

    async def send(self, destination: dict[str, Any], text: str, idempotency_key: str) -> str:
        """Post a reply in thread (OAuth 1.0a user context); return the new post's id."""
        del idempotency_key  # X has no idempotency header; unique texts guard against doubles
        resp = await self._call(
            lambda: self._client.create_tweet(
                text=text, in_reply_to_tweet_id=destination["in_reply_to_tweet_id"], user_auth=True
            )
        )
        return str(resp.data["id"])

    async def find_delivery(self, destination: dict[str, Any], text: str) -> str | None:
        """Search our posts since the parent for this reply (a send whose outcome is unknown).

        X returns post texts HTML-escaped (``&amp;``), so they are unescaped before comparing.
        Every page newer than the parent is read: the reply, if it exists, is among them.
        """
        parent = str(destination["in_reply_to_tweet_id"])
        token: str | None = None
        for _ in range(FIND_PAGES):
            extra = {"pagination_token": token} if token else {}
            resp = await self._call(
                lambda e=extra: self._client.get_users_tweets(  # type: ignore[misc]
                    self._user_id,
                    since_id=parent,
                    max_results=100,
                    tweet_fields=["referenced_tweets"],
                    **e,
                )
            )
            for tweet in resp.data or []:
                refs = tweet.referenced_tweets or []
                if html.unescape(str(tweet.text)) == text and any(
                    r.type == "replied_to" and str(r.id) == parent for r in refs
                ):
                    return str(tweet.id)
            token = (resp.meta or {}).get("next_token")
            if not token:
                return None
        raise TransientError(f"our posts since {parent} span more than {FIND_PAGES} pages")


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
