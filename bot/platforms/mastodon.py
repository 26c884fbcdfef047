"""Mastodon over plain aiohttp: the user notification stream (SSE) in, replies in thread out.

Intake is one owned task, ``mastodon-stream``, that loops: open the SSE stream
(``/api/v1/streaming/user/notification``), catch up over REST from the cursor
(``GET /api/v1/notifications?types[]=mention&since_id=…``, every page), then hand each
``mention`` notification to the sink as it arrives. The stream is opened *before* the catch-up,
so a mention posted meanwhile is in one or the other (or both: ingest is idempotent, and events
at or below the cursor are skipped). On any failure: jittered backoff, reconnect, catch up.

The cursor (source ``mastodon:notifications``) is the newest mention notification id, moved
only in the transaction that stores the mentions it covers. First start with no cursor: the
newest id is recorded and the backlog is not answered.

Replies keep the original's visibility. A Mention has no field for it, so it is remembered in
memory when the mention arrives; a reply whose mention was received before a restart (and not
yet decided) falls back to ``direct``: a private conversation is never widened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, ClassVar, Final, NamedTuple

import aiohttp
from pydantic import SecretStr
from yarl import URL

from bot.backoff import Backoff
from bot.clock import Clock
from bot.config import MASTODON_TOKEN_ENV, MastodonConfig
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

FIRST_PAGE: Final = 40  # notifications read on a first start to find the end of the backlog
SOURCE: Final = "mastodon:notifications"
TASK_NAME: Final = "mastodon-stream"
STREAM_PATH: Final = "/api/v1/streaming/user/notification"
DEFAULT_MAX_CHARACTERS: Final = 500
URL_LENGTH: Final = 23  # Mastodon counts every http(s) URL as 23 characters
VISIBILITIES: Final = frozenset(("public", "unlisted", "private", "direct"))
SAFE_VISIBILITY: Final = "direct"
VISIBILITY_MEMORY: Final = 10_000  # mentions whose visibility is remembered for replies
MAX_PAGES: Final = 1_000  # a guard against a server that never stops paging, not a quota
MAX_EVENT_BYTES: Final = 1 << 20
ELLIPSIS: Final = "…"
STOP_GRACE: Final = 5.0
RATE_WAIT_CAP: Final = timedelta(
    minutes=15
)  # Mastodon's windows are 5 min: a later reset is bogus

# What Mastodon counts as a URL (23) or a mention (``@user`` only), else one per code point.
# Only links with a dotted host are taken as URLs, and trailing punctuation is not part of one,
# so the count is never below Mastodon's.
_COUNT_RE: Final = re.compile(
    r"(?P<url>https?://(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?::[0-9]+)?(?:[/?#][^\s<>\"']*)?)"
    r"|(?<![\w/])@(?P<user>\w+)(?:@[\w.-]*\w)?"
    r"|.",
    re.DOTALL,
)
_URL_TRAILING: Final = ".,:;!?'\")]}"
_BLOCKS: Final = frozenset(("p", "div", "blockquote", "li", "pre", "ul", "ol", "h1", "h2", "h3"))


class SSEEvent(NamedTuple):
    """One dispatched server-sent event."""

    event: str
    data: str


class SSEParser:
    """An incremental ``text/event-stream`` parser: feed it bytes, get whole events back.

    Comment lines (``:thump``) are skipped; an event is dispatched only at its blank line, so
    half an event cut off by a dropped connection is never delivered.
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = bytearray()
        self._event = ""
        self._data: list[str] = []
        self._size = 0
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Add bytes from the wire; return the events they complete.

        Raises:
            ValueError: When a line or an event grows past ``max_event_bytes``.
        """
        self._buffer += chunk
        events: list[SSEEvent] = []
        start = 0
        while (end := self._buffer.find(b"\n", start)) >= 0:
            line = bytes(self._buffer[start:end]).rstrip(b"\r").decode("utf-8", "replace")
            start = end + 1
            event = self._line(line)
            if event is not None:
                events.append(event)
        del self._buffer[:start]
        if len(self._buffer) + self._size > self._max:
            raise ValueError(f"a server-sent event is larger than {self._max} bytes")
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            had_data = bool(self._data)
            self._event, self._data, self._size = "", [], 0
            return event if had_data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._size += len(value)
        return None


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCKS:
            self.parts.append("\n\n" if tag == "p" else "\n")
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.parts.append("\n")
            if tag == "pre" and self._pre > 0:
                self._pre -= 1

    def handle_data(self, data: str) -> None:
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(content: str) -> str:
    """Mastodon's status HTML as plain text: tags stripped, entities unescaped, line breaks kept.

    Paragraphs become blank-line separated, ``<br>`` a newline; a link's hidden parts
    (``<span class="invisible">https://</span>``) are kept, so URLs come back whole.
    """
    parser = _TextExtractor()
    parser.feed(content)
    parser.close()
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", "".join(parser.parts))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def status_length(text: str) -> int:
    """The length Mastodon counts: each URL as 23, ``@user@domain`` as ``@user``."""
    return sum(_cost(match) for match in _COUNT_RE.finditer(text))


def _cost(match: re.Match[str]) -> int:
    if match["url"]:
        url = match["url"]
        return URL_LENGTH + len(url) - len(url.rstrip(_URL_TRAILING))
    if match["user"]:
        return 1 + len(match["user"])
    return len(match.group(0))


def fit_status(prefix: str, text: str, limit: int) -> str:
    """``prefix`` + ``text``, cut with an ellipsis to at most ``limit`` (URLs never cut in half).

    Raises:
        PermanentError: When even the prefix does not fit.
    """
    whole = f"{prefix}{text}"
    if status_length(whole) <= limit:
        return whole
    budget = limit - status_length(prefix) - len(ELLIPSIS)
    if budget < 0:
        raise PermanentError(f"cannot fit a reply in {limit} characters")
    end = used = 0
    for match in _COUNT_RE.finditer(text):
        cost = _cost(match)
        if used + cost > budget:
            break
        end, used = match.end(), used + cost
    body = text[:end]
    mid_word = end < len(text) and not text[end].isspace() and not body[-1:].isspace()
    space = body.rfind(" ")
    if mid_word and space > 0 and space >= len(body) - 20:  # a whole word, if that costs little
        body = body[:space]
    result = f"{prefix}{body.rstrip()}{ELLIPSIS}"
    while status_length(result) > limit and body:  # tokens re-joined may count differently
        body = body[:-1]
        result = f"{prefix}{body.rstrip()}{ELLIPSIS}"
    return result


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time (``X-RateLimit-Reset``, ``created_at``) as an aware datetime, or None.

    A time without a zone is taken as UTC; an absent or unreadable one gives None.
    """
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def http_error(status: int, headers: Mapping[str, str], body: bytes) -> AdapterError:
    """Mastodon's error answer as our hierarchy (429 carries the ISO ``X-RateLimit-Reset``)."""
    detail = _error_detail(body) or str(status)
    if status == 429:
        return RateLimited(
            f"Mastodon answered 429: {detail}", parse_time(headers.get("X-RateLimit-Reset"))
        )
    if status in (401, 403):
        return AuthError(f"Mastodon refused our access token ({status}): {detail}")
    if 400 <= status < 500 and status not in (408, 425):
        return PermanentError(f"Mastodon rejected the request ({status}): {detail}")
    return TransientError(f"Mastodon answered {status}: {detail}")


def _error_detail(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    return ""


def _newer(candidate: str, than: str | None) -> bool:
    """Whether notification id ``candidate`` is after ``than`` (ids are decimal strings)."""
    if than is None:
        return True
    if candidate.isdigit() and than.isdigit():
        return int(candidate) > int(than)
    return (len(candidate), candidate) > (len(than), than)


def _id_key(value: str) -> tuple[int, str]:
    return (len(value), value)


@dataclass(frozen=True, slots=True)
class _Answer:
    payload: Any
    next_max_id: str | None


class MastodonAdapter(PlatformAdapter):
    """Mentions of our Mastodon account in (streamed), replies in thread out.

    ``retry_base``/``retry_cap`` bound the reconnect backoff; ``idle_timeout`` is how long a
    silent stream is trusted (Mastodon sends a heartbeat every 15 s); a connection that stayed
    up ``stable_after`` or delivered a mention resets the backoff.
    """

    platform: ClassVar[Platform] = Platform.MASTODON
    intake_lease = "mastodon"
    send_lease = "outbox:mastodon"

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base_url: str,
        token: SecretStr,
        settings: MastodonConfig,
        store: Store,
        clock: Clock,
        retry_base: timedelta = timedelta(seconds=1),
        retry_cap: timedelta = timedelta(minutes=5),
        idle_timeout: timedelta = timedelta(seconds=60),
        stable_after: timedelta = timedelta(seconds=60),
    ) -> None:
        self._started_at: datetime | None = None
        self._session = session
        self._base = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token.get_secret_value()}"}
        self._settings = settings
        self._store = store
        self._clock = clock
        self._retry = (retry_base, retry_cap)
        self._idle_timeout = idle_timeout.total_seconds()
        self._stable_after = stable_after.total_seconds()
        self._timeout = aiohttp.ClientTimeout(total=settings.request_timeout.total_seconds())
        self._account_id: str | None = None
        self.acct: str | None = None
        self.max_characters = DEFAULT_MAX_CHARACTERS
        self._stream_url = f"{self._base}{STREAM_PATH}"
        self._visibility: OrderedDict[str, str] = OrderedDict()
        self._cursor: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._delivered = False
        self.connected = False
        self.last_error: str | None = None
        self._faults = FaultLog(logger, "Mastodon stream", clock)

    @property
    def own_account_ids(self) -> frozenset[str]:
        """Our account's id once ``open`` has run."""
        return frozenset({self._account_id}) if self._account_id else frozenset()

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Learn our account, the character limit and the streaming URL.

        Raises:
            StartupError: The token is refused, or the instance cannot be reached.
        """
        try:
            me = (await self._get("/api/v1/accounts/verify_credentials")).payload
        except AuthError as exc:
            raise StartupError(f"{exc}; check {MASTODON_TOKEN_ENV}") from exc
        except AdapterError as exc:
            raise StartupError(f"cannot reach Mastodon at {self._base}: {exc}") from exc
        if not isinstance(me, dict) or not me.get("id"):
            raise StartupError(f"Mastodon at {self._base} answered no account for our token")
        self._account_id, self.acct = str(me["id"]), str(me.get("acct", ""))
        try:
            instance = (await self._get("/api/v2/instance")).payload
        except PermanentError as exc:  # before Mastodon 4.0: keep the defaults
            logger.warning("Mastodon: no /api/v2/instance (%s); assuming defaults", exc)
            instance = {}
        except AdapterError as exc:
            raise StartupError(f"cannot read Mastodon's instance at {self._base}: {exc}") from exc
        self._read_instance(instance)
        logger.info(
            "Mastodon: signed in as @%s (%s); %d characters per status",
            self.acct,
            self._account_id,
            self.max_characters,
        )

    def _read_instance(self, instance: Any) -> None:
        config = instance.get("configuration") if isinstance(instance, dict) else None
        config = config if isinstance(config, dict) else {}
        statuses, urls = config.get("statuses") or {}, config.get("urls") or {}
        limit = statuses.get("max_characters") if isinstance(statuses, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            self.max_characters = limit
        streaming = urls.get("streaming") if isinstance(urls, dict) else None
        if isinstance(streaming, str) and streaming:
            url = URL(streaming.rstrip("/"))
            scheme = {"wss": "https", "ws": "http"}.get(url.scheme, url.scheme)
            if scheme in ("http", "https") and url.host:
                self._stream_url = f"{url.with_scheme(scheme)}{STREAM_PATH}"

    def intake_problem(self) -> str | None:
        """Why the stream is not connected now (None: connected, or connecting first)."""
        return None if self.connected else self.last_error

    async def start(self, sink: MentionSink, supervisor: TaskSupervisor) -> None:
        """Start the stream task (``mastodon-stream``)."""
        self._stopping.clear()
        self._started_at = self._clock.now()  # first start: older mentions are the backlog
        self._task = supervisor.spawn(self._run(sink), name=TASK_NAME)

    async def stop(self) -> None:
        """End intake: the stream is closed at once; a batch being stored is finished."""
        self._stopping.set()
        if self._response is not None:
            self._response.close()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=STOP_GRACE)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def close(self) -> None:
        """Nothing to release: the session belongs to the app."""

    # -- intake ----------------------------------------------------------------------------

    async def _run(self, sink: MentionSink) -> None:
        backoff = Backoff(*self._retry)
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            began = loop.time()
            self._delivered = False
            reset_at: datetime | None = None
            level = logging.WARNING
            try:
                await self._connect_once(sink)
                error = "the server closed the stream"
            except RateLimited as exc:
                reset_at, error = exc.reset_at, str(exc)
            except AuthError as exc:  # an operator must act; keep trying, slowly and loudly
                level, error = logging.ERROR, str(exc)
            except AdapterError as exc:
                error = str(exc)
            except Exception as exc:  # e.g. the database is away: intake must stay alive
                if not self._stopping.is_set():
                    logger.exception("Mastodon stream: unexpected failure")
                error = f"{type(exc).__name__}: {exc}"
            if self._stopping.is_set():
                break
            if self._delivered or loop.time() - began >= self._stable_after:
                backoff.succeeded()  # it was a healthy connection: reconnect quickly
            wait = backoff.failed()
            if reset_at is not None:
                wait = max(wait, min(reset_at - self._clock.now(), RATE_WAIT_CAP))
            self.last_error = error
            if level >= logging.ERROR:  # an operator must act: said every time
                logger.log(
                    level,
                    "Mastodon stream: %s; reconnecting in %.1fs",
                    error,
                    wait.total_seconds(),
                )
            else:  # the first failure in a row is a warning, repeats go to DEBUG
                self._faults.failed(error, wait.total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait.total_seconds())

    async def _connect_once(self, sink: MentionSink) -> None:
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._settings.request_timeout.total_seconds(),
            sock_read=self._idle_timeout,
        )
        try:
            async with self._session.get(
                self._stream_url, headers=self._auth, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    raise http_error(resp.status, resp.headers, await resp.content.read(65536))
                self._response = resp
                try:
                    await self._catch_up(sink)
                    self.connected, self.last_error = True, None
                    self._faults.succeeded()
                    logger.info("Mastodon stream: connected (cursor %s)", self._cursor)
                    await self._read_stream(sink, resp)
                finally:
                    self._response, self.connected = None, False
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"stream connection failed: {type(exc).__name__}: {exc}") from exc

    async def _read_stream(self, sink: MentionSink, resp: aiohttp.ClientResponse) -> None:
        parser = SSEParser()
        while not self._stopping.is_set():
            try:
                chunk = await resp.content.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientError(f"stream broke: {type(exc).__name__}: {exc}") from exc
            if not chunk:
                return
            try:
                events = parser.feed(chunk)
            except ValueError as exc:
                raise TransientError(f"stream unreadable: {exc}") from exc
            await self._deliver(sink, events)

    async def _deliver(self, sink: MentionSink, events: list[SSEEvent]) -> None:
        """Submit the mentions among ``events`` as one batch, moving the cursor past them."""
        batch: list[Mention] = []
        newest: str | None = None
        for event in events:
            if event.event != "notification":
                continue
            try:
                notification = json.loads(event.data)
            except ValueError:
                logger.warning("Mastodon stream: skipping a notification that is not JSON")
                continue
            if not isinstance(notification, dict) or notification.get("type") != "mention":
                continue
            notification_id = str(notification.get("id", ""))
            if not notification_id or not _newer(notification_id, self._cursor):
                continue  # already stored by the catch-up
            mention = self._mention_from(notification)
            if mention is not None:
                batch.append(mention)
            if newest is None or _newer(notification_id, newest):
                newest = notification_id
        if newest is None:
            return
        await sink.submit(batch, CursorUpdate(SOURCE, newest))
        self._cursor = newest
        self._delivered = True

    async def _first_cursor(self) -> CursorUpdate:
        """First start: the newest mention from before we started marks the backlog's end.

        Mentions that arrive while we connect (after ``start``) are answered, not skipped.
        """
        answer = await self._get(
            "/api/v1/notifications", [("types[]", "mention"), ("limit", str(FIRST_PAGE))]
        )
        page = (
            [n for n in answer.payload if isinstance(n, dict)]
            if isinstance(answer.payload, list)
            else []
        )
        started = self._started_at or self._clock.now()
        older = [n for n in page if (parse_time(n.get("created_at")) or started) <= started]
        if older:
            newest: str | None = str(older[0]["id"])
        elif len(page) >= FIRST_PAGE:  # a full page of new ones: older ones are the backlog
            newest = str(page[-1]["id"])
        else:
            newest = None
        cursor = CursorUpdate(SOURCE, newest)
        await self._store.put_cursor(cursor)
        self._cursor = newest
        logger.info("Mastodon: first start, not answering the backlog (up to id %s)", newest)
        return cursor

    async def _catch_up(self, sink: MentionSink) -> None:
        """Submit every mention after the cursor, oldest first (first start: skip the backlog)."""
        stored = await self._store.get_cursor(SOURCE)
        if stored is None:
            stored = await self._first_cursor()
        since = stored.value
        found, newest = await self._fetch_since(since)
        moved = newest is not None and _newer(newest, since)
        # called with nothing too: the pipeline uses it to finish anything left undecided
        await sink.submit(found, CursorUpdate(SOURCE, newest) if moved else None)
        self._cursor = newest if moved else since

    async def _fetch_since(self, since: str | None) -> tuple[list[Mention], str | None]:
        found: dict[str, tuple[str, Mention]] = {}
        newest: str | None = None
        max_id: str | None = None
        for _ in range(MAX_PAGES):
            params = [("types[]", "mention"), ("limit", str(self._settings.page_size))]
            params += [("since_id", since)] if since else []
            params += [("max_id", max_id)] if max_id else []
            answer = await self._get("/api/v1/notifications", params)
            if not isinstance(answer.payload, list):
                raise TransientError("Mastodon answered notifications that are not a list")
            fresh = 0
            for notification in answer.payload:
                if not isinstance(notification, dict):
                    continue
                notification_id = str(notification.get("id", ""))
                if not notification_id or not _newer(notification_id, since):
                    continue  # the server ignored since_id: do not go back in time
                fresh += 1
                if newest is None or _newer(notification_id, newest):
                    newest = notification_id
                mention = self._mention_from(notification)
                if mention is not None:
                    found.setdefault(mention.external_id, (notification_id, mention))
            next_max = answer.next_max_id
            if not fresh or next_max is None or next_max == max_id:
                break
            max_id = next_max
        else:
            logger.error("Mastodon: still paging after %d pages; storing what we have", MAX_PAGES)
        ordered = sorted(found.values(), key=lambda pair: _id_key(pair[0]))
        return [mention for _, mention in ordered], newest

    def _mention_from(self, notification: Any) -> Mention | None:
        """A ``mention`` notification as a Mention (None for a deleted or malformed status)."""
        status = notification.get("status") if isinstance(notification, dict) else None
        if not isinstance(status, dict):
            return None
        try:
            account = status["account"]
            status_id = str(status["id"])
            reply_to = status.get("in_reply_to_id")
            text = html_to_text(str(status.get("content") or ""))
            warning = str(status.get("spoiler_text") or "").strip()
            mention = Mention(
                platform=Platform.MASTODON,
                external_id=status_id,
                author_id=str(account["id"]),
                author_handle=str(account["acct"]),
                text=f"{warning}\n\n{text}" if warning else text,
                created_at=self._created_at(status.get("created_at")),
                # the API names no conversation root: a post starts its own thread, a reply
                # is filed under what it replies to
                thread_id=str(reply_to) if reply_to else status_id,
                in_reply_to_id=str(reply_to) if reply_to else None,
                author_is_bot=bool(account.get("bot", False)),
                url=str(status.get("url") or status.get("uri") or "") or None,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            logger.warning("Mastodon: skipping a malformed notification: %r", exc)
            return None
        visibility = str(status.get("visibility", ""))
        self._visibility[status_id] = visibility if visibility in VISIBILITIES else SAFE_VISIBILITY
        self._visibility.move_to_end(status_id)
        while len(self._visibility) > VISIBILITY_MEMORY:
            self._visibility.popitem(last=False)
        return mention

    def _created_at(self, value: Any) -> datetime:
        parsed = parse_time(value) if isinstance(value, str) else None
        return parsed or self._clock.now()

    # -- replies ---------------------------------------------------------------------------

    def reply_destination(self, mention: Mention) -> dict[str, Any]:
        """In reply to the mention, addressed to its author, with its visibility.

        The visibility is known for mentions received by this process; otherwise ``direct``.
        """
        visibility = self._visibility.get(mention.external_id, SAFE_VISIBILITY)
        return {
            "in_reply_to_id": mention.external_id,
            "acct": mention.author_handle,
            "visibility": visibility,
        }

    async def send(self, destination: dict[str, Any], text: str, idempotency_key: str) -> str:
        """Post ``@acct text`` in reply, with the original's visibility; return the status id.

        ``Idempotency-Key`` makes a retry return the status already created (for an hour).
        The text is cut with an ellipsis to the instance's limit, keeping the ``@acct``.

        Raises:
            AuthError: 401/403. PermanentError: 404/422 (deleted parent, too long, …).
            RateLimited: 429, with ``X-RateLimit-Reset``. TransientError: 5xx, timeouts,
            unreachable, unreadable answers.
        """
        try:
            acct = str(destination["acct"]).lstrip("@")
            reply_to = str(destination["in_reply_to_id"])
        except KeyError as exc:
            raise PermanentError(f"not a Mastodon reply destination: {destination!r}") from exc
        visibility = str(destination.get("visibility") or SAFE_VISIBILITY)
        if visibility not in VISIBILITIES:
            visibility = SAFE_VISIBILITY
        mention = f"@{acct}"
        head, _, rest = text.partition(" ")
        if head.casefold() == mention.casefold():
            text = rest
        status = fit_status(f"{mention} ", text, self.max_characters)
        answer = await self._request(
            "POST",
            "/api/v1/statuses",
            json_body={"status": status, "in_reply_to_id": reply_to, "visibility": visibility},
            headers={"Idempotency-Key": idempotency_key},
        )
        if not isinstance(answer.payload, dict) or not answer.payload.get("id"):
            raise TransientError("Mastodon answered a status without an id")
        return str(answer.payload["id"])

    async def find_delivery(self, destination: dict[str, Any], text: str) -> str | None:
        """Always None: re-sending is safe, since the outbox re-sends with the same key.

        Mastodon answers a repeated ``Idempotency-Key`` with the status it already created,
        so a send whose outcome is unknown is settled by sending again. Mastodon keeps keys
        for one hour: a row re-sent later than that (a long outage mid-send) may post twice.
        """
        del destination, text
        return None

    # -- HTTP ------------------------------------------------------------------------------

    async def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> _Answer:
        return await self._request("GET", path, params=params)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> _Answer:
        try:
            async with self._session.request(
                method,
                f"{self._base}{path}",
                params=params,
                json=json_body,
                headers={**self._auth, **(headers or {})},
                timeout=self._timeout,
            ) as resp:
                body = await resp.read()
                if not 200 <= resp.status < 300:
                    raise http_error(resp.status, resp.headers, body)
                try:
                    payload = json.loads(body)
                except ValueError as exc:
                    raise TransientError(f"Mastodon answered {resp.status} without JSON") from exc
                return _Answer(payload, _next_max_id(resp))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"cannot reach Mastodon: {type(exc).__name__}: {exc}") from exc


def _next_max_id(resp: aiohttp.ClientResponse) -> str | None:
    link = resp.links.get("next")
    url = link.get("url") if link is not None else None
    return url.query.get("max_id") if isinstance(url, URL) else None
