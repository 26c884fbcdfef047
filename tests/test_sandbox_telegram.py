"""The Telegram fake, driven by the real python-telegram-bot (Bot and Application)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.sandbox.telegram_fake import SECRET_HEADER, FakeTelegram, TgFault, TgUser

T0 = 1_760_000_000.25  # a fractional start, so "rounded up" is observable
STAFF = -1001234567890
ANN = TgUser(id=501, first_name="Ann", username="ann_staff")
BOB = TgUser(id=777, first_name="Bob", username="bob_customer")

Context = ContextTypes.DEFAULT_TYPE


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without it, RetryAfter's constructor itself reads `.retry_after`, which warns
    # (PTBDeprecationWarning) and so, under filterwarnings=error, replaces the RetryAfter.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


@pytest.fixture
def clock() -> Clock:
    return Clock()


MakeFake = Callable[..., Awaitable[FakeTelegram]]


@pytest.fixture
async def make_fake(clock: Clock) -> AsyncIterator[MakeFake]:
    started: list[FakeTelegram] = []

    async def make(**kwargs: Any) -> FakeTelegram:
        fake = FakeTelegram(clock=clock, **kwargs)
        await fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        await fake.stop()


@pytest.fixture
async def fake(make_fake: MakeFake) -> FakeTelegram:
    return await make_fake()


def bot_for(fake: FakeTelegram, token: str | None = None) -> Bot:
    return Bot(token or fake.token, base_url=fake.base_url, base_file_url=fake.base_file_url)


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with bot_for(fake) as client:
        yield client


def keyboard(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text, callback_data=data) for text, data in row] for row in rows]
    )


def build_app(fake: FakeTelegram) -> Application[Any, Any, Any, Any, Any, Any]:
    return (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .job_queue(None)
        .build()
    )


@contextlib.asynccontextmanager
async def polling(
    app: Application[Any, Any, Any, Any, Any, Any],
) -> AsyncIterator[None]:
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0, timeout=timedelta(seconds=1))
    try:
        yield
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


async def next_item(queue: asyncio.Queue[Any]) -> Any:
    return await asyncio.wait_for(queue.get(), 2)


# -- Bot calls -------------------------------------------------------------------------------


async def test_get_me_is_the_bot(fake: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (123456, "carebot_bot", True)
    assert fake.bot == TgUser(123456, me.first_name, "carebot_bot", is_bot=True)
    # `async with Bot(...)` (initialize) already called getMe once.
    assert [(r.method, r.status) for r in fake.requests] == [("getMe", 200), ("getMe", 200)]


async def test_send_message_stores_html_text_and_keyboard(fake: FakeTelegram, bot: Bot) -> None:
    markup = keyboard([("Claim", "claim:1"), ("Resolve", "resolve:1")], [("Spam", "spam:1")])
    message = await bot.send_message(
        STAFF,
        "<b>Ticket #1</b> from <a href='https://x.com/bob'>@bob</a>: late &amp; lost",
        parse_mode="HTML",
        reply_markup=markup,
    )
    assert message.text == "Ticket #1 from @bob: late & lost"
    assert message.reply_markup == markup
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bold", 0, 9),
        ("text_link", 15, 4),
    ]
    assert message.entities[1].url == "https://x.com/bob"
    assert message.from_user is not None
    assert message.from_user.id == fake.bot.id
    assert message.date.timestamp() == int(T0)

    [stored] = fake.sent(STAFF)
    assert stored["message_id"] == message.message_id
    assert stored["chat"] == {"id": STAFF, "type": "supergroup", "title": f"Group {STAFF}"}
    assert stored["text"] == message.text
    assert fake.buttons(STAFF, message.message_id) == [
        [("Claim", "claim:1"), ("Resolve", "resolve:1")],
        [("Spam", "spam:1")],
    ]
    [request] = [r for r in fake.requests if r.method == "sendMessage"]
    assert request.chat_id == STAFF
    assert request.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "claim:1"
    assert fake.sent(42) == []


async def test_html_parser_handles_nesting_pre_and_entities(bot: Bot) -> None:
    message = await bot.send_message(
        STAFF,
        "  <i>a <b>b</b></i> <pre><code class='language-python'>x = 1</code></pre>"
        ' <tg-spoiler>s</tg-spoiler> <span class="tg-spoiler">t</span> &#x1F600;&#33;  ',
        parse_mode="HTML",
    )
    assert message.text == "a b x = 1 s t \U0001f600!"  # surrounding whitespace trimmed
    kinds = [(e.type, e.offset, e.length, e.language) for e in message.entities]
    assert kinds == [
        ("italic", 0, 3, None),
        ("bold", 2, 1, None),
        ("pre", 4, 5, "python"),
        ("spoiler", 10, 1, None),
        ("spoiler", 12, 1, None),
    ]


async def test_edit_message_text_keeps_history(fake: FakeTelegram, bot: Bot) -> None:
    markup = keyboard([("Claim", "claim:7")])
    sent = await bot.send_message(STAFF, "Ticket #7", reply_markup=markup)
    clock_now = int(T0)
    edited = await bot.edit_message_text(
        "Ticket #7 - claimed by Ann",
        chat_id=STAFF,
        message_id=sent.message_id,
        reply_markup=keyboard([("Resolve", "resolve:7")]),
    )
    assert isinstance(edited, type(sent))
    assert edited.edit_date is not None
    assert edited.edit_date.timestamp() == clock_now
    assert fake.edits(STAFF, sent.message_id) == ["Ticket #7", "Ticket #7 - claimed by Ann"]
    assert fake.buttons(STAFF, sent.message_id) == [[("Resolve", "resolve:7")]]
    assert fake.sent(STAFF)[0]["text"] == "Ticket #7 - claimed by Ann"

    with pytest.raises(BadRequest, match="not modified"):
        await bot.edit_message_text(
            "Ticket #7 - claimed by Ann",
            chat_id=STAFF,
            message_id=sent.message_id,
            reply_markup=keyboard([("Resolve", "resolve:7")]),
        )
    # Like Telegram, an edit without reply_markup removes the keyboard (so it is a change).
    await bot.edit_message_text(
        "Ticket #7 - claimed by Ann", chat_id=STAFF, message_id=sent.message_id
    )
    assert fake.buttons(STAFF, sent.message_id) == []
    assert fake.edits(STAFF, sent.message_id) == ["Ticket #7", "Ticket #7 - claimed by Ann"]

    with pytest.raises(BadRequest, match=r"^Message to edit not found$"):
        await bot.edit_message_text("x", chat_id=STAFF, message_id=999)


async def test_edit_reply_markup_and_delete(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(BOB.id, "hello", reply_markup=keyboard([("A", "a")]))
    await bot.edit_message_reply_markup(
        chat_id=BOB.id, message_id=sent.message_id, reply_markup=keyboard([("B", "b")])
    )
    assert fake.buttons(BOB.id, sent.message_id) == [[("B", "b")]]
    with pytest.raises(BadRequest, match="not modified"):
        await bot.edit_message_reply_markup(
            chat_id=BOB.id, message_id=sent.message_id, reply_markup=keyboard([("B", "b")])
        )
    await bot.edit_message_reply_markup(chat_id=BOB.id, message_id=sent.message_id)
    assert fake.buttons(BOB.id, sent.message_id) == []
    assert await bot.delete_message(BOB.id, sent.message_id) is True
    assert fake.sent(BOB.id) == []
    with pytest.raises(BadRequest, match=r"^Message to delete not found$"):
        await bot.delete_message(BOB.id, sent.message_id)


@pytest.mark.parametrize(
    ("html", "detail"),
    [
        ("<b>open", 'end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<script>x</script>", 'Unsupported start tag "script" at byte offset 0'),
        ("é <div>x</div>", 'Unsupported start tag "div" at byte offset 3'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ('<a href="x>y', "Unclosed start tag"),
        ("<span>x</span>", 'must have class "tg-spoiler"'),
    ],
)
async def test_bad_html_is_refused(fake: FakeTelegram, bot: Bot, html: str, detail: str) -> None:
    with pytest.raises(BadRequest, match=r"^Can't parse entities: ") as caught:
        await bot.send_message(STAFF, html, parse_mode="HTML")
    # PTB strips "Bad Request: " and str.capitalize()s the rest: all but the first letter
    # of the description are lower-cased.
    assert detail.lower() in caught.value.message
    assert fake.sent(STAFF) == []


async def test_text_and_button_limits(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(BOB.id, "a" * 4096)
    await bot.send_message(BOB.id, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"^Message is too long$"):
        await bot.send_message(BOB.id, "a" * 4097)
    with pytest.raises(BadRequest, match=r"^Message text is empty$"):
        await bot.send_message(BOB.id, " \n ")
    with pytest.raises(BadRequest, match=r"^Message text is empty$"):
        await bot.send_message(BOB.id, "<b> </b>", parse_mode="HTML")

    await bot.send_message(STAFF, "64 bytes", reply_markup=keyboard([("ok", "é" * 32)]))
    with pytest.raises(BadRequest, match=r"^Button_data_invalid$"):  # PTB capitalizes it
        await bot.send_message(STAFF, "65 bytes", reply_markup=keyboard([("x", "é" * 32 + "a")]))
    assert len(fake.sent(BOB.id)) == 2
    assert len(fake.sent(STAFF)) == 1


async def test_replies_use_reply_parameters(fake: FakeTelegram, bot: Bot) -> None:
    question = fake.user_message(BOB.id, BOB, "where is my order?")
    answer = await bot.send_message(
        BOB.id, "on its way", reply_to_message_id=question["message_id"]
    )
    assert answer.reply_to_message is not None
    assert answer.reply_to_message.text == "where is my order?"
    params = fake.requests[-1].params
    assert "reply_to_message_id" not in params  # PTB folds it into reply_parameters
    assert params["reply_parameters"] == {"message_id": question["message_id"]}

    with pytest.raises(BadRequest, match=r"^Message to be replied not found$"):
        await bot.send_message(BOB.id, "x", reply_to_message_id=999)
    lenient = await bot.send_message(
        BOB.id, "x", reply_to_message_id=999, allow_sending_without_reply=True
    )
    assert lenient.reply_to_message is None


async def test_answer_callback_query_checks_id_and_length(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(STAFF, "t", reply_markup=keyboard([("Claim", "claim:1")]))
    query_id = fake.click(STAFF, sent.message_id, ANN, "claim:1")
    with pytest.raises(BadRequest, match=r"^Message_too_long$"):
        await bot.answer_callback_query(query_id, text="x" * 201)
    assert await bot.answer_callback_query(query_id, text="x" * 200, show_alert=True)
    assert fake.callback_answers == [
        {"callback_query_id": query_id, "text": "x" * 200, "show_alert": True}
    ]
    with pytest.raises(BadRequest, match="query id is invalid"):
        await bot.answer_callback_query(query_id)  # answered already
    with pytest.raises(BadRequest, match="query id is invalid"):
        await bot.answer_callback_query("123")


async def test_click_refuses_unknown_buttons(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(STAFF, "t", reply_markup=keyboard([("Claim", "claim:1")]))
    with pytest.raises(ValueError, match="no button with callback_data 'claim:2'"):
        fake.click(STAFF, sent.message_id, ANN, "claim:2")
    with pytest.raises(ValueError, match="no message 99"):
        fake.click(STAFF, 99, ANN, "claim:1")
    user_post = fake.user_message(STAFF, ANN, "hi")
    with pytest.raises(ValueError, match="not the bot's"):
        fake.click(STAFF, user_post["message_id"], ANN, "claim:1")
    with pytest.raises(ValueError, match="private chat's id"):
        fake.user_message(12345, ANN, "hi")


async def test_unknown_method_and_wrong_token(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendHologram", api_kwargs={"chat_id": 1})
    assert fake.requests[-1].status == 404
    with pytest.raises(InvalidToken, match="was rejected by the server"):
        async with bot_for(fake, token="999:wrong"):  # initialize() calls getMe
            pass
    assert fake.requests[-1].status == 401
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake.base_url}{fake.token}/nope") as response,
    ):
        assert response.status == 404
        assert await response.json() == {
            "ok": False,
            "error_code": 404,
            "description": "Not Found",
        }


# -- getUpdates ------------------------------------------------------------------------------


async def test_get_updates_long_poll_returns_as_soon_as_an_update_arrives(
    fake: FakeTelegram, bot: Bot
) -> None:
    assert await bot.get_updates(timeout=0) == ()
    waiting = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    started = time.monotonic()
    fake.user_message(BOB.id, BOB, "hi")
    [update] = await asyncio.wait_for(waiting, 2)
    assert time.monotonic() - started < 0.5
    assert update.message is not None
    assert update.message.text == "hi"
    # Not confirmed yet: delivered again; confirmed by offset = update_id + 1.
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [update.update_id]
    assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == ()
    fake.user_message(BOB.id, BOB, "one")
    fake.user_message(BOB.id, BOB, "two")
    assert len(await bot.get_updates(limit=1, timeout=0)) == 1
    assert len(await bot.get_updates(timeout=0)) == 2
    assert await bot.get_updates(timeout=0, allowed_updates=["callback_query"]) != ()
    fake.user_message(BOB.id, BOB, "filtered out")  # the bot opted out of "message" updates
    assert len(await bot.get_updates(timeout=0)) == 2


async def test_user_edit_is_an_edited_message_update(
    fake: FakeTelegram, bot: Bot, clock: Clock
) -> None:
    posted = fake.user_message(BOB.id, BOB, "my order 12 is late")
    clock.advance(30)
    fake.user_edit(BOB.id, posted["message_id"], "my order 13 is late /help")
    first, second = await bot.get_updates(timeout=0)
    assert first.message is not None
    assert second.edited_message is not None
    assert second.edited_message.message_id == posted["message_id"]
    assert second.edited_message.edit_date is not None
    assert second.edited_message.edit_date.timestamp() == int(T0 + 30)
    assert [e.type for e in second.edited_message.entities] == ["bot_command"]
    assert fake.edits(BOB.id, posted["message_id"]) == [
        "my order 12 is late",
        "my order 13 is late /help",
    ]


async def test_a_second_get_updates_terminates_the_first(fake: FakeTelegram, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.05)
    # A Bot's getUpdates connection pool holds one connection: a second instance it is.
    async with bot_for(fake) as second_instance:
        assert await second_instance.get_updates(timeout=0) == ()
    with pytest.raises(Conflict, match="terminated by other getUpdates request"):
        await asyncio.wait_for(first, 2)


# -- Application with polling ------------------------------------------------------------------


async def test_application_receives_messages_commands_and_replies(fake: FakeTelegram) -> None:
    app = build_app(fake)
    texts: asyncio.Queue[Update] = asyncio.Queue()
    commands: asyncio.Queue[list[str]] = asyncio.Queue()

    async def on_text(update: Update, _context: Context) -> None:
        assert update.message is not None
        await update.message.reply_text(f"ack: {update.message.text}")
        await texts.put(update)

    async def on_queue(_update: Update, context: Context) -> None:
        await commands.put(list(context.args or []))

    app.add_handler(CommandHandler("queue", on_queue))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    async with polling(app):
        fake.user_message(
            STAFF, ANN, "hello @carebot_bot", chat_title="Staff", chat_type="supergroup"
        )
        update = await next_item(texts)
        assert update.effective_chat is not None
        assert (update.effective_chat.type, update.effective_chat.title) == ("supergroup", "Staff")
        assert update.message is not None
        assert [e.type for e in update.message.entities] == ["mention"]
        # In a group PTB's reply_text quotes the message by default (reply_parameters).
        [ack] = fake.sent(STAFF)
        assert ack["text"] == "ack: hello @carebot_bot"
        assert ack["reply_to_message"]["message_id"] == update.message.message_id

        fake.user_message(STAFF, ANN, "thanks!", reply_to_message_id=ack["message_id"])
        reply = await next_item(texts)
        assert reply.message is not None
        assert reply.message.reply_to_message is not None
        assert reply.message.reply_to_message.message_id == ack["message_id"]
        assert reply.message.reply_to_message.from_user is not None
        assert reply.message.reply_to_message.from_user.is_bot

        fake.user_message(STAFF, ANN, "/queue@carebot_bot open 5")
        assert await next_item(commands) == ["open", "5"]
        fake.user_message(STAFF, ANN, "/queue@other_bot")  # another bot's command: ignored
        fake.user_message(STAFF, ANN, "/queue")
        assert await next_item(commands) == []
    methods = [r.method for r in fake.requests if r.method != "getUpdates"]
    assert methods[:2] == ["getMe", "deleteWebhook"]
    assert texts.empty()


async def test_application_handles_button_clicks(fake: FakeTelegram) -> None:
    app = build_app(fake)
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def on_button(update: Update, _context: Context) -> None:
        query = update.callback_query
        assert query is not None
        assert query.data is not None
        await query.answer("Claimed")
        await query.edit_message_text(f"Ticket #1 - claimed by {query.from_user.first_name}")
        await handled.put(query.data)

    app.add_handler(CallbackQueryHandler(on_button, pattern=r"^(claim|resolve):\d+$"))
    async with polling(app):
        sent = await app.bot.send_message(
            STAFF, "Ticket #1", reply_markup=keyboard([("C", "claim:1")])
        )
        query_id = fake.click(STAFF, sent.message_id, ANN, "claim:1")
        assert await next_item(handled) == "claim:1"
    assert fake.callback_answers == [
        {"callback_query_id": query_id, "text": "Claimed", "show_alert": False}
    ]
    assert fake.edits(STAFF, sent.message_id) == ["Ticket #1", "Ticket #1 - claimed by Ann"]
    assert fake.buttons(STAFF, sent.message_id) == []  # edit_message_text dropped the keyboard


# -- flood control ---------------------------------------------------------------------------


async def test_group_gets_twenty_messages_a_minute(
    fake: FakeTelegram, bot: Bot, clock: Clock
) -> None:
    for number in range(20):
        await bot.send_message(STAFF, f"m{number}")
        clock.advance(0.5)
    clock.advance(0.25)  # now T0 + 10.25: the first message leaves the window at T0 + 60
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(STAFF, "m20")
    assert caught.value.retry_after == timedelta(seconds=50)  # ceil(49.75)
    assert fake.flood_refusals == 1
    assert len(fake.sent(STAFF)) == 20  # a refused message is not stored
    assert fake.requests[-1].status == 429
    clock.advance(49.75)
    await bot.send_message(STAFF, "m20")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(STAFF, "m21")
    assert caught.value.retry_after == timedelta(seconds=1)  # the second one leaves at +60.5
    assert fake.flood_refusals == 2
    await bot.send_message(-42, "another group has its own budget")


async def test_private_chat_burst_then_one_per_second(
    fake: FakeTelegram, bot: Bot, clock: Clock
) -> None:
    for number in range(3):
        await bot.send_message(BOB.id, f"burst {number}")
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(BOB.id, "too fast")
    assert caught.value.retry_after == timedelta(seconds=1)
    await bot.send_message(ANN.id, "another chat is not affected")
    clock.advance(1)
    await bot.send_message(BOB.id, "after a second")
    clock.advance(0.4)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(BOB.id, "too fast again")
    assert caught.value.retry_after == timedelta(seconds=1)  # 0.6 s, rounded up
    assert fake.flood_refusals == 2
    assert [m["text"] for m in fake.sent(BOB.id)] == [
        "burst 0",
        "burst 1",
        "burst 2",
        "after a second",
    ]


async def test_overall_limit_and_switching_flood_control_off(
    make_fake: MakeFake, clock: Clock
) -> None:
    fake = await make_fake(overall_per_second=5)
    async with bot_for(fake) as bot:
        for chat in range(1, 6):
            await bot.send_message(chat, "hi")
        with pytest.raises(RetryAfter):
            await bot.send_message(6, "hi")
        clock.advance(1)
        await bot.send_message(6, "hi")
        fake.flood_control = False
        for _ in range(10):
            await bot.send_message(7, "no limits")
    assert fake.flood_refusals == 1
    assert len(fake.sent(7)) == 10


# -- webhooks --------------------------------------------------------------------------------


async def test_webhook_delivery_with_secret(fake: FakeTelegram, bot: Bot) -> None:
    received: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue()
    statuses = [500]  # the first delivery fails and is retried

    async def hook(request: web.Request) -> web.Response:
        await received.put((request.headers.get(SECRET_HEADER), await request.json()))
        return web.Response(status=statuses.pop(0) if statuses else 200)

    server = web.Application()
    server.router.add_post("/tg", hook)
    runner = web.AppRunner(server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/tg"
    try:
        assert await bot.set_webhook(url, secret_token="s3cret-Token_1")
        assert fake.webhook_url == url
        with pytest.raises(Conflict, match="webhook is active"):
            await bot.get_updates(timeout=0)
        message = fake.user_message(BOB.id, BOB, "via webhook")
        first = await next_item(received)
        second = await next_item(received)
        assert first == second
        secret, body = second
        assert secret == "s3cret-Token_1"
        assert body["message"] == message
        info = await bot.get_webhook_info()
        assert info.url == url
        assert info.last_error_message is not None
        assert "500" in info.last_error_message
        assert await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
        fake.user_message(BOB.id, BOB, "via polling")
        [update] = await bot.get_updates(timeout=0)
        assert update.message is not None
        assert update.message.text == "via polling"
        assert received.empty()
    finally:
        await runner.cleanup()


async def test_set_webhook_validates(bot: Bot) -> None:
    with pytest.raises(BadRequest, match="unallowed characters"):
        await bot.set_webhook("https://example.com/tg", secret_token="no spaces")
    with pytest.raises(BadRequest, match=r"(?i)HTTPS URL"):
        await bot.set_webhook("ftp://example.com/tg")


# -- faults ----------------------------------------------------------------------------------


async def test_fail_next(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next(
        "sendMessage",
        TgFault(),
        TgFault(403, "Forbidden: bot was blocked by the user"),
        TgFault(429, "Too Many Requests: retry after 7", retry_after=7),
        TgFault(200, delay=0.05),
    )
    with pytest.raises(NetworkError, match="Internal Server Error") as caught:
        await bot.send_message(BOB.id, "1")
    assert isinstance(caught.value, TelegramError)
    with pytest.raises(Forbidden, match="bot was blocked"):
        await bot.send_message(BOB.id, "2")
    with pytest.raises(RetryAfter) as retry:
        await bot.send_message(BOB.id, "3")
    assert retry.value.retry_after == timedelta(seconds=7)
    started = time.monotonic()
    await bot.send_message(BOB.id, "4")
    assert time.monotonic() - started >= 0.05
    await bot.send_message(BOB.id, "5")
    assert [m["text"] for m in fake.sent(BOB.id)] == ["4", "5"]
    sends = [r for r in fake.requests if r.method == "sendMessage"]
    assert [r.status for r in sends] == [500, 403, 429, 200, 200]
    assert fake.flood_refusals == 0  # injected 429s are not flood control's
    with pytest.raises(ValueError, match="unknown method"):
        fake.fail_next("sendPhoto", TgFault())
    with pytest.raises(ValueError, match="retry_after"):
        TgFault(429, retry_after=0)


# -- control API -----------------------------------------------------------------------------


async def test_control_api(fake: FakeTelegram, bot: Bot) -> None:
    root = fake.root_url
    user = {"id": ANN.id, "first_name": "Ann", "username": "ann_staff"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{root}/_sandbox/message", json={"chat_id": STAFF, "user": user, "text": "hi"}
        ) as response:
            assert response.status == 201
            posted = await response.json()
        assert posted["from"] == {**user, "is_bot": False}
        [update] = await bot.get_updates(timeout=0)
        assert update.message is not None
        assert update.message.message_id == posted["message_id"]

        sent = await bot.send_message(STAFF, "t", reply_markup=keyboard([("Claim", "claim:3")]))
        click = {"chat_id": STAFF, "message_id": sent.message_id, "user": user, "data": "claim:3"}
        async with http.post(f"{root}/_sandbox/click", json=click) as response:
            assert response.status == 201
            query_id = (await response.json())["callback_query_id"]
        updates = await bot.get_updates(offset=update.update_id + 1, timeout=0)
        assert [u.callback_query.id for u in updates if u.callback_query] == [query_id]

        async with http.get(f"{root}/_sandbox/chats/{STAFF}") as response:
            assert [m["text"] for m in await response.json()] == ["t"]

        faults = {"method": "sendmessage", "faults": [{"error_code": 502}]}
        async with http.post(f"{root}/_sandbox/faults", json=faults) as response:
            assert await response.json() == {"method": "sendMessage", "queued": 1}
        with pytest.raises(NetworkError, match="Bad Gateway"):
            await bot.send_message(STAFF, "x")

        async with http.get(f"{root}/_sandbox/requests") as response:
            assert [r["method"] for r in await response.json()][-1] == "sendMessage"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("message", {"user": {"id": 1, "first_name": "A"}, "text": "x"}, "chat_id"),
        ("message", {"chat_id": 1, "user": {"id": 1}, "text": "x"}, "user.first_name"),
        ("message", {"chat_id": 1, "user": {"id": 1, "first_name": "A"}, "text": ""}, "text"),
        (
            "message",
            {"chat_id": -5, "user": {"id": 1, "first_name": "A"}, "text": "x", "y": 1},
            "y",
        ),
        (
            "message",
            {
                "chat_id": -5,
                "user": {"id": 1, "first_name": "A"},
                "text": "x",
                "reply_to_message_id": 9,
            },
            "reply_to_message_id",
        ),
        ("click", {"chat_id": -5, "message_id": 1, "user": {"id": 1, "first_name": "A"}}, "data"),
        (
            "click",
            {"chat_id": -5, "message_id": 1, "user": {"id": 1, "first_name": "A"}, "data": "d"},
            "message_id",
        ),
        ("faults", {"method": "nope", "faults": [{}]}, "method"),
        ("faults", {"method": "getMe", "faults": []}, "faults"),
        ("faults", {"method": "getMe", "faults": [{"error_code": "x"}]}, "faults[0].error_code"),
        ("faults", {"method": "getMe", "faults": [{"delay": -1}]}, "faults[0].delay"),
    ],
)
async def test_control_api_rejects_bad_input(
    fake: FakeTelegram, path: str, body: dict[str, Any], field: str
) -> None:
    root = fake.root_url
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{root}/_sandbox/{path}", json=body) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"].startswith(f"{field}:")


async def test_control_chat_rejects_a_bad_id(fake: FakeTelegram) -> None:
    root = fake.root_url
    async with aiohttp.ClientSession() as http, http.get(f"{root}/_sandbox/chats/abc") as r:
        assert r.status == 400
        assert (await r.json())["error"].startswith("chat_id:")
