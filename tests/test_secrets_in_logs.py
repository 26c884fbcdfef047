"""No secret reaches the logs, even with every library (tweepy, PTB, httpx) at DEBUG."""

from __future__ import annotations

import asyncio
import io
import logging

from bot.app import Running, run
from bot.config import load_config
from bot.logs import REDACTED, configure
from bot.sandbox.telegram_fake import FakeTelegram
from bot.sandbox.x_fake import FakeX
from tests.conftest import ConfigDir
from tests.harness import eventually, polls_after

STAFF_TOKEN = "7264519038:AAFstaffTokenNeverInLogs9x"
X_SECRETS = {
    "CAREBOT_X_BEARER_TOKEN": "AAAAbearerNeverInLogs1234567",
    "CAREBOT_X_CONSUMER_KEY": "consumerKeyNeverInLogs42",
    "CAREBOT_X_CONSUMER_SECRET": "consumerSecretNeverInLogs77",
    "CAREBOT_X_ACCESS_TOKEN": "1000-accessTokenNeverInLogs5",
    "CAREBOT_X_ACCESS_TOKEN_SECRET": "accessSecretNeverInLogs31",
}
WEBHOOK_SECRET = "webhookSecretNeverInLogs2026"
LIBRARIES = ("tweepy", "telegram", "httpx", "httpcore", "aiohttp", "apscheduler", "bot")
SUPPORT = -1001000000001


async def test_no_token_in_any_log_line_at_debug(
    config_copy: ConfigDir, db_url: str, restore_logging: None
) -> None:
    fake_x, fake_tg = FakeX(), FakeTelegram(token=STAFF_TOKEN)
    await fake_x.start()
    await fake_tg.start()
    config_copy.update(
        "carebot.yaml",
        sandbox={"enabled": False},
        platforms={
            "x": {"enabled": True, "api_base_url": fake_x.base_url, "poll_interval": "100ms"},
            "webhook": {"enabled": True},
        },
        staff={"enabled": True, "telegram_api_base_url": fake_tg.root_url},
        http={"port": 0},
    )
    if db_url.startswith("postgresql"):  # trust auth ignores it; the URL still carries it
        db_url = db_url.replace("postgres@", "postgres:dbPasswordNeverInLogs@", 1)
    env = {
        "CAREBOT_DATABASE_URL": db_url,
        "CAREBOT_TELEGRAM_STAFF_TOKEN": STAFF_TOKEN,
        "CAREBOT_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **X_SECRETS,
    }
    config = load_config(config_copy.path, env)
    secrets = config.secret_values()
    assert set(X_SECRETS.values()) | {STAFF_TOKEN, WEBHOOK_SECRET} <= set(secrets)

    out = io.StringIO()
    configure("DEBUG", secrets, stream=out)
    for name in LIBRARIES:  # below the floors carebot keeps: the handler must still mask
        logging.getLogger(name).setLevel(logging.DEBUG)

    stop, running = asyncio.Event(), Running()
    task = asyncio.create_task(run(config, stop, running=running))
    try:
        await asyncio.wait_for(running.started.wait(), 30)
        await polls_after(fake_x, 1)  # the first poll marks where the backlog ends
        tweet = fake_x.inject_mention(author="jenny_k", text="@acme_care my parcel is lost")
        await eventually(lambda: bool(fake_x.posts_in_reply_to(tweet)))
        await eventually(lambda: bool(fake_tg.sent(SUPPORT)))
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await fake_x.stop()
        await fake_tg.stop()

    logged = out.getvalue()
    for secret in secrets:
        assert secret not in logged, f"a secret reached the logs: {secret[:4]}…"
    if "dbPasswordNeverInLogs" in db_url:
        assert "dbPasswordNeverInLogs" not in logged
    # the libraries did log their requests, with the secrets masked
    assert "Making API request" in logged  # tweepy, with its Authorization headers
    assert f"Bearer {REDACTED}" in logged
    assert f"/bot{REDACTED}/sendMessage" in logged  # httpx: PTB's URLs carry the token
    assert '"outbox_id"' in logged  # JSON lines (not a terminal), a send's lines bound to its row
