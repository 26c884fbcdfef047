"""A fake X API v2 server (aiohttp) that the real tweepy ``AsyncClient`` talks to."""

from __future__ import annotations

import asyncio
import bisect
import json
import math
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from bot.sandbox.serve import serve
from bot.textlimits import X_MAX_WEIGHTED, X_URL_WEIGHT, x_weighted_length

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from aiohttp.typedefs import Handler

ROUTES: Final[tuple[str, ...]] = ("me", "mentions", "user_tweets", "create_tweet")
"""Route names used by :meth:`FakeX.fail_next`, ``limits`` and :class:`RequestRecord`."""

DEFAULT_LIMITS: Final[Mapping[str, tuple[int, float]]] = MappingProxyType(
    {
        "mentions": (450, 900.0),
        "user_tweets": (900, 900.0),
        "create_tweet": (100, 900.0),
        "me": (75, 900.0),
    }
)
"""Per-route fixed-window budgets as (requests, window seconds)."""

MAX_WEIGHTED_LENGTH: Final = X_MAX_WEIGHTED
"""The most a post may weigh (see :func:`weighted_length`)."""

URL_WEIGHT: Final = X_URL_WEIGHT
"""What any URL weighs, whatever its length (X shortens it to a t.co link)."""

FIRST_TWEET_ID: Final = 1_790_000_000_000_000_000
TWITTER_EPOCH_MS: Final = 1_288_834_974_657
"""Ids are snowflakes (time in the high bits), so a new fake never reuses an older run's ids."""
FIRST_USER_ID: Final = 1_500_000_000_000_000_000


def _words(*chunks: str) -> frozenset[str]:
    return frozenset(" ".join(chunks).split())


_HANDLE_RE: Final = re.compile(r"[A-Za-z0-9_]{1,15}")
_DIGITS_RE: Final = re.compile(r"[0-9]{1,19}")
_BASE36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"

_TWEET_FIELDS: Final = _words(
    "article attachments author_id card_uri community_id context_annotations",
    "conversation_id created_at display_text_range edit_controls edit_history_tweet_ids",
    "entities geo id in_reply_to_user_id lang media_metadata non_public_metrics",
    "note_tweet organic_metrics possibly_sensitive promoted_metrics public_metrics",
    "referenced_tweets reply_settings scopes source suggested_source_links",
    "suggested_source_links_with_counts text withheld",
)
_TWEET_EXPANSIONS: Final = _words(
    "article.cover_media article.media_entities attachments.media_keys",
    "attachments.media_source_tweet attachments.poll_ids author_id edit_history_tweet_ids",
    "entities.mentions.username geo.place_id in_reply_to_user_id",
    "entities.note.mentions.username referenced_tweets.id",
    "referenced_tweets.id.attachments.media_keys referenced_tweets.id.author_id",
)
_USER_EXPANSIONS: Final = frozenset(
    ("pinned_tweet_id", "most_recent_tweet_id", "affiliation.user_id")
)
_USER_FIELDS: Final = _words(
    "affiliation confirmed_email connection_status created_at description entities id",
    "is_identity_verified location most_recent_tweet_id name parody pinned_tweet_id",
    "profile_banner_url profile_image_url protected public_metrics receives_your_dm",
    "subscription subscription_type url username verified verified_followers_count",
    "verified_type withheld",
)
_MEDIA_FIELDS: Final = _words(
    "alt_text duration_ms height media_key non_public_metrics organic_metrics",
    "preview_image_url promoted_metrics public_metrics type url variants width",
)
_POLL_FIELDS: Final = _words(
    "duration_minutes end_datetime id options voting_status",
)
_PLACE_FIELDS: Final = _words(
    "contained_within country country_code full_name geo id name place_type",
)
_FIELD_PARAMS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "tweet.fields": _TWEET_FIELDS,
        "expansions": _TWEET_EXPANSIONS,
        "user.fields": _USER_FIELDS,
        "media.fields": _MEDIA_FIELDS,
        "poll.fields": _POLL_FIELDS,
        "place.fields": _PLACE_FIELDS,
    }
)
_TIMELINE_PARAMS: Final = frozenset(
    ("since_id", "until_id", "max_results", "pagination_token", "start_time", "end_time")
) | frozenset(_FIELD_PARAMS)
_ALLOWED_QUERY: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "me": frozenset(("expansions", "tweet.fields", "user.fields")),
        "mentions": _TIMELINE_PARAMS,
        "user_tweets": _TIMELINE_PARAMS | {"exclude"},
        "create_tweet": frozenset(),
    }
)
_CREATE_KEYS: Final = _words(
    "card_uri community_id direct_message_deep_link edit_options for_super_followers_only",
    "geo media nullcast poll quote_tweet_id reply reply_settings share_with_followers",
    "text",
)
_REPLY_KEYS: Final = frozenset(
    ("in_reply_to_tweet_id", "exclude_reply_user_ids", "auto_populate_reply_metadata")
)
_EXCLUDES: Final = "[replies,retweets]"
_FAULT_KEYS: Final = frozenset(("status", "reset_in", "delay", "body", "late"))
_INVALID_REQUEST_TYPE: Final = "https://api.twitter.com/2/problems/invalid-request"
_PROBLEM_JSON: Final = "application/problem+json"
_DUPLICATE_DETAIL: Final = "You are not allowed to create a Tweet with duplicate content."


def weighted_length(text: str) -> int:
    """Return the length X counts for a post (see :func:`bot.textlimits.x_weighted_length`)."""
    return x_weighted_length(text)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure, used for the next request on a route.

    Attributes:
        status: The status to answer; any 2xx means "answer normally" (after ``delay``).
        reset_in: For 429, ``x-rate-limit-reset`` is ``ceil(clock() + reset_in)``; None sends
            no reset header.
        delay: Seconds to wait before answering (to trigger client timeouts).
        body: A raw text/plain body instead of X's problem JSON (like a proxy error page).
        late: With a 2xx status, handle the request first and wait ``delay`` only before
            sending the answer: the post exists even if the client gives up waiting (a lost
            response, the case that tests exactly-once delivery).
        reset: Drop the connection instead of answering (a connection reset; after
            ``delay``).
    """

    status: int = 503
    reset_in: float | None = None
    delay: float = 0.0
    body: str | None = None
    late: bool = False
    reset: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status in 200..599, got {self.status}")
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay}")
        if self.reset_in is not None and not math.isfinite(self.reset_in):
            raise ValueError(f"reset_in must be finite, got {self.reset_in}")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as the fake saw it.

    ``status`` is what was answered: 0 while the request is still being handled, 499 when
    the client went away before the answer. Control requests (``/_sandbox/...``) are not
    recorded.
    """

    method: str
    path: str
    route: str
    query: dict[str, str]
    at: float
    status: int


@dataclass(slots=True)
class _Tweet:
    id: int
    text: str
    author_id: str
    created_at: float
    conversation_id: int
    in_reply_to_id: int | None
    in_reply_to_user_id: str | None


@dataclass(slots=True)
class _User:
    id: str
    username: str
    name: str
    created_at: float


@dataclass(slots=True)
class _Window:
    start: float
    used: int = 0


@dataclass(frozen=True, slots=True)
class _Query:
    since_id: int | None = None
    until_id: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    max_results: int = 10
    cursor: int | None = None
    tweet_fields: frozenset[str] = frozenset()
    expansions: frozenset[str] = frozenset()
    user_fields: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()


class _ApiError(Exception):
    """An error answer, raised inside a handler and rendered by the middleware."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload

    @classmethod
    def generic(cls, status: int, detail: str | None = None) -> _ApiError:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:  # a status Python has no name for, e.g. 520 from a CDN
            title = "Error"
        payload = {"title": title, "detail": detail or title, "type": "about:blank"}
        return cls(status, {**payload, "status": status})

    @classmethod
    def invalid(cls, parameter: str, value: str, message: str) -> _ApiError:
        error = {"parameters": {parameter: [value]}, "message": message}
        return cls(
            400,
            {
                "errors": [error],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": _INVALID_REQUEST_TYPE,
            },
        )

    def response(self, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.json_response(
            self.payload, status=self.status, headers=headers, content_type=_PROBLEM_JSON
        )


class _ControlError(Exception):
    """Bad input to the control API (answered 400 with the message)."""


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _base36(number: int) -> str:
    digits = []
    while True:
        number, rest = divmod(number, 36)
        digits.append(_BASE36[rest])
        if not number:
            return "".join(reversed(digits))


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",")]


class FakeX:
    """A fake X API v2 for one account: mentions, user timelines, posting, rate limits, faults.

    Serves ``GET /2/users/me``, ``GET /2/users/{id}/mentions``, ``GET /2/users/{id}/tweets``
    and ``POST /2/tweets`` with X's field names and error shapes, plus a JSON control API under
    ``/_sandbox/``. Every time value comes from ``clock`` (epoch seconds). Point tweepy at it
    with an aiohttp client middleware that rewrites ``api.twitter.com`` to :attr:`base_url`.

    Attributes:
        account_id: Our account's user id.
        account_username: Our account's handle (mentions contain ``@account_username``).
        enforce_limits: Refuse requests over the window budget with 429 when True.
        overlap_pages: Start every mentions page after the first with the previous page's
            last tweet.
        posts: Tweets our account created through ``POST /2/tweets``.
        requests: Every API request received, in order of arrival.
    """

    def __init__(
        self,
        *,
        account_username: str = "acme_care",
        account_id: str = "1000",
        clock: Callable[[], float] = time.time,
        enforce_limits: bool = False,
        limits: Mapping[str, tuple[int, float]] | None = None,
    ) -> None:
        if not _HANDLE_RE.fullmatch(account_username):
            raise ValueError(f"account_username is not a valid X handle: {account_username!r}")
        if not _DIGITS_RE.fullmatch(account_id):
            raise ValueError(f"account_id must be 1-19 digits, got {account_id!r}")
        merged = dict(DEFAULT_LIMITS)
        for route, (budget, window) in (limits or {}).items():
            if route not in DEFAULT_LIMITS:
                raise ValueError(f"unknown route in limits: {route!r} (one of {ROUTES})")
            if budget < 1 or window <= 0:
                raise ValueError(f"limits[{route!r}] needs requests >= 1 and window > 0")
            merged[route] = (budget, window)
        self.account_id = account_id
        self.account_username = account_username
        self.enforce_limits = enforce_limits
        self.overlap_pages = False
        self.posts: list[dict[str, Any]] = []
        self.requests: list[RequestRecord] = []
        self._clock = clock
        self._limits = merged
        self._windows: dict[str, _Window] = {}
        self._faults: dict[str, deque[Fault]] = {route: deque() for route in ROUTES}
        self._mention_re = re.compile(
            rf"(?<![A-Za-z0-9_])@{re.escape(account_username)}(?![A-Za-z0-9_])", re.IGNORECASE
        )
        self._tweets: dict[int, _Tweet] = {}
        self._mentions: list[int] = []
        self._authored: dict[str, list[int]] = {}
        self._account_texts: set[str] = set()
        self._users: dict[str, _User] = {}
        self._user_ids: dict[str, str] = {}
        self._next_tweet_id = FIRST_TWEET_ID
        self._next_user_id = FIRST_USER_ID
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._register_user(account_id, account_username, account_username)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving on ``host:port`` (port 0 picks a free one).

        Args:
            host: Interface to bind.
            port: TCP port; 0 for any free port.

        Raises:
            RuntimeError: When the server is already running.
        """
        if self._runner is not None:
            raise RuntimeError("FakeX is already running")
        self._runner, self._base_url = await serve(self._make_app(), host, port)

    async def stop(self) -> None:
        """Stop serving (idempotent); requests still in flight are cancelled."""
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeX:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:54321`` (only after :meth:`start`)."""
        if self._base_url is None:
            raise RuntimeError("FakeX is not running; call start() first")
        return self._base_url

    # -- scenario set-up -------------------------------------------------------------------

    def add_user(self, username: str, *, name: str | None = None) -> str:
        """Register a user (idempotent per case-insensitive username) and return its id.

        Args:
            username: An X handle: 1-15 characters of ``[A-Za-z0-9_]``.
            name: Display name; defaults to the username. Ignored for a known user.

        Returns:
            The user's id.

        Raises:
            ValueError: When the username is not a valid handle.
        """
        if not _HANDLE_RE.fullmatch(username):
            raise ValueError(f"not a valid X handle (1-15 of [A-Za-z0-9_]): {username!r}")
        known = self._user_ids.get(username.lower())
        if known is not None:
            return known
        while str(self._next_user_id) == self.account_id:
            self._next_user_id += 1
        user_id = str(self._next_user_id)
        self._next_user_id += 1
        self._register_user(user_id, username, name or username)
        return user_id

    def inject_mention(
        self,
        *,
        author: str,
        text: str,
        in_reply_to: str | None = None,
        created_at: datetime | None = None,
    ) -> str:
        """Add a post by ``author`` that shows up in our mentions timeline.

        ``@account_username `` is prepended unless the text already mentions us or it replies
        to one of our posts.

        Args:
            author: The author's handle (registered on first use).
            text: The post text.
            in_reply_to: Id of the post it replies to, if any.
            created_at: Timezone-aware creation time; defaults to ``clock()``.

        Returns:
            The new post's id.

        Raises:
            ValueError: For an invalid handle, an unknown ``in_reply_to`` or a naive datetime.
        """
        if created_at is not None and created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        parent = self._parent(in_reply_to)
        author_id = self.add_user(author)
        replies_to_us = parent is not None and parent.author_id == self.account_id
        if not replies_to_us and not self._mention_re.search(text):
            text = f"@{self.account_username} {text}"
        at = self._clock() if created_at is None else created_at.timestamp()
        return str(self._add_tweet(author_id, text, parent, at).id)

    def post_as_account(self, text: str, *, in_reply_to: str | None = None) -> str:
        """Add a post by our own account (not recorded in :attr:`posts`).

        It appears in the mentions timeline when it contains ``@account_username`` or replies
        to one of our posts, as any post would.

        Args:
            text: The post text.
            in_reply_to: Id of the post it replies to, if any.

        Returns:
            The new post's id.

        Raises:
            ValueError: For an unknown ``in_reply_to``.
        """
        parent = self._parent(in_reply_to)
        return str(self._add_tweet(self.account_id, text, parent, self._clock()).id)

    def fail_next(self, route: str, *faults: Fault) -> None:
        """Queue faults for the next requests on ``route``, consumed one per request in order.

        Args:
            route: One of :data:`ROUTES`.
            *faults: The faults to queue.

        Raises:
            ValueError: For an unknown route.
        """
        if route not in self._faults:
            raise ValueError(f"unknown route {route!r}; expected one of {ROUTES}")
        self._faults[route].extend(faults)

    def posts_in_reply_to(self, tweet_id: str) -> list[dict[str, Any]]:
        """Return the posts our account created in reply to ``tweet_id``, oldest first.

        Args:
            tweet_id: The id of the post replied to.

        Returns:
            Matching entries of :attr:`posts`.
        """
        return [post for post in self.posts if post["in_reply_to_tweet_id"] == tweet_id]

    # -- store -----------------------------------------------------------------------------

    def _register_user(self, user_id: str, username: str, name: str) -> None:
        self._users[user_id] = _User(user_id, username, name, self._clock())
        self._user_ids[username.lower()] = user_id

    def _parent(self, tweet_id: str | None) -> _Tweet | None:
        if tweet_id is None:
            return None
        parent = self._tweets.get(int(tweet_id)) if _DIGITS_RE.fullmatch(tweet_id) else None
        if parent is None:
            raise ValueError(f"unknown tweet id to reply to: {tweet_id!r}")
        return parent

    def _add_tweet(self, author_id: str, text: str, parent: _Tweet | None, at: float) -> _Tweet:
        snowflake = (int(at * 1000) - TWITTER_EPOCH_MS) << 22
        tweet_id = max(self._next_tweet_id, snowflake)
        self._next_tweet_id = tweet_id + 1
        tweet = _Tweet(
            id=tweet_id,
            text=text,
            author_id=author_id,
            created_at=at,
            conversation_id=tweet_id if parent is None else parent.conversation_id,
            in_reply_to_id=None if parent is None else parent.id,
            in_reply_to_user_id=None if parent is None else parent.author_id,
        )
        self._tweets[tweet_id] = tweet
        self._authored.setdefault(author_id, []).append(tweet_id)  # ids only grow: stays sorted
        if author_id == self.account_id:
            self._account_texts.add(text)
        replies_to_us = parent is not None and parent.author_id == self.account_id
        if replies_to_us or self._mention_re.search(text):
            self._mentions.append(tweet_id)
        return tweet

    # -- HTTP plumbing ---------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/2/users/me", self._handle_me, name="me")
        app.router.add_get("/2/users/{id}/mentions", self._handle_mentions, name="mentions")
        app.router.add_get("/2/users/{id}/tweets", self._handle_user_tweets, name="user_tweets")
        app.router.add_post("/2/tweets", self._handle_create_tweet, name="create_tweet")
        app.router.add_post("/_sandbox/mentions", self._control_mention)
        app.router.add_get("/_sandbox/posts", self._control_posts)
        app.router.add_get("/_sandbox/requests", self._control_requests)
        app.router.add_post("/_sandbox/faults", self._control_faults)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox/"):
            try:
                return await handler(request)
            except _ControlError as error:
                return web.json_response({"error": str(error)}, status=400)
        name = request.match_info.route.name
        route = name if name in self._faults else "unknown"
        record = RequestRecord(
            method=request.method,
            path=request.path,
            route=route,
            query=dict(request.query),
            at=self._clock(),
            status=0,
        )
        index = len(self.requests)
        self.requests.append(record)
        status = 499  # overwritten unless the handler is cancelled (client went away)
        try:
            response = await self._answer(route, request, handler)
            status = response.status
            return response
        finally:
            self._settle(index, record, status)

    def _settle(self, index: int, record: RequestRecord, status: int) -> None:
        settled = replace(record, status=status)
        if index < len(self.requests) and self.requests[index] is record:
            self.requests[index] = settled
            return
        for position, candidate in enumerate(self.requests):  # the list was edited meanwhile
            if candidate is record:
                self.requests[position] = settled
                return

    async def _answer(
        self, route: str, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if route == "unknown":
            return await self._unknown_route(request, handler)
        late = self._late_fault(route)
        faulted = None if late else await self._apply_fault(route, request)
        if faulted is not None:
            return faulted
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith(("OAuth ", "Bearer ")):
            return _ApiError.generic(401).response()
        headers, refused = self._consume(route)
        try:
            if refused:
                raise _ApiError.generic(429)
            self._check_query(route, request)
            response = await handler(request)
        except _ApiError as error:
            return error.response(headers)
        response.headers.update(headers)
        if late is not None:
            await asyncio.sleep(late.delay)
        return response

    @staticmethod
    async def _unknown_route(request: web.Request, handler: Handler) -> web.Response:
        try:
            await handler(request)
        except web.HTTPException as exc:
            return _ApiError.generic(exc.status).response()
        return _ApiError.generic(404).response()

    def _late_fault(self, route: str) -> Fault | None:
        queue = self._faults[route]
        if queue and queue[0].late and 200 <= queue[0].status < 300:
            return queue.popleft()
        return None

    async def _apply_fault(self, route: str, request: web.Request) -> web.Response | None:
        queue = self._faults[route]
        if not queue:
            return None
        fault = queue.popleft()
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.reset and request.transport is not None:
            request.transport.abort()  # the client sees the connection reset, no answer
            return web.Response(status=fault.status)  # never reaches the client
        if 200 <= fault.status < 300:
            return None  # "answer normally, just slowly"
        return self._fault_response(route, fault)

    def _fault_response(self, route: str, fault: Fault) -> web.Response:
        headers: dict[str, str] = {}
        if fault.status == 429:
            headers["x-rate-limit-limit"] = str(self._limits[route][0])
            headers["x-rate-limit-remaining"] = "0"
            if fault.reset_in is not None:
                headers["x-rate-limit-reset"] = str(math.ceil(self._clock() + fault.reset_in))
        if fault.body is not None:
            return web.Response(
                status=fault.status, text=fault.body, content_type="text/plain", headers=headers
            )
        return _ApiError.generic(fault.status).response(headers)

    def _consume(self, route: str) -> tuple[dict[str, str], bool]:
        budget, span = self._limits[route]
        now = self._clock()
        window = self._windows.get(route)
        if window is None or now >= window.start + span:
            window = self._windows[route] = _Window(start=now)
        refused = self.enforce_limits and window.used >= budget
        if not refused:
            window.used += 1
        headers = {
            "x-rate-limit-limit": str(budget),
            "x-rate-limit-remaining": str(max(0, budget - window.used)),
            "x-rate-limit-reset": str(math.ceil(window.start + span)),
        }
        return headers, refused

    @staticmethod
    def _check_query(route: str, request: web.Request) -> None:
        allowed = _ALLOWED_QUERY[route]
        for key, value in request.query.items():
            if key not in allowed:
                listed = ",".join(sorted(allowed))
                message = f"The query parameter [{key}] is not one of [{listed}]"
                raise _ApiError.invalid(key, value, message)
            valid = _USER_EXPANSIONS if (route, key) == ("me", "expansions") else None
            valid = valid or _FIELD_PARAMS.get(key)
            if valid is None:
                continue
            for item in _csv(value):
                if item not in valid:
                    listed = ",".join(sorted(valid))
                    message = (
                        f"The `{key}` query parameter value [{item}] is not one of [{listed}]"
                    )
                    raise _ApiError.invalid(key, item, message)

    # -- API handlers ----------------------------------------------------------------------

    async def _handle_me(self, request: web.Request) -> web.Response:
        fields = frozenset(_csv(request.query.get("user.fields", "")))
        account = self._users[self.account_id]
        return web.json_response({"data": self._render_user(account, fields)})

    async def _handle_mentions(self, request: web.Request) -> web.Response:
        user_id = self._path_user_id(request)
        if user_id != self.account_id:
            raise self._user_not_found(user_id)
        query = self._parse_timeline_query(request)
        return web.json_response(self._page(self._mentions, query, overlap=self.overlap_pages))

    async def _handle_user_tweets(self, request: web.Request) -> web.Response:
        user_id = self._path_user_id(request)
        if user_id not in self._users:
            raise self._user_not_found(user_id)
        query = self._parse_timeline_query(request)
        authored = self._authored.get(user_id, [])
        return web.json_response(self._page(authored, query, overlap=False))

    async def _handle_create_tweet(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise _ApiError.invalid("body", "", "Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _ApiError.invalid("body", "", "Request body must be a JSON object")
        for key in body:
            if key not in _CREATE_KEYS:
                raise _ApiError.invalid(key, str(body[key]), f"[{key}] is not a known field")
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError.invalid("text", str(text or ""), "text must be a non-empty string")
        weight = weighted_length(text)
        if weight > MAX_WEIGHTED_LENGTH:
            message = f"text is too long: weighs {weight}, limit {MAX_WEIGHTED_LENGTH}"
            raise _ApiError.invalid("text", text, message)
        parent = self._reply_parent(body.get("reply"))
        if text in self._account_texts:
            raise _ApiError.generic(403, _DUPLICATE_DETAIL)
        auth = "oauth1" if request.headers["Authorization"].startswith("OAuth ") else "bearer"
        tweet = self._add_tweet(self.account_id, text, parent, self._clock())
        tweet_id = str(tweet.id)
        self.posts.append(
            {
                "id": tweet_id,
                "text": text,
                "in_reply_to_tweet_id": None if parent is None else str(parent.id),
                "created_at": _rfc3339(tweet.created_at),
                "at": tweet.created_at,
                "auth": auth,
            }
        )
        data = {"id": tweet_id, "text": text, "edit_history_tweet_ids": [tweet_id]}
        return web.json_response({"data": data}, status=201)

    def _reply_parent(self, reply: object) -> _Tweet | None:
        if reply is None:
            return None
        if not isinstance(reply, dict):
            raise _ApiError.invalid("reply", str(reply), "reply must be an object")
        for key in reply:
            if key not in _REPLY_KEYS:
                raise _ApiError.invalid(f"reply.{key}", str(reply[key]), f"[{key}] is unknown")
        target = reply.get("in_reply_to_tweet_id")
        parameter = "reply.in_reply_to_tweet_id"
        if not isinstance(target, str) or not _DIGITS_RE.fullmatch(target):
            raise _ApiError.invalid(parameter, str(target), f"{parameter} must be a post id")
        parent = self._tweets.get(int(target))
        if parent is None:
            message = f"`{parameter}` [{target}]: the post does not exist or is not visible"
            raise _ApiError.invalid(parameter, target, message)
        return parent

    # -- request parsing and rendering -----------------------------------------------------

    @staticmethod
    def _path_user_id(request: web.Request) -> str:
        user_id = request.match_info["id"]
        if not _DIGITS_RE.fullmatch(user_id):
            message = f"The `id` query parameter value [{user_id}] does not match ^[0-9]{{1,19}}$"
            raise _ApiError.invalid("id", user_id, message)
        return user_id

    @staticmethod
    def _user_not_found(user_id: str) -> _ApiError:
        error = _ApiError.generic(404, f"Could not find user with id: [{user_id}].")
        error.payload.update(
            title="Not Found Error",
            type="https://api.twitter.com/2/problems/resource-not-found",
            resource_type="user",
            parameter="id",
            value=user_id,
        )
        return error

    @staticmethod
    def _parse_timeline_query(request: web.Request) -> _Query:
        params = request.query

        def tweet_id(name: str) -> int | None:
            value = params.get(name)
            if value is None:
                return None
            if not _DIGITS_RE.fullmatch(value):
                message = f"The `{name}` query parameter value [{value}] is not a valid post id"
                raise _ApiError.invalid(name, value, message)
            return int(value)

        def instant(name: str) -> float | None:
            value = params.get(name)
            if value is None:
                return None
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                message = (
                    f"The `{name}` query parameter value [{value}] is not RFC3339 with a zone"
                )
                raise _ApiError.invalid(name, value, message) from None
            return parsed.timestamp()

        raw_max = params.get("max_results", "10")
        max_results = int(raw_max) if re.fullmatch(r"-?[0-9]{1,9}", raw_max) else None
        if max_results is None or not 5 <= max_results <= 100:
            message = (
                f"The `max_results` query parameter value [{raw_max}] is not between 5 and 100"
            )
            raise _ApiError.invalid("max_results", raw_max, message)
        cursor = None
        token = params.get("pagination_token")
        if token is not None:
            if not re.fullmatch(r"[0-9a-z]{1,16}", token):
                message = f"The `pagination_token` query parameter value [{token}] is not valid"
                raise _ApiError.invalid("pagination_token", token, message)
            cursor = int(token, 36)
        start, end = instant("start_time"), instant("end_time")
        if start is not None and end is not None and start >= end:
            message = "Invalid 'start_time'. 'start_time' must be before 'end_time'"
            raise _ApiError.invalid("start_time", params["start_time"], message)
        exclude = frozenset(_csv(params["exclude"])) if "exclude" in params else frozenset()
        for item in exclude:
            if item not in {"replies", "retweets"}:
                message = f"The `exclude` query parameter value [{item}] is not one of {_EXCLUDES}"
                raise _ApiError.invalid("exclude", item, message)
        fields = {name: frozenset(_csv(params.get(name, ""))) - {""} for name in _FIELD_PARAMS}
        return _Query(
            since_id=tweet_id("since_id"),
            until_id=tweet_id("until_id"),
            start_time=start,
            end_time=end,
            max_results=max_results,
            cursor=cursor,
            tweet_fields=fields["tweet.fields"],
            expansions=fields["expansions"],
            user_fields=fields["user.fields"],
            exclude=exclude,
        )

    def _page(self, ids: list[int], query: _Query, *, overlap: bool) -> dict[str, Any]:
        low = 0 if query.since_id is None else bisect.bisect_right(ids, query.since_id)
        high = len(ids) if query.until_id is None else bisect.bisect_left(ids, query.until_id)
        if query.cursor is not None:
            edge = bisect.bisect_right if overlap else bisect.bisect_left
            high = min(high, edge(ids, query.cursor))
        # since_id/until_id take precedence over start_time/end_time (X's documented rule).
        start = None if query.since_id is not None else query.start_time
        end = None if query.until_id is not None else query.end_time
        picked: list[_Tweet] = []
        position = high - 1
        while position >= low and len(picked) <= query.max_results:
            tweet = self._tweets[ids[position]]
            position -= 1
            second = math.floor(tweet.created_at)
            if start is not None and second < start:
                continue
            if end is not None and second >= end:
                continue
            if "replies" in query.exclude and tweet.in_reply_to_id is not None:
                continue
            picked.append(tweet)
        page = picked[: query.max_results]
        if not page:
            return {"meta": {"result_count": 0}}
        meta: dict[str, Any] = {
            "result_count": len(page),
            "newest_id": str(page[0].id),
            "oldest_id": str(page[-1].id),
        }
        if len(picked) > query.max_results:
            meta["next_token"] = _base36(page[-1].id)
        answer: dict[str, Any] = {
            "data": [self._render_tweet(tweet, query.tweet_fields) for tweet in page],
            "meta": meta,
        }
        includes = self._includes(page, query)
        if includes:
            answer["includes"] = includes
        return answer

    def _includes(self, page: Iterable[_Tweet], query: _Query) -> dict[str, Any]:
        user_ids: dict[str, None] = {}
        referenced: dict[int, _Tweet] = {}
        for tweet in page:
            if "author_id" in query.expansions:
                user_ids[tweet.author_id] = None
            if "in_reply_to_user_id" in query.expansions and tweet.in_reply_to_user_id:
                user_ids[tweet.in_reply_to_user_id] = None
            parent = self._tweets.get(tweet.in_reply_to_id or -1)
            if parent is not None and "referenced_tweets.id" in query.expansions:
                referenced[parent.id] = parent
            if parent is not None and "referenced_tweets.id.author_id" in query.expansions:
                user_ids[parent.author_id] = None
        includes: dict[str, Any] = {}
        if user_ids:
            users = [self._users[user_id] for user_id in user_ids if user_id in self._users]
            includes["users"] = [self._render_user(user, query.user_fields) for user in users]
        if referenced:
            tweets = referenced.values()
            includes["tweets"] = [self._render_tweet(t, query.tweet_fields) for t in tweets]
        return includes

    @staticmethod
    def _render_tweet(tweet: _Tweet, fields: frozenset[str]) -> dict[str, Any]:
        tweet_id = str(tweet.id)
        rendered: dict[str, Any] = {
            "id": tweet_id,
            "text": tweet.text,
            "edit_history_tweet_ids": [tweet_id],
        }
        if "author_id" in fields:
            rendered["author_id"] = tweet.author_id
        if "created_at" in fields:
            rendered["created_at"] = _rfc3339(tweet.created_at)
        if "conversation_id" in fields:
            rendered["conversation_id"] = str(tweet.conversation_id)
        if "in_reply_to_user_id" in fields and tweet.in_reply_to_user_id is not None:
            rendered["in_reply_to_user_id"] = tweet.in_reply_to_user_id
        if "referenced_tweets" in fields and tweet.in_reply_to_id is not None:
            rendered["referenced_tweets"] = [
                {"type": "replied_to", "id": str(tweet.in_reply_to_id)}
            ]
        return rendered

    @staticmethod
    def _render_user(user: _User, fields: frozenset[str]) -> dict[str, Any]:
        rendered: dict[str, Any] = {"id": user.id, "name": user.name, "username": user.username}
        if "created_at" in fields:
            rendered["created_at"] = _rfc3339(user.created_at)
        if "protected" in fields:
            rendered["protected"] = False
        if "verified" in fields:
            rendered["verified"] = False
        return rendered

    # -- control API -----------------------------------------------------------------------

    @staticmethod
    async def _control_body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise _ControlError("body: not valid JSON") from None
        if not isinstance(body, dict):
            raise _ControlError("body: expected a JSON object")
        for key in body:
            if key not in allowed:
                raise _ControlError(
                    f"{key}: unknown field (allowed: {', '.join(sorted(allowed))})"
                )
        return body

    async def _control_mention(self, request: web.Request) -> web.Response:
        body = await self._control_body(request, frozenset(("author", "text", "in_reply_to")))
        author, text, parent = body.get("author"), body.get("text"), body.get("in_reply_to")
        if not isinstance(author, str) or not _HANDLE_RE.fullmatch(author):
            raise _ControlError("author: expected an X handle (1-15 of [A-Za-z0-9_])")
        if not isinstance(text, str) or not text:
            raise _ControlError("text: expected a non-empty string")
        if parent is not None:
            if not isinstance(parent, str) or not _DIGITS_RE.fullmatch(parent):
                raise _ControlError("in_reply_to: expected a post id (string of digits)")
            if int(parent) not in self._tweets:
                raise _ControlError(f"in_reply_to: unknown post id {parent}")
        tweet_id = self.inject_mention(author=author, text=text, in_reply_to=parent)
        return web.json_response({"id": tweet_id}, status=201)

    async def _control_posts(self, _request: web.Request) -> web.Response:
        return web.json_response(self.posts)

    async def _control_requests(self, _request: web.Request) -> web.Response:
        return web.json_response([asdict(record) for record in self.requests])

    async def _control_faults(self, request: web.Request) -> web.Response:
        body = await self._control_body(request, frozenset(("route", "faults")))
        route, items = body.get("route"), body.get("faults")
        if not isinstance(route, str) or route not in self._faults:
            raise _ControlError(f"route: expected one of {', '.join(ROUTES)}")
        if not isinstance(items, list) or not items:
            raise _ControlError("faults: expected a non-empty list of fault objects")
        faults = [self._parse_fault(index, item) for index, item in enumerate(items)]
        self.fail_next(route, *faults)
        return web.json_response({"route": route, "queued": len(self._faults[route])})

    @staticmethod
    def _parse_fault(index: int, item: object) -> Fault:
        where = f"faults[{index}]"
        if not isinstance(item, dict):
            raise _ControlError(f"{where}: expected an object")
        for key in item:
            if key not in _FAULT_KEYS:
                raise _ControlError(f"{where}.{key}: unknown field")
        status = item.get("status", 503)
        reset_in = item.get("reset_in")
        delay = item.get("delay", 0.0)
        body = item.get("body")
        late = item.get("late", False)
        if not isinstance(late, bool):
            raise _ControlError(f"{where}.late: expected true or false")
        if isinstance(status, bool) or not isinstance(status, int):
            raise _ControlError(f"{where}.status: expected an integer HTTP status")
        if reset_in is not None and (
            isinstance(reset_in, bool) or not isinstance(reset_in, int | float)
        ):
            raise _ControlError(f"{where}.reset_in: expected a number of seconds or null")
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise _ControlError(f"{where}.delay: expected a number of seconds")
        if body is not None and not isinstance(body, str):
            raise _ControlError(f"{where}.body: expected a string or null")
        try:
            return Fault(
                status=status,
                reset_in=None if reset_in is None else float(reset_in),
                delay=float(delay),
                body=body,
                late=late,
            )
        except ValueError as error:
            field_name = str(error).split(" ", 1)[0]
            raise _ControlError(f"{where}.{field_name}: {error}") from None
