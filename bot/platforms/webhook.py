"""Mentions from any other system: ``POST /ingest`` with an HMAC-SHA256 signature.

Request: headers ``X-Carebot-Timestamp`` (unix seconds) and ``X-Carebot-Signature``
(``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<raw body>"`` keyed with the shared secret);
a JSON body::

    {"source": "reviews", "external_id": "r-123", "text": "…",
     "author": {"id": "u-9", "handle": "jane", "is_bot": false},
     "created_at": "2026-11-22T10:00:00Z", "thread_id": null, "in_reply_to_id": null,
     "reply_url": "https://reviews.example/carebot-replies"}

Acknowledgements go to ``reply_url`` (when given) as a JSON POST signed the same way:
``{"source", "in_reply_to": <external_id>, "text", "idempotency_key"}``; receivers should
drop a repeated ``idempotency_key`` (a retry after a timeout repeats it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import aiohttp
from pydantic import SecretStr

from bot.clock import Clock
from bot.domain import Mention, Platform
from bot.errors import PermanentError, RateLimited, TransientError
from bot.platforms.base import MentionSink, PlatformAdapter
from bot.tasks import TaskSupervisor
from bot.textlimits import storable

TIMESTAMP_HEADER: Final = "X-Carebot-Timestamp"
SIGNATURE_HEADER: Final = "X-Carebot-Signature"
SOURCE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_TEXT: Final = 10_000
MAX_ID: Final = 64


class BadRequest(ValueError):
    """A body that cannot be a mention; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(  # noqa: PLR0917 — the parts of one signed request
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: datetime,
    tolerance: timedelta,
) -> str | None:
    """Why a request is not authentic, or None when it is."""
    if not timestamp or not re.fullmatch(r"[0-9]{1,12}", timestamp):
        return f"missing or malformed {TIMESTAMP_HEADER}"
    if abs(now.timestamp() - int(timestamp)) > tolerance.total_seconds():
        return f"{TIMESTAMP_HEADER} is outside the allowed window (replay?)"
    expected = sign(secret, timestamp, body).encode()
    if not signature or not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        return f"missing or wrong {SIGNATURE_HEADER}"
    return None


def _text(data: dict[str, Any], field: str, limit: int, *, required: bool = True) -> str | None:
    value = data.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(field, "a non-empty string is required")
    if len(value) > limit:
        raise BadRequest(field, f"at most {limit} characters")
    if not storable(value):
        raise BadRequest(field, "contains a NUL character or a lone UTF-16 surrogate")
    return value


def parse_mention(body: bytes, now: datetime) -> Mention:
    """Turn a request body into a Mention.

    Raises:
        BadRequest: naming the first field that is missing or wrong.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("body", f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise BadRequest("body", "a JSON object is required")
    source = data.get("source")
    if not isinstance(source, str) or not SOURCE_RE.match(source):
        raise BadRequest("source", "1-40 characters of a-z, 0-9, _ and -, starting alphanumeric")
    room = MAX_ID - len(source) - 1
    external_id = _text(data, "external_id", room)
    text = _text(data, "text", MAX_TEXT)
    author = data.get("author")
    if not isinstance(author, dict):
        raise BadRequest("author", 'an object {"id", "handle"} is required')
    author_id = _text(author, "id", room)
    handle = author.get("handle", author_id)
    if not isinstance(handle, str) or not handle or len(handle) > 100 or not storable(handle):
        raise BadRequest("author.handle", "a string of 1-100 characters")
    is_bot = author.get("is_bot", False)
    if not isinstance(is_bot, bool):
        raise BadRequest("author.is_bot", "true or false")
    created = now
    if data.get("created_at") is not None:
        raw = data["created_at"]
        try:
            created = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadRequest(
                "created_at", "an ISO 8601 time such as 2026-11-22T10:00:00Z"
            ) from exc
        if created.tzinfo is None:
            raise BadRequest("created_at", "include a time zone (Z or +hh:mm)")
        try:
            created = created.astimezone(UTC)
        except OverflowError as exc:  # year 1 at +hh:mm, year 9999 at -hh:mm
            raise BadRequest("created_at", "a time within years 1-9999 in UTC") from exc
    reply_url = _text(data, "reply_url", 1000, required=False)
    if reply_url is not None and not reply_url.startswith(("https://", "http://")):
        raise BadRequest("reply_url", "an http(s) URL")
    thread = _text(data, "thread_id", room, required=False)
    parent = _text(data, "in_reply_to_id", room, required=False)
    return Mention(
        platform=Platform.WEBHOOK,
        external_id=f"{source}:{external_id}",
        author_id=f"{source}:{author_id}",
        author_handle=handle,
        text=str(text),
        created_at=created,
        thread_id=f"{source}:{thread}" if thread else None,
        in_reply_to_id=f"{source}:{parent}" if parent else None,
        author_is_bot=is_bot,
        reply_url=reply_url,
    )


class WebhookAdapter(PlatformAdapter):
    """Replies to webhook sources; intake is the web server's ``/ingest`` route."""

    platform: ClassVar[Platform] = Platform.WEBHOOK

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        secret: SecretStr,
        clock: Clock,
        timeout: timedelta,
    ) -> None:
        self._session = session
        self._secret = secret
        self._clock = clock
        self._timeout = timeout

    @property
    def own_account_ids(self) -> frozenset[str]:
        """Webhook sources have no account of ours."""
        return frozenset()

    async def open(self) -> None:
        """Nothing to verify: sources authenticate to us."""

    async def start(self, sink: MentionSink, supervisor: TaskSupervisor) -> None:
        """Intake is pushed by the ``/ingest`` route."""

    async def stop(self) -> None:
        """Nothing to stop."""

    async def close(self) -> None:
        """Nothing to release."""

    def reply_destination(self, mention: Mention) -> dict[str, Any] | None:
        """The source's callback, or None (no acknowledgement) when it gave none."""
        if not mention.reply_url:
            return None
        source, _, external_id = mention.external_id.partition(":")
        return {"url": mention.reply_url, "source": source, "in_reply_to": external_id}

    async def send(self, destination: dict[str, Any], text: str, idempotency_key: str) -> str:
        """POST the reply, signed; return the receiver's id for it (or our key)."""
        body = json.dumps(
            {
                "source": destination["source"],
                "in_reply_to": destination["in_reply_to"],
                "text": text,
                "idempotency_key": idempotency_key,
            }
        ).encode()
        stamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(self._secret.get_secret_value(), stamp, body),
        }
        try:
            async with asyncio.timeout(self._timeout.total_seconds()):
                async with self._session.post(
                    destination["url"], data=body, headers=headers
                ) as resp:
                    payload = await resp.text()
                    status, retry = resp.status, resp.headers.get("Retry-After", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"reply_url unreachable: {type(exc).__name__}") from exc
        if status == 429:
            wait = int(retry) if retry.isdigit() else None
            reset = self._clock.now() + timedelta(seconds=wait) if wait is not None else None
            raise RateLimited("the source answered 429", reset, scope=destination["url"])
        if status >= 500:
            raise TransientError(f"the source answered {status}")
        if status >= 400:
            raise PermanentError(f"the source refused the reply ({status}): {payload[:200]}")
        try:
            answer = json.loads(payload) if payload else {}
        except json.JSONDecodeError:
            answer = {}
        their_id = answer.get("id") if isinstance(answer, dict) else None
        # prefixed like the source's own ids, so a reply to our reply finds its ticket
        return f"{destination['source']}:{their_id or idempotency_key}"

    async def find_delivery(self, destination: dict[str, Any], text: str) -> str | None:
        """Sources cannot be searched: a retry repeats the idempotency key instead."""
        return None
