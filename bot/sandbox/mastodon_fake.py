"""A fake Mastodon instance (aiohttp): the REST calls and the SSE stream carebot uses.

It speaks Mastodon's JSON shapes (Account, Status, Notification, Instance, ``{"error": ...}``),
sends ``X-RateLimit-*`` headers (ISO 8601 reset) on every REST answer, paginates notifications
with a ``Link`` header, honours ``Idempotency-Key`` on ``POST /api/v1/statuses`` for an hour,
and streams ``notification`` events as server-sent events with ``:thump`` heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import math
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from yarl import URL

from bot.sandbox.serve import serve

if TYPE_CHECKING:
    from collections.abc import Callable

    from aiohttp.typedefs import Handler

ROUTES: Final[tuple[str, ...]] = ("verify", "instance", "notifications", "stream", "statuses")
"""Route names used by :meth:`FakeMastodon.fail_next` and :class:`RequestRecord`."""

SANDBOX_TOKEN: Final = "sandbox"  # noqa: S105 — the sandbox's well-known, worthless token
VISIBILITIES: Final = ("public", "unlisted", "private", "direct")
RATE_LIMIT: Final = 300
RATE_WINDOW: Final = 300.0
IDEMPOTENCY_TTL: Final = 3600.0  # Mastodon keeps idempotency keys for one hour
URL_LENGTH: Final = 23  # what any URL counts towards max_characters
DEFAULT_PAGE: Final = 40  # Mastodon's default notifications page; it serves at most twice that
HEARTBEAT: Final = 15.0
FIRST_ACCOUNT_ID: Final = 110_000_000_000_000_001
FIRST_NOTIFICATION_ID: Final = 1_000
PARTIAL_EVENT: Final = b'event: notification\ndata: {"id": "'

_USERNAME_RE: Final = re.compile(r"[A-Za-z0-9_]{1,30}")
_DOMAIN_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_TOKEN_RE: Final = re.compile(
    r"(?P<url>https?://[^\s<>\"]+)"
    r"|(?<![\w/@])@(?P<user>[A-Za-z0-9_]+)(?:@(?P<domain>[A-Za-z0-9.-]*[A-Za-z0-9]))?"
    r"|(?<![\w/&])#(?P<tag>\w+)"
)
_COUNT_URL_RE: Final = re.compile(r"https?://[^\s<>\"']+")
_COUNT_MENTION_RE: Final = re.compile(r"(?<![\w/])@(\w+)@[\w.-]*\w")
_URL_TRAILING: Final = ".,:;!?'\")]}"
_FAULT_KEYS: Final = frozenset(("status", "delay", "body", "reset_in", "late"))


def status_length(text: str) -> int:
    """The length Mastodon checks against ``max_characters``.

    Any URL counts as 23 and ``@user@domain`` as ``@user``; the rest by code point (Mastodon
    counts grapheme clusters, which is never more).
    """
    countable = _COUNT_URL_RE.sub("x" * URL_LENGTH, text)
    return len(_COUNT_MENTION_RE.sub(lambda m: "@" + m.group(1), countable))


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure, used for the next request on a route.

    Attributes:
        status: The status to answer; any 2xx means "answer normally" (after ``delay``).
        delay: Seconds to wait before answering (to trigger client timeouts).
        body: A raw text/plain body instead of Mastodon's ``{"error": ...}`` (a proxy page).
        reset_in: For 429, ``X-RateLimit-Reset`` is ``clock() + reset_in``; None uses the
            current window's end.
        late: With a 2xx status, handle the request first and wait ``delay`` only before
            answering: the status exists even if the client gives up (a lost response).
    """

    status: int = 503
    delay: float = 0.0
    body: str | None = None
    reset_in: float | None = None
    late: bool = False

    def __post_init__(self) -> None:
        if not 200 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status in 200..599, got {self.status}")
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay}")
        if self.reset_in is not None and not math.isfinite(self.reset_in):
            raise ValueError(f"reset_in must be finite, got {self.reset_in}")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One API request as the fake saw it (0: still in progress, 499: client went away)."""

    method: str
    path: str
    route: str
    query: dict[str, str]
    at: float
    status: int


@dataclass(slots=True)
class _Account:
    id: str
    username: str
    domain: str | None  # None: a local account
    display_name: str
    bot: bool
    created_at: float

    @property
    def acct(self) -> str:
        return self.username if self.domain is None else f"{self.username}@{self.domain}"


@dataclass(slots=True)
class _Status:
    id: int
    account: _Account
    text: str
    visibility: str
    created_at: float
    in_reply_to: _Status | None
    mentions: list[_Account]


@dataclass(slots=True)
class _Notification:
    id: int
    type: str
    account: _Account
    status: _Status
    created_at: float


@dataclass(eq=False, slots=True)
class _Stream:
    pending: deque[bytes] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    closing: bool = False


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ControlError(Exception):
    """Bad input to the control API (answered 400 with the message)."""


class FakeMastodon:
    """A fake Mastodon instance with one account of ours (``account``) and its notifications.

    Serves ``GET /api/v1/accounts/verify_credentials``, ``GET /api/v2/instance``,
    ``GET /api/v1/notifications``, ``GET /api/v1/streaming/user/notification`` (SSE) and
    ``POST /api/v1/statuses``. Every time value comes from ``clock`` (epoch seconds).

    The control API, for humans: ``POST /_sandbox/mentions`` (``{"author", "text",
    "visibility"?, "in_reply_to"?, "bot"?}`` → ``{"id"}``), ``GET /_sandbox/posts``,
    ``GET /_sandbox/requests`` and ``POST /_sandbox/drop_streams`` (→ ``{"dropped"}``).

    Attributes:
        max_characters: The instance's status length limit.
        enforce_limits: Refuse REST requests over ``rate_limit`` per window with 429.
        streaming_url: What ``/api/v2/instance`` announces as the streaming base (None: our
            own :attr:`base_url`); a test may set ``ws://…`` to check the client maps it.
        posts: Statuses our account created, with their idempotency keys, oldest first.
        requests: Every API request received, in order of arrival.
        stream_connects: How many stream connections were accepted so far.
    """

    def __init__(
        self,
        *,
        account: str = "acmecare",
        clock: Callable[[], float] = time.time,
        max_characters: int = 500,
        access_token: str = SANDBOX_TOKEN,
        enforce_limits: bool = False,
        rate_limit: int = RATE_LIMIT,
        rate_window: float = RATE_WINDOW,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        if not _USERNAME_RE.fullmatch(account):
            raise ValueError(f"not a Mastodon username (1-30 of [A-Za-z0-9_]): {account!r}")
        if max_characters < 1 or rate_limit < 1 or rate_window <= 0 or heartbeat <= 0:
            raise ValueError("max_characters, rate_limit, rate_window and heartbeat must be > 0")
        if not access_token:
            raise ValueError("access_token must not be empty")
        self.max_characters = max_characters
        self.enforce_limits = enforce_limits
        self.streaming_url: str | None = None
        self.posts: list[dict[str, Any]] = []
        self.requests: list[RequestRecord] = []
        self.stream_connects = 0
        self._clock = clock
        self._token = access_token
        self._rate_limit, self._rate_window = rate_limit, rate_window
        self._window_start: float | None = None
        self._window_used = 0
        self._heartbeat = heartbeat
        self._faults: dict[str, deque[Fault]] = {route: deque() for route in ROUTES}
        self._accounts: dict[str, _Account] = {}
        self._statuses: dict[int, _Status] = {}
        self._notifications: list[_Notification] = []
        self._idempotency: dict[str, tuple[int, float]] = {}
        self._streams: set[_Stream] = set()
        self._next_account_id = FIRST_ACCOUNT_ID
        self._next_status_id = 0
        self._next_notification_id = FIRST_NOTIFICATION_ID
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._me = self._account(account, bot=False)
        self._mentions_us = re.compile(rf"(?<![\w@/])@{re.escape(account)}(?![\w@])", re.I)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start serving on ``host:port`` (port 0 picks a free one).

        Raises:
            RuntimeError: When the server is already running.
        """
        if self._runner is not None:
            raise RuntimeError("FakeMastodon is already running")
        self._runner, self._base_url = await serve(self._make_app(), host, port)

    async def stop(self) -> None:
        """End every stream cleanly, then stop serving (idempotent)."""
        for stream in self._streams:
            stream.closing = True
            stream.wake.set()
        self._streams.clear()
        runner, self._runner, self._base_url = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeMastodon:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:54321`` (only after :meth:`start`)."""
        if self._base_url is None:
            raise RuntimeError("FakeMastodon is not running; call start() first")
        return self._base_url

    @property
    def account_id(self) -> str:
        """Our account's id."""
        return self._me.id

    # -- test controls ---------------------------------------------------------------------

    def post_mention(
        self,
        author: str,
        text: str,
        *,
        visibility: str = "public",
        in_reply_to: str | None = None,
        bot: bool = False,
    ) -> str:
        """Have ``author`` post a status that mentions our account; notify and stream it.

        ``@account `` is prepended unless the text already mentions us.

        Args:
            author: ``user`` (a local account) or ``user@domain`` (a remote one); created on
                first use, its ``bot`` flag set to ``bot``.
            text: The status text (plain; rendered to Mastodon's HTML).
            visibility: One of :data:`VISIBILITIES`.
            in_reply_to: Id of the status it replies to, if any.
            bot: Whether the author's account is marked as a bot.

        Returns:
            The new status id.

        Raises:
            ValueError: For a bad author, our own account, empty text, an unknown visibility
                or an unknown ``in_reply_to``.
        """
        if visibility not in VISIBILITIES:
            raise ValueError(f"visibility must be one of {VISIBILITIES}, got {visibility!r}")
        if not text.strip():
            raise ValueError("text must not be empty")
        parent = self._parent(in_reply_to)
        who = self._account(author, bot=bot)
        if who is self._me:
            raise ValueError("the author must not be our own account")
        if not self._mentions_us.search(text):
            text = f"@{self._me.username} {text}"
        status = self._add_status(who, text, visibility, parent)
        notification = _Notification(
            self._next_notification_id, "mention", who, status, status.created_at
        )
        self._next_notification_id += 1
        self._notifications.append(notification)
        event = json.dumps(self._render_notification(notification), separators=(",", ":"))
        for stream in self._streams:
            stream.pending.append(b"event: notification\ndata: " + event.encode() + b"\n\n")
            stream.wake.set()
        return str(status.id)

    def drop_streams(self) -> int:
        """Break every open stream now: each writes half an event, then its connection closes.

        The half event is the first one not yet sent, if any (so it is lost to the stream and
        must be caught up over REST). Mentions posted after this call reach no old stream.

        Returns:
            How many stream connections were dropped.
        """
        dropped = list(self._streams)
        self._streams.clear()
        for stream in dropped:
            stream.dropped = True
            stream.wake.set()
        return len(dropped)

    @property
    def open_streams(self) -> int:
        """How many stream connections are open."""
        return len(self._streams)

    def fail_next(self, route: str, *faults: Fault) -> None:
        """Queue faults for the next requests on ``route``, consumed one per request in order.

        Raises:
            ValueError: For an unknown route (see :data:`ROUTES`).
        """
        if route not in self._faults:
            raise ValueError(f"unknown route {route!r}; expected one of {ROUTES}")
        self._faults[route].extend(faults)

    def status(self, status_id: str) -> dict[str, Any]:
        """Return a status as the API renders it.

        Raises:
            KeyError: For an unknown id.
        """
        found = self._statuses.get(int(status_id)) if status_id.isdigit() else None
        if found is None:
            raise KeyError(status_id)
        return self._render_status(found)

    # -- store -----------------------------------------------------------------------------

    def _account(self, handle: str, *, bot: bool) -> _Account:
        username, _, domain = handle.lstrip("@").partition("@")
        if not _USERNAME_RE.fullmatch(username) or (domain and not _DOMAIN_RE.fullmatch(domain)):
            raise ValueError(f"not a Mastodon account (user or user@domain): {handle!r}")
        key = handle.lstrip("@").lower()
        known = self._accounts.get(key)
        if known is not None:
            known.bot = bot if known is not self._me else known.bot
            return known
        made = _Account(
            str(self._next_account_id), username, domain or None, username, bot, self._clock()
        )
        self._next_account_id += 1
        self._accounts[key] = made
        return made

    def _parent(self, status_id: str | None) -> _Status | None:
        if status_id is None:
            return None
        parent = self._statuses.get(int(status_id)) if status_id.isdigit() else None
        if parent is None:
            raise ValueError(f"unknown status id to reply to: {status_id!r}")
        return parent

    def _add_status(
        self, author: _Account, text: str, visibility: str, parent: _Status | None
    ) -> _Status:
        at = self._clock()
        snowflake = int(at * 1000) << 16  # Mastodon ids: milliseconds in the high bits
        status_id = max(self._next_status_id, snowflake)
        self._next_status_id = status_id + 1
        mentioned: dict[str, _Account] = {}
        for match in _TOKEN_RE.finditer(text):
            if match["user"]:
                handle = match["user"] + (f"@{match['domain']}" if match["domain"] else "")
                account = self._accounts.get(handle.lower())
                if account is not None:
                    mentioned.setdefault(account.id, account)
        status = _Status(status_id, author, text, visibility, at, parent, list(mentioned.values()))
        self._statuses[status_id] = status
        return status

    # -- rendering -------------------------------------------------------------------------

    @property
    def _origin(self) -> str:
        return self._base_url or "http://mastodon.invalid"

    def _account_url(self, account: _Account) -> str:
        host = self._origin if account.domain is None else f"https://{account.domain}"
        return f"{host}/@{account.username}"

    def _render_account(self, account: _Account) -> dict[str, Any]:
        url = self._account_url(account)
        day = datetime.fromtimestamp(account.created_at, UTC).strftime("%Y-%m-%dT00:00:00.000Z")
        return {
            "id": account.id,
            "username": account.username,
            "acct": account.acct,
            "display_name": account.display_name,
            "locked": False,
            "bot": account.bot,
            "discoverable": True,
            "group": False,
            "created_at": day,
            "note": "",
            "url": url,
            "uri": url.replace("/@", "/users/"),
            "avatar": f"{self._origin}/avatars/original/missing.png",
            "avatar_static": f"{self._origin}/avatars/original/missing.png",
            "header": f"{self._origin}/headers/original/missing.png",
            "header_static": f"{self._origin}/headers/original/missing.png",
            "followers_count": 0,
            "following_count": 0,
            "statuses_count": sum(1 for s in self._statuses.values() if s.account is account),
            "last_status_at": None,
            "emojis": [],
            "fields": [],
        }

    def _render_status(self, status: _Status) -> dict[str, Any]:
        url = f"{self._account_url(status.account)}/{status.id}"
        parent = status.in_reply_to
        return {
            "id": str(status.id),
            "created_at": _iso(status.created_at),
            "in_reply_to_id": None if parent is None else str(parent.id),
            "in_reply_to_account_id": None if parent is None else parent.account.id,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": status.visibility,
            "language": "en",
            "uri": f"{self._account_url(status.account).replace('/@', '/users/')}"
            f"/statuses/{status.id}",
            "url": url,
            "replies_count": sum(1 for s in self._statuses.values() if s.in_reply_to is status),
            "reblogs_count": 0,
            "favourites_count": 0,
            "edited_at": None,
            "content": self._render_content(status.text),
            "reblog": None,
            "account": self._render_account(status.account),
            "media_attachments": [],
            "mentions": [
                {
                    "id": a.id,
                    "username": a.username,
                    "url": self._account_url(a),
                    "acct": a.acct,
                }
                for a in status.mentions
            ],
            "tags": [],
            "emojis": [],
            "card": None,
            "poll": None,
        }

    def _render_notification(self, notification: _Notification) -> dict[str, Any]:
        return {
            "id": str(notification.id),
            "type": notification.type,
            "created_at": _iso(notification.created_at),
            "account": self._render_account(notification.account),
            "status": self._render_status(notification.status),
        }

    def _render_content(self, text: str) -> str:
        """Mastodon's HTML: paragraphs, ``<br />``, h-card mentions, links, hashtags."""
        paragraphs = [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]
        return "".join(
            "<p>" + "<br />".join(self._render_line(line) for line in p.split("\n")) + "</p>"
            for p in paragraphs
        )

    def _render_line(self, line: str) -> str:
        out: list[str] = []
        position = 0
        for match in _TOKEN_RE.finditer(line):
            out.append(html.escape(line[position : match.start()]))
            position = match.end()
            if match["url"]:
                url = match["url"].rstrip(_URL_TRAILING)
                position = match.start() + len(url)
                out.append(_render_link(url))
            elif match["user"]:
                handle = match["user"] + (f"@{match['domain']}" if match["domain"] else "")
                account = self._accounts.get(handle.lower())
                if account is None:
                    out.append(html.escape(match.group(0)))
                    continue
                out.append(
                    '<span class="h-card" translate="no">'
                    f'<a href="{html.escape(self._account_url(account))}" class="u-url mention">'
                    f"@<span>{html.escape(account.username)}</span></a></span>"
                )
            else:
                tag = html.escape(match["tag"])
                out.append(
                    f'<a href="{self._origin}/tags/{tag.lower()}" class="mention hashtag" '
                    f'rel="tag">#<span>{tag}</span></a>'
                )
        out.append(html.escape(line[position:]))
        return "".join(out)

    # -- HTTP plumbing ---------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        get, post = app.router.add_get, app.router.add_post
        get("/api/v1/accounts/verify_credentials", self._handle_verify, name="verify")
        get("/api/v2/instance", self._handle_instance, name="instance")
        get("/api/v1/notifications", self._handle_notifications, name="notifications")
        get("/api/v1/streaming/user/notification", self._handle_stream, name="stream")
        post("/api/v1/statuses", self._handle_statuses, name="statuses")
        post("/_sandbox/mentions", self._control_mention)
        get("/_sandbox/posts", self._control_posts)
        get("/_sandbox/requests", self._control_requests)
        post("/_sandbox/drop_streams", self._control_drop)
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
        query = {key: ",".join(request.query.getall(key)) for key in request.query}
        record = RequestRecord(request.method, request.path, route, query, self._clock(), 0)
        self.requests.append(record)
        status = 499  # stays so if the handler is cancelled (the client went away)
        try:
            response = await self._answer(route, request, handler)
            status = response.status
            return response
        finally:
            settled = replace(record, status=status)
            for position in range(len(self.requests) - 1, -1, -1):
                if self.requests[position] is record:
                    self.requests[position] = settled
                    break

    async def _answer(
        self, route: str, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if route == "unknown":
            return _error_response(404, "Record not found")
        queue = self._faults[route]
        late = queue.popleft() if queue and queue[0].late and queue[0].status < 300 else None
        fault = queue.popleft() if late is None and queue else None
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        # the streaming server is a separate process in Mastodon: not counted, no headers
        headers, over = self._consume() if route != "stream" else ({}, False)
        if fault is not None and fault.status >= 300:
            return self._fault_response(fault, headers)
        if self.enforce_limits and over:
            return _error_response(429, "Too many requests", headers)
        if route != "instance" and not self._authorized(request):
            return _error_response(401, "The access token is invalid", headers)
        try:
            response = await handler(request)
        except _ApiError as error:
            return _error_response(error.status, error.message, headers)
        response.headers.update(headers)
        if late is not None:
            await asyncio.sleep(late.delay)
        return response

    def _authorized(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            return given[len("Bearer ") :] == self._token
        return request.query.get("access_token") == self._token  # the streaming API allows it

    def _consume(self) -> tuple[dict[str, str], bool]:
        """Count a request in the current window; return its headers and whether it is over."""
        now = self._clock()
        start = math.floor(now / self._rate_window) * self._rate_window  # aligned windows
        if self._window_start != start:
            self._window_start, self._window_used = start, 0
        self._window_used += 1  # refused requests count too, as with Rack::Attack
        headers = {
            "X-RateLimit-Limit": str(self._rate_limit),
            "X-RateLimit-Remaining": str(max(self._rate_limit - self._window_used, 0)),
            "X-RateLimit-Reset": _iso(start + self._rate_window),
        }
        return headers, self._window_used > self._rate_limit

    def _fault_response(self, fault: Fault, headers: dict[str, str]) -> web.Response:
        headers = dict(headers)
        if fault.status == 429:
            headers["X-RateLimit-Limit"] = str(self._rate_limit)
            headers["X-RateLimit-Remaining"] = "0"
            if fault.reset_in is not None:
                headers["X-RateLimit-Reset"] = _iso(self._clock() + fault.reset_in)
        if fault.body is not None:
            return web.Response(
                status=fault.status, text=fault.body, content_type="text/plain", headers=headers
            )
        message = "Too many requests" if fault.status == 429 else "Injected fault"
        return _error_response(fault.status, message, headers)

    # -- API handlers ----------------------------------------------------------------------

    async def _handle_verify(self, _request: web.Request) -> web.Response:
        body = self._render_account(self._me)
        body["source"] = {"privacy": "public", "sensitive": False, "language": "en", "note": ""}
        return web.json_response(body)

    async def _handle_instance(self, _request: web.Request) -> web.Response:
        host = URL(self._origin).host or "localhost"
        return web.json_response(
            {
                "domain": host,
                "title": "carebot sandbox",
                "version": "4.3.0",
                "source_url": "https://github.com/mastodon/mastodon",
                "description": "A fake Mastodon instance for carebot's tests and sandbox.",
                "languages": ["en"],
                "configuration": {
                    "urls": {"streaming": self.streaming_url or self._origin},
                    "statuses": {
                        "max_characters": self.max_characters,
                        "max_media_attachments": 4,
                        "characters_reserved_per_url": URL_LENGTH,
                    },
                    "translation": {"enabled": False},
                },
                "registrations": {"enabled": False, "approval_required": False},
                "contact": {"email": "", "account": self._render_account(self._me)},
                "rules": [],
            }
        )

    async def _handle_notifications(self, request: web.Request) -> web.Response:
        query = request.query
        types = set(query.getall("types[]", []))
        excluded = set(query.getall("exclude_types[]", []))
        limit = _limit(query.get("limit"))
        since, before, after = (_id_param(query.get(k)) for k in ("since_id", "max_id", "min_id"))
        items = [
            n
            for n in self._notifications
            if (not types or n.type in types) and n.type not in excluded
        ]
        if after is not None:  # min_id: the page just after it, still served newest first
            page = [n for n in items if n.id > after and (before is None or n.id < before)]
            page = list(reversed(page[:limit]))
        else:
            page = [
                n
                for n in reversed(items)
                if (since is None or n.id > since) and (before is None or n.id < before)
            ][:limit]
        headers: dict[str, str] = {}
        if page:
            base = [("types[]", t) for t in sorted(types)] + [("limit", str(limit))]
            own = URL(self._origin).with_path(request.path)
            next_url = own.with_query([*base, ("max_id", str(page[-1].id))])
            prev_url = own.with_query([*base, ("min_id", str(page[0].id))])
            headers["Link"] = f'<{next_url}>; rel="next", <{prev_url}>; rel="prev"'
        rendered = [self._render_notification(n) for n in page]
        return web.json_response(rendered, headers=headers)

    async def _handle_stream(self, request: web.Request) -> web.StreamResponse:
        stream = _Stream()
        self._streams.add(stream)  # subscribed before the headers go out: nothing falls between
        self.stream_connects += 1
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        try:
            await response.prepare(request)
            await response.write(b":)\n")
            await self._pump(stream, request, response)
        except ConnectionResetError:  # the client went away mid-write
            pass
        finally:
            self._streams.discard(stream)
        return response

    async def _pump(
        self, stream: _Stream, request: web.Request, response: web.StreamResponse
    ) -> None:
        while True:
            stream.wake.clear()
            while stream.pending and not stream.dropped:
                await response.write(stream.pending.popleft())
            if stream.dropped:
                event = stream.pending[0] if stream.pending else PARTIAL_EVENT
                await response.write(event[: max(1, len(event) // 2)])
                if request.transport is not None:
                    request.transport.close()  # flushes the half event, then closes
                with contextlib.suppress(ConnectionResetError):
                    await response.write_eof()
                return
            if stream.closing:
                await response.write_eof()
                return
            try:
                await asyncio.wait_for(stream.wake.wait(), timeout=self._heartbeat)
            except TimeoutError:
                await response.write(b":thump\n")

    async def _handle_statuses(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        now = self._clock()
        if key:
            remembered = self._idempotency.get(key)
            if remembered is not None and remembered[1] > now:
                return web.json_response(self._render_status(self._statuses[remembered[0]]))
        body = await _form_or_json(request)
        text = body.get("status")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(422, "Validation failed: Text can't be blank")
        if status_length(text) > self.max_characters:
            message = f"Text character limit of {self.max_characters} exceeded"
            raise _ApiError(422, f"Validation failed: {message}")
        visibility = body.get("visibility") or "public"
        if visibility not in VISIBILITIES:
            raise _ApiError(422, f"'{visibility}' is not a valid visibility")
        reply_to = body.get("in_reply_to_id") or None
        if reply_to is not None:
            reply_to = str(reply_to)
            if not reply_to.isdigit() or int(reply_to) not in self._statuses:
                raise _ApiError(404, "Record not found")
        parent = self._parent(reply_to)
        status = self._add_status(self._me, text, str(visibility), parent)
        if key:
            self._idempotency[key] = (status.id, now + IDEMPOTENCY_TTL)
        self.posts.append(
            {
                "id": str(status.id),
                "status": text,
                "in_reply_to_id": reply_to,
                "visibility": visibility,
                "idempotency_key": key,
                "created_at": _iso(status.created_at),
                "at": status.created_at,
            }
        )
        return web.json_response(self._render_status(status))

    # -- control API -----------------------------------------------------------------------

    async def _control_mention(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise _ControlError("body: not valid JSON") from None
        allowed = {"author", "text", "visibility", "in_reply_to", "bot"}
        if not isinstance(body, dict) or not set(body) <= allowed:
            raise _ControlError(f"body: expected an object with keys among {sorted(allowed)}")
        author, text = body.get("author"), body.get("text")
        if not isinstance(author, str) or not isinstance(text, str):
            raise _ControlError("author and text: expected strings")
        visibility = body.get("visibility", "public")
        in_reply_to, bot = body.get("in_reply_to"), body.get("bot", False)
        if not isinstance(visibility, str) or not isinstance(bot, bool):
            raise _ControlError("visibility: expected a string; bot: expected true or false")
        if in_reply_to is not None and not isinstance(in_reply_to, str):
            raise _ControlError("in_reply_to: expected a status id (string)")
        try:
            status_id = self.post_mention(
                author, text, visibility=visibility, in_reply_to=in_reply_to, bot=bot
            )
        except ValueError as error:
            raise _ControlError(str(error)) from None
        return web.json_response({"id": status_id}, status=201)

    async def _control_posts(self, _request: web.Request) -> web.Response:
        return web.json_response(self.posts)

    async def _control_requests(self, _request: web.Request) -> web.Response:
        return web.json_response([asdict(record) for record in self.requests])

    async def _control_drop(self, _request: web.Request) -> web.Response:
        return web.json_response({"dropped": self.drop_streams()})


def _render_link(url: str) -> str:
    scheme, _, rest = url.partition("://")
    shown, hidden = rest[:30], rest[30:]
    if hidden:
        middle = (
            f'<span class="ellipsis">{html.escape(shown)}</span>'
            f'<span class="invisible">{html.escape(hidden)}</span>'
        )
    else:
        middle = f'<span class="">{html.escape(shown)}</span><span class="invisible"></span>'
    return (
        f'<a href="{html.escape(url)}" target="_blank" rel="nofollow noopener" translate="no">'
        f'<span class="invisible">{html.escape(scheme)}://</span>{middle}</a>'
    )


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    try:
        return min(abs(int(raw)), DEFAULT_PAGE * 2)  # Mastodon: limit_param clamps to 2x
    except ValueError:
        raise _ApiError(400, f"limit: not an integer: {raw!r}") from None


def _id_param(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise _ApiError(400, f"not a valid id: {raw!r}")
    return int(raw)


async def _form_or_json(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise _ApiError(400, "Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "Request body must be a JSON object")
        return body
    form = await request.post()
    return {key: value for key, value in form.items() if isinstance(value, str)}
