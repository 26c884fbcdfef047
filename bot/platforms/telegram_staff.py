"""The staff chat on Telegram: ticket cards with buttons, replies to customers, commands.

python-telegram-bot runs inside our event loop (``initialize/start/updater.start_polling``,
never ``run_polling``), with ``.job_queue(None)``. Cards and notices are posted through the
outbox (so Telegram's limits, retries and restarts are handled in one place); button answers
and command replies are interactive and go out directly.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any, ClassVar, Final

from pydantic import SecretStr
from sqlalchemy import select
from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import logs
from bot.clock import Clock
from bot.domain import Mention, Platform
from bot.errors import (
    AdapterError,
    AuthError,
    PermanentError,
    RateLimited,
    StartupError,
    TransientError,
)
from bot.incidents import CARD_GIVE_UP
from bot.models import staff_cards
from bot.platforms.base import MentionSink, PlatformAdapter
from bot.ratelimit import SlidingWindow
from bot.staff import Card, StaffDesk, render_card
from bot.store import Store
from bot.tasks import TaskSupervisor
from handlers.staff import parse_callback

logger = logging.getLogger(__name__)

LONG_POLL: Final = 10  # seconds a getUpdates call may wait for news
ALLOWED_UPDATES: Final = ("message", "callback_query")
# Telegram's published limits (bots FAQ): 20 messages a minute in a group, about one a second
# in a private chat, 30 a second overall. We keep under them instead of collecting 429s.
CARD_WAIT: Final = timedelta(seconds=2)  # an edit queued before its card was posted waits
GROUP_PER_MINUTE: Final = 20
PRIVATE_PER_SECOND: Final = 1
OVERALL_PER_SECOND: Final = 30


class UpdateNotStored(RuntimeError):
    """A webhook update could not be stored; answering 500 makes Telegram send it again."""


def parse_update(data: object, bot: Bot | None = None) -> Update:
    """A Telegram update from a webhook body.

    Raises:
        ValueError: the body is not an update PTB can read (say which part is wrong).
    """
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        raise ValueError(  # noqa: TRY004 — the web route answers ValueError with a 400
            "not a Telegram update: an object with an integer update_id is needed"
        )
    try:
        return Update.de_json(data, bot)
    except Exception as exc:  # PTB raises whatever a malformed field provokes
        raise ValueError(f"not a valid Telegram update ({type(exc).__name__}: {exc})") from exc


def _markup(card: Card) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(text, callback_data=data) for text, data in row]
            for row in card.buttons
        ]
    )


def translate(exc: TelegramError, clock: Clock) -> AdapterError:
    """Turn PTB errors into our hierarchy."""
    if isinstance(exc, RetryAfter):
        wait = exc.retry_after
        seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
        return RateLimited(
            f"Telegram flood control: {exc.message}", clock.now() + timedelta(seconds=seconds)
        )
    if isinstance(exc, InvalidToken):
        return AuthError(f"Telegram refused the staff bot token: {exc.message}")
    if isinstance(exc, BadRequest | Forbidden):
        return PermanentError(f"Telegram refused: {exc.message}")
    if isinstance(exc, TimedOut | NetworkError):
        return TransientError(f"cannot reach Telegram: {exc.message}")
    return TransientError(f"Telegram error: {exc.message}")


class TelegramStaffChat(PlatformAdapter):
    """Posts and edits ticket cards; turns buttons, replies and commands into staff actions."""

    platform: ClassVar[Platform] = Platform.STAFF
    send_lease = "outbox:telegram"  # the bot's limits are shared by customers and staff

    def __init__(
        self,
        *,
        token: str,
        api_root: str,
        desk: StaffDesk,
        store: Store,
        clock: Clock,
        ref_prefix: str,
        webhook: tuple[str, SecretStr] | None = None,
    ) -> None:
        # PTB 22 warns on every RetryAfter unless durations are timedeltas (its next default).
        os.environ.setdefault("PTB_TIMEDELTA", "1")
        self._desk = desk
        self._store = store
        self._clock = clock
        self._prefix = ref_prefix
        self._webhook = webhook
        # Telegram gives updates to one getUpdates caller per bot: one process polls.
        self.intake_lease = None if webhook is not None else "telegram"
        root = api_root.rstrip("/")
        builder = Application.builder()
        if webhook is not None:  # updates arrive on our own HTTP server: no PTB updater
            builder = builder.updater(None)
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            builder.token(token)
            .base_url(f"{root}/bot")
            .base_file_url(f"{root}/file/bot")
            .job_queue(None)
            .connect_timeout(5)
            .read_timeout(10)
            .write_timeout(10)
            .get_updates_read_timeout(LONG_POLL + 10)
            .build()
        )
        chats = filters.Chat(chat_id=list(desk.chat_ids))
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self.app.add_handler(
            CommandHandler(
                ["queue", "stats", "ticket", "resolve", "incident"],
                self._on_command,
                filters=chats,
            )
        )
        self.app.add_handler(
            MessageHandler(chats & filters.REPLY & filters.TEXT & ~filters.COMMAND, self._on_reply)
        )
        self.app.add_error_handler(self._on_error)
        self._running = False
        self._groups = SlidingWindow(GROUP_PER_MINUTE, timedelta(minutes=1))
        self._private = SlidingWindow(PRIVATE_PER_SECOND, timedelta(seconds=1))
        self._overall = SlidingWindow(OVERALL_PER_SECOND, timedelta(seconds=1))

    def budget_left(self, chat_id: int) -> int:
        """New messages ``chat_id`` can take in the current minute (edits are not counted)."""
        now = self._clock.now()
        if chat_id < 0:
            return GROUP_PER_MINUTE - self._groups.used(chat_id, now)
        return PRIVATE_PER_SECOND * 60 - self._private.used(chat_id, now)

    def _spend(self, chat_id: int) -> None:
        """Take one new message from the budgets, or raise ``RateLimited`` scoped to the chat."""
        now = self._clock.now()
        per_chat = self._groups if chat_id < 0 else self._private
        waits = [
            w for w in (per_chat.wait_until(chat_id, now), self._overall.wait_until(0, now)) if w
        ]
        if waits:
            raise RateLimited(
                f"staff chat {chat_id}: keeping under Telegram's limits",
                max(waits),
                scope=f"chat:{chat_id}",
            )
        per_chat.record(chat_id, now)
        self._overall.record(0, now)

    @property
    def own_account_ids(self) -> frozenset[str]:
        """The staff chat produces no mentions."""
        return frozenset()

    async def open(self) -> None:
        """Initialise PTB (``getMe``): a bad token stops start-up."""
        try:
            await self.app.initialize()
        except InvalidToken:
            # PTB's message quotes the token itself: it must not reach a log or a terminal
            raise StartupError(
                "Telegram refused CAREBOT_TELEGRAM_STAFF_TOKEN (unauthorised); check its value"
            ) from None
        except TelegramError as exc:
            message = exc.message.replace(self.app.bot.token, "<token>")
            raise StartupError(f"cannot reach Telegram for the staff chat: {message}") from None
        logger.info("staff chat: signed in as @%s", self.app.bot.username)

    async def start(self, sink: MentionSink, supervisor: TaskSupervisor) -> None:
        """Start receiving updates: long polling, or Telegram posting to our webhook route."""
        del sink, supervisor  # staff messages are not mentions; PTB owns its polling task
        if self._webhook is not None:
            url, secret = self._webhook
            try:
                await self.app.bot.set_webhook(
                    url,
                    secret_token=secret.get_secret_value(),
                    allowed_updates=list(ALLOWED_UPDATES),
                )
            except TelegramError as exc:
                raise StartupError(f"Telegram refused the webhook {url}: {exc.message}") from exc
        else:
            assert self.app.updater is not None  # noqa: S101 — built with the default updater
            await self.app.updater.start_polling(
                poll_interval=0, timeout=LONG_POLL, allowed_updates=list(ALLOWED_UPDATES)
            )
        await self.app.start()
        self._running = True

    async def feed(self, data: object) -> None:
        """Handle one update posted to our webhook route, before we answer Telegram.

        Raises:
            ValueError: the body is not an update.
        """
        update = parse_update(data, self.app.bot)
        await self.app.process_update(update)
        failed: set[int] = self.app.bot_data.get("carebot_failed_updates", set())
        if update.update_id in failed:  # a handler could not store it: Telegram must retry
            failed.discard(update.update_id)
            raise UpdateNotStored(f"update {update.update_id} was not stored")

    async def stop(self) -> None:
        """Stop receiving updates; sending still works while the outbox drains."""
        if not self._running:
            return
        self._running = False
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        await self.app.stop()

    async def close(self) -> None:
        """Shut PTB down."""
        await self.app.shutdown()

    def reply_destination(self, mention: Mention) -> dict[str, Any]:
        """Staff chats are not answered as customers."""
        raise NotImplementedError("the staff chat has no customers")

    async def find_delivery(self, destination: dict[str, Any], text: str) -> str | None:
        """Telegram cannot be searched: a notice interrupted mid-send may be posted twice."""
        return None

    async def send(self, destination: dict[str, Any], text: str, idempotency_key: str) -> str:
        """Post or edit a card, or post a notice; return the Telegram message id."""
        del idempotency_key
        try:
            if "incident" in destination:
                return await self._incident_card(
                    int(destination["incident"]),
                    int(destination["chat_id"]),
                    post=bool(destination.get("post")),
                )
            if "card" in destination:
                return await self._card(
                    int(destination["card"]),
                    int(destination["chat_id"]),
                    destination.get("ping"),
                    post=bool(destination.get("post")),
                )
            return await self._notice(destination, text)
        except TelegramError as exc:
            raise translate(exc, self._clock) from exc

    async def _card_message(self, ticket_id: int, chat_id: int) -> int | None:
        async with self._store.read() as conn:
            return (
                await conn.execute(
                    select(staff_cards.c.message_id).where(
                        staff_cards.c.ticket_id == ticket_id, staff_cards.c.chat_id == chat_id
                    )
                )
            ).scalar_one_or_none()

    async def _card(self, ticket_id: int, chat_id: int, ping: str | None, *, post: bool) -> str:
        """Post the card (only the row that was queued to post it) or edit it in place."""
        loaded = await self._desk.load(ticket_id)
        if loaded is None:
            raise PermanentError(f"ticket {ticket_id} no longer exists")
        card = render_card(*loaded, self._clock.now(), self._prefix)
        message_id = await self._card_message(ticket_id, chat_id)
        if message_id is None and not post:  # an edit that overtook the first post: wait for it
            raise RateLimited(
                "the card is not posted yet",
                self._clock.now() + CARD_WAIT,
                scope=f"card:{ticket_id}:{chat_id}",
            )
        if message_id is not None:
            await self._edit(chat_id, message_id, card.html, _markup(card))
            return str(message_id)
        text = f"{card.html}\n{ping}" if ping else card.html
        self._spend(chat_id)
        sent = await self.app.bot.send_message(
            chat_id, text, parse_mode=ParseMode.HTML, reply_markup=_markup(card)
        )
        await self._store.put_card(ticket_id, chat_id, sent.message_id)
        return str(sent.message_id)

    async def _edit(
        self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None
    ) -> None:
        """Edit a card in place; an edit that changes nothing is not an error."""
        try:
            await self.app.bot.edit_message_text(
                text,
                chat_id=chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=markup,
            )
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                raise

    async def _incident_card(self, incident_id: int, chat_id: int, *, post: bool) -> str:
        """Post an incident's card (paging the leads: it escalates once) or edit it."""
        incidents = self._desk.incidents
        card = await incidents.render_card(incident_id) if incidents is not None else None
        if incidents is None or card is None:
            raise PermanentError(f"incident {incident_id} no longer exists")
        # none once fixed: an edit without a keyboard removes the buttons
        markup = _markup(Card(card.html, card.buttons)) if card.buttons else None
        message_id, declared = await incidents.card_message(incident_id)
        if message_id is None and not post:
            if declared is not None and self._clock.now() - declared > CARD_GIVE_UP:
                raise PermanentError(f"incident {incident_id}'s card was never posted")
            raise RateLimited(
                "the incident card is not posted yet",
                self._clock.now() + CARD_WAIT,
                scope=f"incident:{incident_id}",
            )
        if message_id is not None:
            await self._edit(chat_id, message_id, card.html, markup)
            return str(message_id)
        ping = incidents.ping()
        self._spend(chat_id)
        sent = await self.app.bot.send_message(
            chat_id,
            f"{card.html}\n{ping}" if ping else card.html,
            parse_mode=ParseMode.HTML,
            reply_markup=markup,
        )
        await incidents.put_card(incident_id, chat_id, sent.message_id)
        return str(sent.message_id)

    async def _notice(self, destination: dict[str, Any], text: str) -> str:
        chat_id = int(destination["chat_id"])
        reply = None
        if destination.get("reply_to_incident") is not None and self._desk.incidents:
            card_id, _ = await self._desk.incidents.card_message(
                int(destination["reply_to_incident"])
            )
            if card_id is not None:
                reply = ReplyParameters(card_id, allow_sending_without_reply=True)
        if destination.get("reply_to_card") is not None:
            card_id = await self._card_message(int(destination["reply_to_card"]), chat_id)
            if card_id is not None:
                reply = ReplyParameters(card_id, allow_sending_without_reply=True)
        if destination.get("digest"):
            text = await self._desk.digest([int(i) for i in destination["digest"]])
            if not text:
                return "digest:empty"  # every ticket in it was resolved meanwhile
        buttons = destination.get("buttons")
        markup = (
            _markup(Card(text, [[(b, d) for b, d in row] for row in buttons])) if buttons else None
        )
        self._spend(chat_id)
        sent = await self.app.bot.send_message(
            chat_id, text, parse_mode=ParseMode.HTML, reply_parameters=reply, reply_markup=markup
        )
        return str(sent.message_id)

    async def post_card(self, ticket_id: int, chat_id: int) -> bool:
        """Post a ticket's card (with buttons) in ``chat_id`` now, for ``/ticket N``."""
        loaded = await self._desk.load(ticket_id)
        if loaded is None:
            return False
        card = render_card(*loaded, self._clock.now(), self._prefix)
        try:
            self._spend(chat_id)
        except RateLimited:
            return False
        sent = await self.app.bot.send_message(
            chat_id, card.html, parse_mode=ParseMode.HTML, reply_markup=_markup(card)
        )
        await self._store.put_card(ticket_id, chat_id, sent.message_id)
        return True

    # -- updates from staff ------------------------------------------------------------------

    @staticmethod
    def _label(user: Any) -> str:
        return f"telegram:{user.id}" + (f" (@{user.username})" if user.username else "")

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query: CallbackQuery | None = update.callback_query
        if query is None:
            return
        data = query.data or ""
        if data.startswith("inc_"):
            incidents = self._desk.incidents
            if incidents is None:
                await query.answer("Incidents are turned off here.", show_alert=True)
                return
            text, refused = await incidents.button(data, query.from_user.id)
            await query.answer(text[:200], show_alert=refused)
            return
        action = parse_callback(data)
        if action is None:
            await query.answer("This button is not valid any more.", show_alert=True)
            return
        with logs.bound(ticket=action.ticket_id):  # on every log line of the action
            outcome = await self._desk.act(
                action, query.from_user.id, self._label(query.from_user)
            )
        await query.answer(outcome.message[:200], show_alert=outcome.refused)

    async def _on_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message: Message | None = update.effective_message
        if message is None or message.reply_to_message is None or message.from_user is None:
            return
        ticket_id = await self._desk.ticket_for_card(
            message.chat_id, message.reply_to_message.message_id
        )
        if ticket_id is None:
            replied = message.reply_to_message.from_user
            if replied is not None and replied.id == self.app.bot.id:  # ours, but no ticket's
                await self._answer(
                    message, "To answer a customer, reply to their ticket's card (/ticket N)."
                )
            return  # otherwise staff are talking among themselves
        with logs.bound(ticket=ticket_id):  # on every log line of the reply
            result = await self._desk.reply(
                ticket_id,
                message.from_user.id,
                self._label(message.from_user),
                message.text or "",
                message.message_id,
                chat_id=message.chat_id,
            )
        if not result.queued:
            await self._answer(message, result.message)

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        command, *args = message.text.split(maxsplit=2)
        name = command.lstrip("/").split("@")[0]
        user_id = message.from_user.id if message.from_user else 0
        if user_id not in self._desk.members and name != "resolve":  # /resolve records refusals
            await self._answer(message, "Only configured support staff can use these commands.")
            return
        if name == "incident":
            incidents = self._desk.incidents
            rest = message.text.split(maxsplit=1)[1] if " " in message.text.strip() else ""
            answer = (
                await incidents.command(rest, user_id)
                if incidents is not None
                else "Incidents are turned off (incidents.enabled in carebot.yaml)."
            )
            await self._answer(message, answer, html=True)
            return
        if name == "ticket" and args and args[0].lstrip("#").removeprefix(self._prefix).isdigit():
            ticket_id = int(args[0].lstrip("#").removeprefix(self._prefix))
            existing = await self._card_message(ticket_id, message.chat_id)
            if existing is not None:  # point at the card rather than posting another
                await self._answer(message, "Here is its card.", reply_to=existing)
                return
            if await self.post_card(ticket_id, message.chat_id):
                return
        await self._answer(message, await self._desk.command(name, args, user_id), html=True)

    async def _answer(
        self, message: Message, text: str, *, html: bool = False, reply_to: int | None = None
    ) -> None:
        """An interactive answer in a staff chat, counted in the chat's budget."""
        try:
            self._spend(message.chat_id)
        except RateLimited:
            logger.warning(
                "staff chat %s: budget spent, not answering %r", message.chat_id, text[:60]
            )
            return
        await self.app.bot.send_message(
            message.chat_id,
            text,
            parse_mode=ParseMode.HTML if html else None,
            reply_parameters=ReplyParameters(
                reply_to or message.message_id, allow_sending_without_reply=True
            ),
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        logger.error("staff chat: error while handling an update", exc_info=context.error)
