"""Customers on Telegram: direct messages, and group messages that mention or reply to the bot.

Staff groups are never customers, and other group chatter is ignored.

The customer side rides on the staff chat's python-telegram-bot application (one bot, one
``getUpdates`` loop: Telegram allows no second poller on a token). Acknowledgements are
replies in the same chat, at most one message a second per chat (Telegram's limit).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, timedelta
from typing import Any, ClassVar, Final

from telegram import Message, ReplyParameters, Update
from telegram.error import TelegramError
from telegram.ext import Application, ContextTypes, MessageHandler, filters

from bot.backoff import Backoff
from bot.clock import Clock
from bot.domain import Mention, Platform
from bot.errors import RateLimited
from bot.platforms.base import MentionSink, PlatformAdapter
from bot.platforms.telegram_staff import translate
from bot.ratelimit import SlidingWindow
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

MAX_TEXT: Final = 10_000
STORE_ATTEMPTS: Final = 6  # about half a minute of retries while the database is away
FAILED_UPDATES: Final = "carebot_failed_updates"  # bot_data key read by the webhook route


class TelegramAdapter(PlatformAdapter):
    """Turns customers' Telegram messages into mentions and answers them in their chat."""

    platform: ClassVar[Platform] = Platform.TELEGRAM
    send_lease = "outbox:telegram"  # the bot's limits are shared by customers and staff

    def __init__(
        self,
        *,
        app: Application[Any, Any, Any, Any, Any, Any],
        staff_chats: frozenset[int],
        clock: Clock,
    ) -> None:
        self._app = app
        self._clock = clock
        self._sink: MentionSink | None = None
        self._ready = asyncio.Event()
        self._per_chat = SlidingWindow(1, timedelta(seconds=1))
        self._per_group = SlidingWindow(20, timedelta(minutes=1))  # Telegram's group limit
        text = filters.TEXT & ~filters.COMMAND & ~filters.Chat(chat_id=list(staff_chats))
        # group -1: customers are looked at before (and independently of) the staff handlers
        app.add_handler(MessageHandler(text, self._on_message), group=-1)

    @property
    def own_account_ids(self) -> frozenset[str]:
        """The bot itself."""
        bot = self._app.bot
        return frozenset({str(bot.id)}) if self._ready.is_set() else frozenset()

    async def open(self) -> None:
        """The shared application is opened by the staff chat."""

    async def start(self, sink: MentionSink, supervisor: TaskSupervisor) -> None:
        """Start handing customers' messages to ``sink``."""
        self._sink = sink
        self._ready.set()

    async def stop(self) -> None:
        """Nothing to do: updates the shared polling already fetched must still be stored."""

    async def close(self) -> None:
        """The shared application is closed by the staff chat."""

    def _addressed_to_us(self, message: Message) -> bool:
        if message.chat.type == "private":
            return True
        bot = self._app.bot
        replied = message.reply_to_message
        if (
            replied is not None
            and replied.from_user is not None
            and replied.from_user.id == bot.id
        ):
            return True
        mentions = message.parse_entities(["mention"]).values()
        return any(m.lstrip("@").lower() == (bot.username or "").lower() for m in mentions)

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or message.from_user is None or not self._addressed_to_us(message):
            return  # group chatter that is not for us
        if self._sink is None:  # the shared polling may start a moment before we do
            await asyncio.wait_for(self._ready.wait(), timeout=30)
        sink = self._sink
        if sink is None:
            return
        mention = self.to_mention(message)
        backoff = Backoff(timedelta(seconds=0.5), timedelta(seconds=10))
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                await sink.submit([mention])  # stored before the update is done
            except Exception:
                if attempt == STORE_ATTEMPTS:
                    # webhook mode answers Telegram 500, so Telegram delivers it again
                    failed = self._app.bot_data.setdefault(FAILED_UPDATES, set())
                    failed.add(update.update_id)
                    logger.exception("telegram: could not store message %s", mention.external_id)
                    return
                await asyncio.sleep(backoff.failed().total_seconds())
            else:
                return

    @staticmethod
    def to_mention(message: Message) -> Mention:
        """A Telegram message as a mention; ids are ``<chat>:<message>`` (unique per chat)."""
        user = message.from_user
        assert user is not None  # noqa: S101 — checked by the handler
        chat = message.chat_id
        parent = message.reply_to_message
        return Mention(
            platform=Platform.TELEGRAM,
            external_id=f"{chat}:{message.message_id}",
            author_id=str(user.id),
            author_handle=user.username or user.first_name or str(user.id),
            text=(message.text or "")[:MAX_TEXT],
            created_at=message.date.astimezone(UTC),
            thread_id=f"{chat}:{parent.message_id}" if parent is not None else None,
            in_reply_to_id=f"{chat}:{parent.message_id}" if parent is not None else None,
            author_is_bot=user.is_bot,
        )

    def reply_destination(self, mention: Mention) -> dict[str, Any]:
        """A reply in the same chat, to that message."""
        chat, _, message_id = mention.external_id.rpartition(":")
        return {"chat_id": int(chat), "reply_to": int(message_id)}

    async def send(self, destination: dict[str, Any], text: str, idempotency_key: str) -> str:
        """Reply in the customer's chat; the id is ``<chat>:<message>`` like mentions'."""
        del idempotency_key
        chat = int(destination["chat_id"])
        now = self._clock.now()
        waits = [self._per_chat.wait_until(chat, now)]
        if chat < 0:  # groups: also at most 20 a minute
            waits.append(self._per_group.wait_until(chat, now))
        due = max((w for w in waits if w is not None), default=None)
        if due is not None:
            raise RateLimited(
                "keeping under Telegram's per-chat limits", due, scope=f"chat:{chat}"
            )
        self._per_chat.record(chat, now)
        if chat < 0:
            self._per_group.record(chat, now)
        try:
            sent = await self._app.bot.send_message(
                chat,
                text,
                reply_parameters=ReplyParameters(
                    int(destination["reply_to"]), allow_sending_without_reply=True
                ),
            )
        except TelegramError as exc:
            raise translate(exc, self._clock) from exc
        return f"{chat}:{sent.message_id}"

    async def find_delivery(self, destination: dict[str, Any], text: str) -> str | None:
        """Telegram cannot be searched: an ack interrupted mid-send may repeat (documented)."""
        return None
