"""A fake Telegram Bot API server (aiohttp) that the real python-telegram-bot talks to.

Point PTB at it with ``ApplicationBuilder().token(fake.token).base_url(fake.base_url)
.base_file_url(fake.base_file_url)``. Requests arrive as ``POST /bot<token>/<method>``
(form-encoded, multipart with files, or JSON) and are answered with the Bot API envelope
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": ...}``.

Tests act as people with :meth:`FakeTelegram.user_message` and :meth:`FakeTelegram.click`;
the updates they create are delivered by ``getUpdates`` long polling or POSTed to the webhook
when one is set. What the bot did is readable through :meth:`FakeTelegram.sent`,
:meth:`FakeTelegram.edits`, :meth:`FakeTelegram.buttons`, ``callback_answers`` and
``requests``. Every time value (message dates, flood-control windows) comes from the injected
clock; only the long-poll ``timeout`` and the webhook retry delay are real waits.

Deviations from Telegram, on purpose: webhooks may use plain ``http://`` on any port (so a test
can run the receiving server), only ``parse_mode`` HTML is parsed, and only text messages
exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import re
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp import web

from bot.sandbox.serve import serve

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from aiohttp.typedefs import Handler

METHODS: Final[tuple[str, ...]] = (
    "getMe",
    "getUpdates",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "editMessageText",
    "editMessageReplyMarkup",
    "answerCallbackQuery",
    "deleteMessage",
)
"""The Bot API methods the fake implements (Telegram matches method names case-insensitively)."""

MAX_TEXT_LENGTH: Final = 4096
"""Most characters a message text may have after entity parsing."""

MAX_CALLBACK_DATA_BYTES: Final = 64
"""Most UTF-8 bytes of an inline button's ``callback_data``."""

MAX_CALLBACK_ANSWER_LENGTH: Final = 200
"""Most characters of an ``answerCallbackQuery`` text."""

SECRET_HEADER: Final = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
"""The header carrying the webhook's ``secret_token`` on every delivery."""

UPDATE_TYPES: Final = frozenset(("message", "edited_message", "callback_query"))
"""Update types the fake can create."""

FIRST_UPDATE_ID: Final = 700_000_001
_CALLBACK_ID_BASE: Final = 4_000_000_000_000_000_000
_CHAT_INSTANCE_MULTIPLIER: Final = 2_654_435_761

_TOKEN_RE: Final = re.compile(r"[0-9]{1,19}:[A-Za-z0-9_-]{1,64}")
_BOT_USERNAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{1,29}[Bb][Oo][Tt]")
_SECRET_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,256}")
_COMMAND_RE: Final = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w@/])")
_MENTION_RE: Final = re.compile(r"(?<![A-Za-z0-9_@/])@[A-Za-z0-9_]{4,32}(?![A-Za-z0-9_])")
_TAG_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_ATTR_RE: Final = re.compile(
    r"""\s+([A-Za-z_:][-A-Za-z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?"""
)
_TAG_END_RE: Final = re.compile(r"\s*/?>")
_NAMED_ENTITIES: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY_RE: Final = re.compile(r"&(?:#([0-9]{1,7})|#[xX]([0-9A-Fa-f]{1,6})|([a-z]+));")
_HTML_TAGS: Final = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
}
# Parameters Telegram types as String: sent raw by PTB, so never JSON-decoded ("123" stays text).
_STRING_PARAMS: Final = frozenset(
    (
        "text",
        "parse_mode",
        "callback_query_id",
        "url",
        "secret_token",
        "ip_address",
        "inline_message_id",
        "business_connection_id",
        "message_effect_id",
        "caption",
    )
)
_BUTTON_ACTIONS: Final = frozenset(
    (
        "callback_data",
        "url",
        "login_url",
        "web_app",
        "switch_inline_query",
        "switch_inline_query_current_chat",
        "switch_inline_query_chosen_chat",
        "copy_text",
        "callback_game",
        "pay",
    )
)
_FAULT_KEYS: Final = frozenset(("error_code", "description", "retry_after", "delay"))
_USER_KEYS: Final = frozenset(("id", "first_name", "username", "is_bot"))
_NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are"
    " exactly the same as a current content and reply markup of the message"
)
_QUERY_INVALID: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
_WEBHOOK_CONFLICT: Final = (
    "Conflict: can't use getUpdates method while webhook is active;"
    " use deleteWebhook to delete the webhook first"
)
_POLL_CONFLICT: Final = (
    "Conflict: terminated by other getUpdates request;"
    " make sure that only one bot instance is running"
)
_EPSILON: Final = 1e-6


@dataclass(frozen=True, slots=True)
class TgFault:
    """One injected failure, used for the next request of a method.

    Attributes:
        error_code: The HTTP status and ``error_code`` to answer; any 2xx means "answer
            normally" (after ``delay``).
        description: The ``description`` of the error answer.
        retry_after: When set, ``parameters.retry_after`` (PTB raises ``RetryAfter``).
        delay: Seconds to wait before answering (to trigger client timeouts).
    """

    error_code: int = 500
    description: str = "Internal Server Error"
    retry_after: int | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if not 200 <= self.error_code <= 599:
            raise ValueError(f"error_code must be an HTTP status in 200..599: {self.error_code}")
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay}")
        if self.retry_after is not None and self.retry_after < 1:
            # PTB tests `if retry_after:`, so 0 would silently not be a RetryAfter.
            raise ValueError(f"retry_after must be >= 1 second, got {self.retry_after}")


@dataclass(frozen=True, slots=True)
class TgRequest:
    """One Bot API request as the fake saw it.

    Attributes:
        method: The method name as the fake knows it (e.g. ``sendMessage``), or as sent when
            unknown.
        chat_id: The request's integer ``chat_id``, if any.
        at: ``clock()`` when the request arrived.
        status: The HTTP status answered; 0 while still being handled, 499 when the client
            went away first (e.g. a long poll cancelled by ``updater.stop()``).
        params: The decoded parameters (JSON-encoded values such as ``reply_markup`` decoded).
    """

    method: str
    chat_id: int | None
    at: float
    status: int
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TgUser:
    """A Telegram user (a person, or a bot when ``is_bot``).

    Attributes:
        id: The user id; a private chat with this user has the same id.
        first_name: The user's first name.
        username: The handle without ``@``, if the user has one.
        is_bot: Whether the user is a bot.
    """

    id: int
    first_name: str
    username: str | None = None
    is_bot: bool = False

    def to_json(self) -> dict[str, Any]:
        """Return the Bot API ``User`` object.

        Returns:
            The JSON-ready dict.
        """
        rendered: dict[str, Any] = {
            "id": self.id,
            "is_bot": self.is_bot,
            "first_name": self.first_name,
        }
        if self.username is not None:
            rendered["username"] = self.username
        return rendered


@dataclass(slots=True)
class _Chat:
    id: int
    type: str
    title: str | None = None
    first_name: str | None = None
    username: str | None = None

    def to_json(self) -> dict[str, Any]:
        rendered: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.title is not None:
            rendered["title"] = self.title
        if self.first_name is not None:
            rendered["first_name"] = self.first_name
        if self.username is not None:
            rendered["username"] = self.username
        return rendered


@dataclass(slots=True)
class _Message:
    chat_id: int
    message_id: int
    sender: TgUser
    date: int
    text: str
    entities: list[dict[str, Any]]
    reply_to: int | None
    markup: dict[str, Any] | None
    history: list[str]
    edit_date: int | None = None


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class _Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    last_error_date: int | None = None
    last_error_message: str | None = None
    delivered: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _ApiError(Exception):
    """An error answer, raised inside a method handler and rendered by the middleware."""

    def __init__(
        self, error_code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    @classmethod
    def bad(cls, detail: str) -> _ApiError:
        return cls(400, f"Bad Request: {detail}")

    def response(self) -> web.Response:
        return _error_response(self.error_code, self.description, self.parameters)


class _ControlError(Exception):
    """Bad input to the control API (answered 400 with the message)."""


class _HtmlError(Exception):
    """HTML that Telegram's parser refuses."""


def _error_response(
    error_code: int, description: str, parameters: dict[str, Any] | None = None
) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": error_code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=error_code)


def _ok(result: object) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _decode_entity(source: str, index: int) -> tuple[str, int] | None:
    """Decode the HTML entity at ``source[index]`` (an ``&``): (text, length) or None."""
    match = _ENTITY_RE.match(source, index)
    if match is None:
        return None
    decimal, hexadecimal, name = match.groups()
    if name is not None:
        decoded = _NAMED_ENTITIES.get(name)
        return None if decoded is None else (decoded, match.end() - index)
    code = int(decimal, 10) if decimal is not None else int(hexadecimal, 16)
    if not 0 < code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), match.end() - index


def _unescape(value: str) -> str:
    parts: list[str] = []
    position = 0
    while position < len(value):
        decoded = _decode_entity(value, position) if value[position] == "&" else None
        if decoded is None:
            parts.append(value[position])
            position += 1
        else:
            parts.append(decoded[0])
            position += decoded[1]
    return "".join(parts)


@dataclass(slots=True)
class _OpenTag:
    name: str
    offset: int
    attributes: dict[str, str]
    language: str | None = None


class _HtmlParser:
    """Telegram's HTML parse mode: plain text plus entities (offsets in UTF-16 code units)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.units = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[dict[str, Any]] = []

    def parse(self) -> tuple[str, list[dict[str, Any]]]:
        source, position = self.source, 0
        while position < len(source):
            char = source[position]
            if char == "<":
                position = self._tag(position)
                continue
            decoded = _decode_entity(source, position) if char == "&" else None
            text, width = decoded if decoded is not None else (char, 1)
            self.parts.append(text)
            self.units += _utf16_len(text)
            position += width
        if self.stack:
            raise _HtmlError(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"'
            )
        self.entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
        return "".join(self.parts), self.entities

    def _tag(self, position: int) -> int:
        source = self.source
        offset = _byte_offset(source, position)
        if source.startswith("</", position):
            end = source.find(">", position)
            if end < 0:
                raise _HtmlError(f"Unclosed end tag at byte offset {offset}")
            self._close(source[position + 2 : end].strip().lower(), offset)
            return end + 1
        name_match = _TAG_NAME_RE.match(source, position + 1)
        name = name_match.group(0).lower() if name_match else ""
        if name_match is None or name not in _HTML_TAGS:
            raise _HtmlError(f'Unsupported start tag "{name}" at byte offset {offset}')
        cursor = name_match.end()
        attributes: dict[str, str] = {}
        while True:
            end_match = _TAG_END_RE.match(source, cursor)
            if end_match is not None:
                cursor = end_match.end()
                break
            attribute = _ATTR_RE.match(source, cursor)
            if attribute is None:
                raise _HtmlError(f"Unclosed start tag at byte offset {offset}")
            key, *values = attribute.groups()
            value = next((item for item in values if item is not None), "")
            attributes[key.lower()] = _unescape(value)
            cursor = attribute.end()
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise _HtmlError(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
        self.stack.append(_OpenTag(name, self.units, attributes))
        return cursor

    def _close(self, name: str, offset: int) -> None:
        if not self.stack:
            raise _HtmlError(f"Unexpected end tag at byte offset {offset}")
        tag = self.stack.pop()
        if name != tag.name:
            raise _HtmlError(
                f'Unmatched end tag at byte offset {offset}, expected "</{tag.name}>", '
                f'found "</{name}>"'
            )
        length = self.units - tag.offset
        kind = _HTML_TAGS[name]
        parent = self.stack[-1] if self.stack else None
        language = tag.attributes.get("class", "")
        if name == "code" and parent is not None and parent.name == "pre":
            if language.startswith("language-") and len(language) > len("language-"):
                parent.language = language.removeprefix("language-")
            return  # <pre><code> is one pre entity
        if length <= 0:
            return
        entity: dict[str, Any] = {"offset": tag.offset, "length": length, "type": kind}
        if name == "a":
            href = tag.attributes.get("href")
            if not href:
                return
            entity["url"] = href
        elif name == "pre" and tag.language:
            entity["language"] = tag.language
        elif name == "blockquote" and "expandable" in tag.attributes:
            entity["type"] = "expandable_blockquote"
        self.entities.append(entity)


def _trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip surrounding whitespace like Telegram, moving and clipping the entities."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = _utf16_len(text[: len(text) - len(text.lstrip())])
    end = lead + _utf16_len(stripped)
    kept: list[dict[str, Any]] = []
    for entity in entities:
        start = max(entity["offset"], lead)
        stop = min(entity["offset"] + entity["length"], end)
        if stop > start:
            kept.append({**entity, "offset": start - lead, "length": stop - start})
    return stripped, kept


def _auto_entities(text: str) -> list[dict[str, Any]]:
    """Entities Telegram adds to a plain user message: bot commands and @mentions."""
    found: list[dict[str, Any]] = []
    for kind, pattern in (("bot_command", _COMMAND_RE), ("mention", _MENTION_RE)):
        for match in pattern.finditer(text):
            found.append(
                {
                    "offset": _utf16_len(text[: match.start()]),
                    "length": _utf16_len(match.group(0)),
                    "type": kind,
                }
            )
    found.sort(key=lambda entity: entity["offset"])
    return found


def _decode_value(name: str, value: object) -> object:
    if isinstance(value, str) and name not in _STRING_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, web.FileField):
        return value.filename
    return value


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,20}", value):
        return int(value)
    return None


def _int_param(params: Mapping[str, Any], name: str, missing: str) -> int:
    if params.get(name) is None:
        raise _ApiError.bad(missing)
    value = _as_int(params[name])
    if value is None:
        raise _ApiError.bad(f"invalid {name} specified")
    return value


def _optional_int(params: Mapping[str, Any], name: str, default: int) -> int:
    if params.get(name) is None:
        return default
    value = _as_int(params[name])
    if value is None:
        raise _ApiError.bad(f"invalid {name} specified")
    return value


def _bool_param(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _str_param(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _retry_after(wait: float) -> int:
    return max(1, math.ceil(round(wait, 6)))


class FakeTelegram:
    """A fake Telegram Bot API for one bot: updates, messages, buttons, webhooks, flood control.

    Serves ``/bot<token>/<method>`` for :data:`METHODS` with the Bot API's envelope, object
    shapes and error wording (an unknown method is 404, a wrong token 401), plus a JSON
    control API whose bad input is answered 400 ``{"error": "<field>: <problem>"}``:

    - ``POST /_sandbox/message`` ``{"chat_id", "user": {"id", "first_name", "username"?},
      "text", "reply_to_message_id"?, "chat_type"?, "chat_title"?}`` → 201 and the message;
    - ``POST /_sandbox/click`` ``{"chat_id", "message_id", "user", "data"}`` → 201 and
      ``{"callback_query_id"}``;
    - ``GET /_sandbox/chats/{chat_id}`` → what :meth:`sent` returns;
    - ``POST /_sandbox/faults`` ``{"method", "faults": [{"error_code"?, "description"?,
      "retry_after"?, "delay"?}]}`` → ``{"method", "queued"}``;
    - ``GET /_sandbox/requests`` → :attr:`requests` as JSON.

    Flood control (sendMessage only, when enabled): a private chat has a token bucket of
    ``burst`` messages refilled at ``per_chat_per_second``; a group (negative chat id) takes at
    most ``per_group_per_minute`` messages in any 60 s; all chats together at most
    ``overall_per_second`` in any second. A refused message is answered 429 with
    ``retry_after`` (whole seconds until it would be accepted) and is not stored.

    Attributes:
        token: The bot token the fake accepts.
        bot: The bot's own user (``from`` of everything it sends).
        flood_control: Refuse messages over the limits with 429 when True.
        callback_answers: ``answerCallbackQuery`` calls, each
            ``{"callback_query_id", "text", "show_alert"}``.
        requests: Every Bot API request received, in order of arrival.
        flood_refusals: How many 429s flood control answered.
        webhook_retry_delay: Seconds between webhook delivery attempts after a failure.
    """

    def __init__(
        self,
        *,
        token: str = "123456:sandbox",  # noqa: S107 - the sandbox's well-known token
        bot_username: str = "carebot_bot",
        clock: Callable[[], float] = time.time,
        flood_control: bool = True,
        per_chat_per_second: float = 1.0,
        per_group_per_minute: int = 20,
        overall_per_second: int = 30,
        burst: int = 3,
    ) -> None:
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"token must look like '<bot id>:<secret>', got {token!r}")
        if not _BOT_USERNAME_RE.fullmatch(bot_username):
            raise ValueError(
                f"bot_username must be 5-32 of [A-Za-z0-9_] ending in 'bot': {bot_username!r}"
            )
        if not per_chat_per_second > 0 or per_group_per_minute < 1 or overall_per_second < 1:
            raise ValueError("flood limits must be positive")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.token = token
        self.bot = TgUser(
            id=int(token.split(":", 1)[0]),
            first_name=bot_username.replace("_", " ").title(),
            username=bot_username,
            is_bot=True,
        )
        self.flood_control = flood_control
        self.callback_answers: list[dict[str, Any]] = []
        self.requests: list[TgRequest] = []
        self.flood_refusals = 0
        self.webhook_retry_delay = 0.05
        self._clock = clock
        self._per_chat_per_second = per_chat_per_second
        self._per_group_per_minute = per_group_per_minute
        self._overall_per_second = overall_per_second
        self._burst = burst
        self._buckets: dict[int, _Bucket] = {}
        self._group_sends: dict[int, deque[float]] = {}
        self._all_sends: deque[float] = deque()
        self._faults: dict[str, deque[TgFault]] = {method: deque() for method in METHODS}
        self._canonical = {method.lower(): method for method in METHODS}
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getMe": self._get_me,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "answerCallbackQuery": self._answer_callback_query,
            "deleteMessage": self._delete_message,
        }
        self._chats: dict[int, _Chat] = {}
        self._messages: dict[int, dict[int, _Message]] = {}
        self._next_message_id: dict[int, int] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = FIRST_UPDATE_ID
        self._allowed_updates: frozenset[str] | None = None
        self._open_queries: set[str] = set()
        self._next_query = 1
        self._webhook: _Webhook | None = None
        self._poll_generation = 0
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._root: str | None = None

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
            raise RuntimeError("FakeTelegram is already running")
        self._runner, self._root = await serve(self._make_app(), host, port)
        self._closing = False
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._delivery = asyncio.create_task(self._deliver_webhooks(), name="FakeTelegram webhook")

    async def stop(self) -> None:
        """Stop serving (idempotent): end long polls, stop webhook delivery, close the server."""
        runner, self._runner, self._root = self._runner, None, None
        self._closing = True
        self._notify()
        delivery, self._delivery = self._delivery, None
        if delivery is not None:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivery
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    @property
    def root_url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:54321`` (only after :meth:`start`)."""
        if self._root is None:
            raise RuntimeError("FakeTelegram is not running; call start() first")
        return self._root

    @property
    def base_url(self) -> str:
        """What to pass to PTB's ``base_url``: ``<root>/bot`` (PTB appends the token)."""
        return f"{self.root_url}/bot"

    @property
    def base_file_url(self) -> str:
        """What to pass to PTB's ``base_file_url``: ``<root>/file/bot`` (no files are served)."""
        return f"{self.root_url}/file/bot"

    @property
    def webhook_url(self) -> str | None:
        """The webhook URL set with ``setWebhook``, or None while polling."""
        return None if self._webhook is None else self._webhook.url

    # -- what the bot did ------------------------------------------------------------------

    def sent(self, chat_id: int) -> list[dict[str, Any]]:
        """Return every message the bot sent to ``chat_id`` and has not deleted, oldest first.

        Args:
            chat_id: The chat.

        Returns:
            Each message's Bot API ``Message`` JSON in its current state (after edits).
        """
        chat = self._messages.get(chat_id, {})
        return [self._render(message) for message in chat.values() if message.sender.is_bot]

    def edits(self, chat_id: int, message_id: int) -> list[str]:
        """Return every text a message had, oldest first (the first is the text as sent).

        An edit that changes only the markup (or only the formatting) adds no entry.

        Args:
            chat_id: The chat.
            message_id: The message.

        Returns:
            The texts.

        Raises:
            KeyError: When there is no such message.
        """
        return list(self._message(chat_id, message_id).history)

    def buttons(self, chat_id: int, message_id: int) -> list[list[tuple[str, str]]]:
        """Return the rows of a message's current inline keyboard as (text, callback_data).

        A button without ``callback_data`` (e.g. a URL button) shows ``""`` as its data.

        Args:
            chat_id: The chat.
            message_id: The message.

        Returns:
            The rows; empty when the message has no inline keyboard.

        Raises:
            KeyError: When there is no such message.
        """
        markup = self._message(chat_id, message_id).markup
        if markup is None:
            return []
        return [
            [(button["text"], button.get("callback_data", "")) for button in row]
            for row in markup["inline_keyboard"]
        ]

    # -- acting as people ------------------------------------------------------------------

    def user_message(
        self,
        chat_id: int,
        user: TgUser,
        text: str,
        *,
        reply_to_message_id: int | None = None,
        chat_type: str | None = None,
        chat_title: str | None = None,
    ) -> dict[str, Any]:
        """Have ``user`` write ``text`` in a chat; the bot receives it as a ``message`` update.

        Bot commands (``/cmd``, ``/cmd@botname``) and ``@mentions`` get their entities, as
        Telegram adds them.

        Args:
            chat_id: The chat: the user's id for a private chat, negative for a group.
            user: The author.
            text: The message text (plain, no parse mode).
            reply_to_message_id: The message (the bot's or anyone's) it replies to.
            chat_type: ``private``, ``group`` or ``supergroup``; defaults to
                ``private`` for a positive chat id and ``supergroup`` for a negative one.
            chat_title: The group's title (default ``Group <id>``).

        Returns:
            The new message's Bot API JSON.

        Raises:
            ValueError: For empty text, an unknown ``reply_to_message_id``, a bad chat type or
                a private chat whose id is not the user's.
        """
        if not text.strip():
            raise ValueError("text must not be empty")
        chat = self._chat_for_user(chat_id, user, chat_type, chat_title)
        if reply_to_message_id is not None and reply_to_message_id not in self._messages.get(
            chat.id, {}
        ):
            raise ValueError(f"no message {reply_to_message_id} in chat {chat_id} to reply to")
        text, entities = _trim(text, _auto_entities(text))
        message = self._store(
            chat.id, sender=user, text=text, entities=entities, reply_to=reply_to_message_id
        )
        rendered = self._render(message)
        self._push_update("message", rendered)
        return copy.deepcopy(rendered)

    def user_edit(self, chat_id: int, message_id: int, text: str) -> dict[str, Any]:
        """Have the author of a person's message edit it; the bot gets an ``edited_message``.

        Args:
            chat_id: The chat of the message.
            message_id: The message (written with :meth:`user_message`).
            text: The new text.

        Returns:
            The edited message's Bot API JSON (with ``edit_date``).

        Raises:
            ValueError: For empty text, an unknown message or a bot's message.
        """
        if not text.strip():
            raise ValueError("text must not be empty")
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None or message.sender.is_bot:
            raise ValueError(f"no message {message_id} by a person in chat {chat_id}")
        text, entities = _trim(text, _auto_entities(text))
        if text != message.text:
            message.history.append(text)
        message.text, message.entities = text, entities
        message.edit_date = int(self._clock())
        rendered = self._render(message)
        self._push_update("edited_message", rendered)
        return copy.deepcopy(rendered)

    def click(self, chat_id: int, message_id: int, user: TgUser, data: str) -> str:
        """Have ``user`` press the inline button carrying ``data`` on a bot message.

        Args:
            chat_id: The chat of the message.
            message_id: The bot's message with the inline keyboard.
            user: Who presses.
            data: The button's ``callback_data``.

        Returns:
            The callback query id (what ``answerCallbackQuery`` must name).

        Raises:
            ValueError: When the message does not exist, is not the bot's, or has no button
                with that ``callback_data``.
        """
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None:
            raise ValueError(f"no message {message_id} in chat {chat_id}")
        if not message.sender.is_bot:
            raise ValueError(f"message {message_id} in chat {chat_id} is not the bot's")
        offered = [data for row in self.buttons(chat_id, message_id) for _, data in row if data]
        if data not in offered:
            raise ValueError(
                f"message {message_id} in chat {chat_id} has no button with callback_data "
                f"{data!r} (it has {offered})"
            )
        query_id = str(_CALLBACK_ID_BASE + self._next_query)
        self._next_query += 1
        self._open_queries.add(query_id)
        chat_instance = (chat_id * _CHAT_INSTANCE_MULTIPLIER) % (2**63)
        query = {
            "id": query_id,
            "from": user.to_json(),
            "message": self._render(message),
            "chat_instance": str(chat_instance),
            "data": data,
        }
        self._push_update("callback_query", query)
        return query_id

    def fail_next(self, method: str, *faults: TgFault) -> None:
        """Queue faults for the next requests of ``method``, consumed one per request in order.

        Args:
            method: One of :data:`METHODS` (case-insensitive).
            *faults: The faults to queue.

        Raises:
            ValueError: For a method the fake does not implement.
        """
        canonical = self._canonical.get(method.lower())
        if canonical is None:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        self._faults[canonical].extend(faults)

    # -- store -----------------------------------------------------------------------------

    def _message(self, chat_id: int, message_id: int) -> _Message:
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None:
            raise KeyError(f"no message {message_id} in chat {chat_id}")
        return message

    def _chat_for_user(
        self, chat_id: int, user: TgUser, chat_type: str | None, title: str | None
    ) -> _Chat:
        known = self._chats.get(chat_id)
        kind = chat_type or (known.type if known else None)
        kind = kind or ("private" if chat_id > 0 else "supergroup")
        if kind not in {"private", "group", "supergroup"}:
            raise ValueError(f"chat_type must be private, group or supergroup, got {kind!r}")
        if kind == "private":
            if chat_id != user.id:
                raise ValueError(f"a private chat's id is its user's id ({user.id}): {chat_id}")
            chat = _Chat(chat_id, kind, first_name=user.first_name, username=user.username)
        elif chat_id > 0:
            raise ValueError(f"a {kind} needs a negative chat id, got {chat_id}")
        else:
            previous = known.title if known else None
            chat = _Chat(chat_id, kind, title=title or previous or f"Group {chat_id}")
        self._chats[chat_id] = chat
        return chat

    def _chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            if chat_id > 0:
                chat = _Chat(chat_id, "private", first_name=f"User {chat_id}")
            else:
                chat = _Chat(chat_id, "supergroup", title=f"Group {chat_id}")
            self._chats[chat_id] = chat
        return chat

    def _store(
        self,
        chat_id: int,
        *,
        sender: TgUser,
        text: str,
        entities: list[dict[str, Any]],
        reply_to: int | None,
        markup: dict[str, Any] | None = None,
    ) -> _Message:
        self._chat(chat_id)
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        message = _Message(
            chat_id=chat_id,
            message_id=message_id,
            sender=sender,
            date=int(self._clock()),
            text=text,
            entities=entities,
            reply_to=reply_to,
            markup=markup,
            history=[text],
        )
        self._messages.setdefault(chat_id, {})[message_id] = message
        return message

    def _render(self, message: _Message, *, nested: bool = False) -> dict[str, Any]:
        rendered: dict[str, Any] = {
            "message_id": message.message_id,
            "from": message.sender.to_json(),
            "chat": self._chat(message.chat_id).to_json(),
            "date": message.date,
        }
        if message.edit_date is not None:
            rendered["edit_date"] = message.edit_date
        parent = self._messages.get(message.chat_id, {}).get(message.reply_to or 0)
        if parent is not None and not nested:
            # Telegram never nests a reply_to_message inside a reply_to_message.
            rendered["reply_to_message"] = self._render(parent, nested=True)
        rendered["text"] = message.text
        if message.entities:
            rendered["entities"] = copy.deepcopy(message.entities)
        if message.markup is not None:
            rendered["reply_markup"] = copy.deepcopy(message.markup)
        return rendered

    def _push_update(self, kind: str, payload: dict[str, Any]) -> None:
        if kind not in UPDATE_TYPES:
            raise ValueError(f"unknown update type {kind!r}")
        allowed = self._allowed_updates
        if allowed is not None and kind not in allowed:
            return  # Telegram does not even queue updates of types the bot opted out of
        self._updates.append({"update_id": self._next_update_id, kind: payload})
        self._next_update_id += 1
        self._notify()

    def _notify(self) -> None:
        """Wake every waiter (long polls, webhook delivery); they re-check their condition."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _wait_until(self, ready: Callable[[], bool], within: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while not ready():
            event = self._changed
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    await event.wait()
            except TimeoutError:
                return

    # -- flood control ---------------------------------------------------------------------

    def _flood_wait(self, chat_id: int, now: float) -> float:
        """Seconds until a message to ``chat_id`` would be accepted (0: accept now)."""
        waits = [0.0]
        if chat_id > 0:
            tokens = self._tokens(chat_id, now)
            if tokens < 1 - _EPSILON:
                waits.append((1 - tokens) / self._per_chat_per_second)
        else:
            sends = self._group_sends.setdefault(chat_id, deque())
            waits.append(self._window_wait(sends, self._per_group_per_minute, 60.0, now))
        waits.append(self._window_wait(self._all_sends, self._overall_per_second, 1.0, now))
        return max(waits)

    @staticmethod
    def _window_wait(sends: deque[float], limit: int, span: float, now: float) -> float:
        while sends and sends[0] <= now - span + _EPSILON:
            sends.popleft()
        if len(sends) < limit:
            return 0.0
        return sends[len(sends) - limit] + span - now

    def _tokens(self, chat_id: int, now: float) -> float:
        bucket = self._buckets.get(chat_id)
        if bucket is None:
            return float(self._burst)
        elapsed = max(0.0, now - bucket.at)
        return min(float(self._burst), bucket.tokens + elapsed * self._per_chat_per_second)

    def _flood_commit(self, chat_id: int, now: float) -> None:
        if chat_id > 0:
            self._buckets[chat_id] = _Bucket(self._tokens(chat_id, now) - 1, now)
        else:
            self._group_sends.setdefault(chat_id, deque()).append(now)
        self._all_sends.append(now)

    # -- HTTP plumbing ---------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api, name="api")
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._handle_file)
        app.router.add_post("/_sandbox/message", self._control_message)
        app.router.add_post("/_sandbox/click", self._control_click)
        app.router.add_get("/_sandbox/chats/{chat_id}", self._control_chat)
        app.router.add_post("/_sandbox/faults", self._control_faults)
        app.router.add_get("/_sandbox/requests", self._control_requests)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sandbox/"):
            try:
                return await handler(request)
            except _ControlError as error:
                return web.json_response({"error": str(error)}, status=400)
        try:
            return await handler(request)
        except web.HTTPException as error:
            return _error_response(error.status, HTTPStatus(error.status).phrase)

    async def _handle_file(self, _request: web.Request) -> web.Response:
        return _error_response(404, "Not Found")

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        method = self._canonical.get(name.lower(), name)
        try:
            params = await self._read_params(request)
        except ValueError:
            params = {}
            parse_failed = True
        else:
            parse_failed = False
        record = TgRequest(
            method=method,
            chat_id=_as_int(params.get("chat_id")),
            at=self._clock(),
            status=0,
            params=params,
        )
        self.requests.append(record)
        status = 499  # overwritten unless the handler is cancelled (client went away)
        try:
            if request.match_info["token"] != self.token:
                response = _error_response(401, "Unauthorized")
            elif method not in self._faults:
                response = _error_response(404, "Not Found")
            elif parse_failed:
                response = _ApiError.bad("can't parse request body").response()
            else:
                response = await self._answer(method, params)
            status = response.status
            return response
        finally:
            self._settle(record, status)

    def _settle(self, record: TgRequest, status: int) -> None:
        settled = replace(record, status=status)
        for position in range(len(self.requests) - 1, -1, -1):
            if self.requests[position] is record:
                self.requests[position] = settled
                return

    @staticmethod
    async def _read_params(request: web.Request) -> dict[str, Any]:
        raw: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = json.loads(await request.text())
                if not isinstance(body, dict):
                    raise ValueError("body is not a JSON object")
                raw.update(body)
            else:
                raw.update(await request.post())
        return {key: _decode_value(key, value) for key, value in raw.items()}

    async def _answer(self, method: str, params: dict[str, Any]) -> web.Response:
        queue = self._faults[method]
        if queue:
            fault = queue.popleft()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if not 200 <= fault.error_code < 300:
                parameters = (
                    None if fault.retry_after is None else {"retry_after": fault.retry_after}
                )
                return _error_response(fault.error_code, fault.description, parameters)
        try:
            if method == "getUpdates":
                return _ok(await self._get_updates(params))
            return _ok(self._handlers[method](params))
        except _ApiError as error:
            return error.response()

    # -- updates and webhooks --------------------------------------------------------------

    def _set_allowed_updates(self, params: Mapping[str, Any]) -> None:
        value = params.get("allowed_updates")
        if value is None:
            return  # "If not specified, the previous setting will be used."
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise _ApiError.bad("can't parse allowed updates")
        # An empty list means every type except chat_member and the reaction updates: here, all.
        self._allowed_updates = frozenset(value) if value else None

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self._webhook is not None:
            raise _ApiError(409, _WEBHOOK_CONFLICT)
        offset = _optional_int(params, "offset", 0)
        limit = min(100, max(1, _optional_int(params, "limit", 100)))
        timeout = max(0, _optional_int(params, "timeout", 0))
        self._set_allowed_updates(params)
        if offset < 0:
            self._updates = self._updates[offset:]
        elif offset:
            self._updates = [update for update in self._updates if update["update_id"] >= offset]
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()  # an older long poll still waiting is terminated (409)

        def ready() -> bool:
            superseded = generation != self._poll_generation
            return bool(self._updates) or superseded or self._closing or self._webhook is not None

        await self._wait_until(ready, timeout)
        if generation != self._poll_generation:
            raise _ApiError(409, _POLL_CONFLICT)
        if self._webhook is not None:
            raise _ApiError(409, _WEBHOOK_CONFLICT)
        return copy.deepcopy(self._updates[:limit])

    def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = _str_param(params, "url") or ""
        if not url:
            return self._delete_webhook(params)
        if not re.fullmatch(r"https?://[^\s/?#]+(?:[/?#]\S*)?", url):
            raise _ApiError.bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = _str_param(params, "secret_token")
        if secret is not None and not _SECRET_RE.fullmatch(secret):
            raise _ApiError.bad("secret token contains unallowed characters")
        max_connections = _optional_int(params, "max_connections", 40)
        if not 1 <= max_connections <= 100:
            raise _ApiError.bad("bad webhook: max_connections must be between 1 and 100")
        self._set_allowed_updates(params)
        if _bool_param(params, "drop_pending_updates"):
            self._updates.clear()
        self._webhook = _Webhook(url, secret, max_connections)
        self._notify()
        return True

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        if _bool_param(params, "drop_pending_updates"):
            self._updates.clear()
        self._webhook = None
        self._notify()
        return True

    def _get_webhook_info(self, _params: dict[str, Any]) -> dict[str, Any]:
        webhook = self._webhook
        info: dict[str, Any] = {
            "url": "" if webhook is None else webhook.url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if webhook is not None:
            info["max_connections"] = webhook.max_connections
            if webhook.last_error_date is not None:
                info["last_error_date"] = webhook.last_error_date
                info["last_error_message"] = webhook.last_error_message
        if self._allowed_updates is not None:
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    async def _deliver_webhooks(self) -> None:
        """POST pending updates to the webhook one at a time, oldest first, until stopped."""
        while not self._closing:
            await self._wait_until(
                lambda: self._closing or (self._webhook is not None and bool(self._updates)),
                None,
            )
            webhook = self._webhook
            if self._closing or webhook is None or not self._updates:
                continue
            update = self._updates[0]
            error = await self._post_update(webhook, update)
            if error is None:
                webhook.delivered += 1
                if self._updates and self._updates[0] is update:
                    self._updates.pop(0)
                continue
            webhook.last_error_date = int(self._clock())
            webhook.last_error_message = error
            await asyncio.sleep(self.webhook_retry_delay)

    async def _post_update(self, webhook: _Webhook, update: dict[str, Any]) -> str | None:
        session = self._session
        if session is None:
            return "Fake is not running"
        headers = {} if webhook.secret_token is None else {SECRET_HEADER: webhook.secret_token}
        try:
            async with session.post(webhook.url, json=update, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"Wrong response from the webhook: {response.status} {response.reason}"
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            return f"Connection failed: {error!r}"

    # -- API handlers ----------------------------------------------------------------------

    def _get_me(self, _params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.bot.to_json(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _chat_id(self, params: Mapping[str, Any]) -> int:
        if params.get("chat_id") in (None, ""):
            raise _ApiError.bad("chat_id is empty")
        value = _as_int(params["chat_id"])
        if value is None or value == 0:
            raise _ApiError.bad("chat not found")
        return value

    def _message_id(self, params: Mapping[str, Any]) -> int:
        if params.get("inline_message_id") is not None:
            raise _ApiError.bad("the fake supports chat_id + message_id only, not inline messages")
        return _int_param(params, "message_id", "message identifier is not specified")

    @staticmethod
    def _text(params: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        source = _str_param(params, "text") or ""
        parse_mode = _str_param(params, "parse_mode") or ""
        entities: list[dict[str, Any]] = []
        if parse_mode.lower() == "html":
            try:
                source, entities = _HtmlParser(source).parse()
            except _HtmlError as error:
                raise _ApiError.bad(f"can't parse entities: {error}") from None
        elif parse_mode.lower() in {"markdown", "markdownv2"}:
            raise _ApiError.bad(f"the fake supports parse_mode HTML only, not {parse_mode}")
        elif parse_mode:
            raise _ApiError.bad("unsupported parse_mode")
        else:
            given = params.get("entities")
            if given is not None:
                if not isinstance(given, list) or not all(isinstance(e, dict) for e in given):
                    raise _ApiError.bad("can't parse entities JSON object")
                entities = sorted(given, key=lambda entity: (entity.get("offset", 0),))
        text, entities = _trim(source, entities)
        if not text:
            raise _ApiError.bad("message text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise _ApiError.bad("message is too long")
        return text, entities

    @staticmethod
    def _inline_markup(params: Mapping[str, Any], *, edit: bool) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _ApiError.bad("can't parse reply keyboard markup JSON object")
        keyboard = markup.get("inline_keyboard")
        if keyboard is None:
            if edit:
                raise _ApiError.bad("inline keyboard expected")
            return None  # reply keyboards and force_reply are not part of the message
        if not isinstance(keyboard, list) or not all(isinstance(row, list) for row in keyboard):
            raise _ApiError.bad("can't parse inline keyboard markup JSON object")
        rows: list[list[dict[str, Any]]] = []
        for row in keyboard:
            for button in row:
                FakeTelegram._check_button(button)
            if row:
                rows.append(copy.deepcopy(row))
        return {"inline_keyboard": rows} if rows else None

    @staticmethod
    def _check_button(button: object) -> None:
        if not isinstance(button, dict):
            raise _ApiError.bad("can't parse inline keyboard button: object expected")
        text = button.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError.bad("BUTTON_TEXT_INVALID")
        actions = _BUTTON_ACTIONS.intersection(button)
        if not actions:
            raise _ApiError.bad("text buttons are unallowed in the inline keyboard")
        data = button.get("callback_data")
        if "callback_data" in actions and (
            not isinstance(data, str)
            or not 1 <= len(data.encode("utf-8")) <= MAX_CALLBACK_DATA_BYTES
        ):
            raise _ApiError.bad("BUTTON_DATA_INVALID")
        url = button.get("url")
        if "url" in actions and (
            not isinstance(url, str) or not re.match(r"(?:https?|tg)://\S", url)
        ):
            raise _ApiError.bad("BUTTON_URL_INVALID")

    def _reply_target(self, chat_id: int, params: Mapping[str, Any]) -> int | None:
        reply = params.get("reply_parameters")
        allow_missing = _bool_param(params, "allow_sending_without_reply")
        if reply is not None:
            if not isinstance(reply, dict):
                raise _ApiError.bad("can't parse reply parameters JSON object")
            target = _int_param(reply, "message_id", "message to be replied not found")
            if _as_int(reply.get("chat_id")) not in (None, chat_id):
                raise _ApiError.bad("the fake supports replies within the same chat only")
            allow_missing = allow_missing or _bool_param(reply, "allow_sending_without_reply")
        elif params.get("reply_to_message_id") is not None:
            target = _int_param(params, "reply_to_message_id", "message to be replied not found")
        else:
            return None
        if target in self._messages.get(chat_id, {}):
            return target
        if allow_missing:
            return None
        raise _ApiError.bad("message to be replied not found")

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text, entities = self._text(params)
        markup = self._inline_markup(params, edit=False)
        reply_to = self._reply_target(chat_id, params)
        now = self._clock()
        if self.flood_control:
            wait = self._flood_wait(chat_id, now)
            if wait > _EPSILON:
                self.flood_refusals += 1
                seconds = _retry_after(wait)
                raise _ApiError(
                    429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds}
                )
        self._flood_commit(chat_id, now)
        message = self._store(
            chat_id,
            sender=self.bot,
            text=text,
            entities=entities,
            reply_to=reply_to,
            markup=markup,
        )
        return self._render(message)

    def _editable(self, params: Mapping[str, Any]) -> _Message:
        chat_id = self._chat_id(params)
        message_id = self._message_id(params)
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None:
            raise _ApiError.bad("message to edit not found")
        if not message.sender.is_bot:
            raise _ApiError.bad("message can't be edited")
        return message

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._editable(params)
        text, entities = self._text(params)
        # Like Telegram: an edit without reply_markup removes the inline keyboard.
        markup = self._inline_markup(params, edit=True)
        if (text, entities, markup) == (message.text, message.entities, message.markup):
            raise _ApiError.bad(_NOT_MODIFIED.removeprefix("Bad Request: "))
        if text != message.text:
            message.history.append(text)
        message.text, message.entities, message.markup = text, entities, markup
        message.edit_date = int(self._clock())
        return self._render(message)

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._editable(params)
        markup = self._inline_markup(params, edit=True)
        if markup == message.markup:
            raise _ApiError.bad(_NOT_MODIFIED.removeprefix("Bad Request: "))
        message.markup = markup
        message.edit_date = int(self._clock())
        return self._render(message)

    def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = _str_param(params, "callback_query_id")
        if query_id is None or query_id not in self._open_queries:
            raise _ApiError.bad(_QUERY_INVALID.removeprefix("Bad Request: "))
        text = _str_param(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER_LENGTH:
            raise _ApiError.bad("MESSAGE_TOO_LONG")
        self._open_queries.discard(query_id)
        self.callback_answers.append(
            {
                "callback_query_id": query_id,
                "text": text,
                "show_alert": _bool_param(params, "show_alert"),
            }
        )
        return True

    def _delete_message(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat_id(params)
        message_id = _int_param(params, "message_id", "message identifier is not specified")
        if self._messages.get(chat_id, {}).pop(message_id, None) is None:
            raise _ApiError.bad("message to delete not found")
        return True

    # -- control API -----------------------------------------------------------------------

    @staticmethod
    async def _control_body(request: web.Request, allowed: Iterable[str]) -> dict[str, Any]:
        try:
            body = json.loads(await request.text())
        except ValueError:
            raise _ControlError("body: not valid JSON") from None
        if not isinstance(body, dict):
            raise _ControlError("body: expected a JSON object")
        known = frozenset(allowed)
        for key in body:
            if key not in known:
                raise _ControlError(f"{key}: unknown field (allowed: {', '.join(sorted(known))})")
        return body

    @staticmethod
    def _control_int(body: Mapping[str, Any], name: str) -> int:
        value = body.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _ControlError(f"{name}: expected an integer")
        return value

    @staticmethod
    def _control_user(value: object) -> TgUser:
        if not isinstance(value, dict):
            raise _ControlError("user: expected an object with id, first_name and username")
        for key in value:
            if key not in _USER_KEYS:
                raise _ControlError(f"user.{key}: unknown field")
        user_id, first_name = value.get("id"), value.get("first_name")
        username, is_bot = value.get("username"), value.get("is_bot", False)
        if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
            raise _ControlError("user.id: expected a positive integer")
        if not isinstance(first_name, str) or not first_name:
            raise _ControlError("user.first_name: expected a non-empty string")
        if username is not None and (
            not isinstance(username, str) or not re.fullmatch(r"[A-Za-z0-9_]{4,32}", username)
        ):
            raise _ControlError("user.username: expected 4-32 of [A-Za-z0-9_] or null")
        if not isinstance(is_bot, bool):
            raise _ControlError("user.is_bot: expected true or false")
        return TgUser(id=user_id, first_name=first_name, username=username, is_bot=is_bot)

    async def _control_message(self, request: web.Request) -> web.Response:
        fields = ("chat_id", "user", "text", "reply_to_message_id", "chat_type", "chat_title")
        body = await self._control_body(request, fields)
        chat_id = self._control_int(body, "chat_id")
        user = self._control_user(body.get("user"))
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _ControlError("text: expected a non-empty string")
        reply_to = None
        if body.get("reply_to_message_id") is not None:
            reply_to = self._control_int(body, "reply_to_message_id")
        if reply_to is not None and reply_to not in self._messages.get(chat_id, {}):
            raise _ControlError(f"reply_to_message_id: no message {reply_to} in chat {chat_id}")
        chat_type, chat_title = body.get("chat_type"), body.get("chat_title")
        if chat_type is not None and chat_type not in {"private", "group", "supergroup"}:
            raise _ControlError("chat_type: expected private, group or supergroup")
        if chat_title is not None and not isinstance(chat_title, str):
            raise _ControlError("chat_title: expected a string")
        try:
            message = self.user_message(
                chat_id,
                user,
                text,
                reply_to_message_id=reply_to,
                chat_type=chat_type,
                chat_title=chat_title,
            )
        except ValueError as error:
            raise _ControlError(f"chat_id: {error}") from None
        return web.json_response(message, status=201)

    async def _control_click(self, request: web.Request) -> web.Response:
        body = await self._control_body(request, ("chat_id", "message_id", "user", "data"))
        chat_id = self._control_int(body, "chat_id")
        message_id = self._control_int(body, "message_id")
        user = self._control_user(body.get("user"))
        data = body.get("data")
        if not isinstance(data, str) or not data:
            raise _ControlError("data: expected the button's callback_data")
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None or not message.sender.is_bot:
            raise _ControlError(f"message_id: no bot message {message_id} in chat {chat_id}")
        try:
            query_id = self.click(chat_id, message_id, user, data)
        except ValueError as error:
            raise _ControlError(f"data: {error}") from None
        return web.json_response({"callback_query_id": query_id}, status=201)

    async def _control_chat(self, request: web.Request) -> web.Response:
        raw = request.match_info["chat_id"]
        chat_id = _as_int(raw)
        if chat_id is None:
            raise _ControlError(f"chat_id: expected an integer, got {raw!r}")
        return web.json_response(self.sent(chat_id))

    async def _control_requests(self, _request: web.Request) -> web.Response:
        return web.json_response([asdict(record) for record in self.requests])

    async def _control_faults(self, request: web.Request) -> web.Response:
        body = await self._control_body(request, ("method", "faults"))
        method, items = body.get("method"), body.get("faults")
        canonical = self._canonical.get(method.lower()) if isinstance(method, str) else None
        if canonical is None:
            raise _ControlError(f"method: expected one of {', '.join(METHODS)}")
        if not isinstance(items, list) or not items:
            raise _ControlError("faults: expected a non-empty list of fault objects")
        faults = [self._parse_fault(index, item) for index, item in enumerate(items)]
        self.fail_next(canonical, *faults)
        return web.json_response({"method": canonical, "queued": len(self._faults[canonical])})

    @staticmethod
    def _parse_fault(index: int, item: object) -> TgFault:
        where = f"faults[{index}]"
        if not isinstance(item, dict):
            raise _ControlError(f"{where}: expected an object")
        for key in item:
            if key not in _FAULT_KEYS:
                raise _ControlError(f"{where}.{key}: unknown field")
        error_code = item.get("error_code", 500)
        description = item.get("description")
        retry_after = item.get("retry_after")
        delay = item.get("delay", 0.0)
        if isinstance(error_code, bool) or not isinstance(error_code, int):
            raise _ControlError(f"{where}.error_code: expected an integer HTTP status")
        if description is not None and not isinstance(description, str):
            raise _ControlError(f"{where}.description: expected a string")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int)
        ):
            raise _ControlError(f"{where}.retry_after: expected whole seconds or null")
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise _ControlError(f"{where}.delay: expected a number of seconds")
        if description is None:
            try:
                description = HTTPStatus(error_code).phrase
            except ValueError:
                description = "Error"
        try:
            return TgFault(
                error_code=error_code,
                description=description,
                retry_after=retry_after,
                delay=float(delay),
            )
        except ValueError as error:
            field_name = str(error).split(" ", 1)[0]
            raise _ControlError(f"{where}.{field_name}: {error}") from None
