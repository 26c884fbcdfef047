"""/healthz and /readyz, and platform faults logged once: degraded, then recovered."""

from __future__ import annotations

import logging
import socket
import sqlite3
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from bot.errors import StartupError
from bot.sandbox.x_fake import FakeX, Fault
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, polls_after, start_service

COMPLAINT = "@acme_care my parcel never arrived and nobody answers"


async def _get(svc: Service, path: str) -> tuple[int, dict[str, Any]]:
    assert svc.running.web is not None
    url = f"http://127.0.0.1:{svc.running.web.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def _readyz_is(svc: Service, status: str) -> bool:
    return (await _get(svc, "/readyz"))[1].get("status") == status


async def test_a_failing_platform_is_degraded_logged_once_and_recovers(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.platforms.x")
    svc = await start_service(make_config(config_copy, db_url), fake_x)
    try:
        await polls_after(fake_x, 1)
        assert await _get(svc, "/healthz") == (200, {"status": "alive"})
        assert await _get(svc, "/readyz") == (
            200,
            {"status": "ready", "database": "ok", "sources": {"x": "ok", "mastodon": "ok"}},
        )
        # X answers 503, then a proxy's HTML error page, then works again
        fake_x.fail_next(
            "mentions", Fault(status=503), Fault(status=502, body="<html>Bad gateway</html>")
        )
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: _readyz_is(svc, "degraded"))
        status, body = await _get(svc, "/readyz")
        assert status == 200  # still takes webhooks and sends: degraded, not down
        assert body["sources"]["x"].startswith("degraded: ")
        await eventually(lambda: bool(fake_x.posts_in_reply_to(tweet)), timeout=30)
        await eventually(lambda: _readyz_is(svc, "ready"))
    finally:
        await svc.shutdown()
    x_lines = [r for r in caplog.records if r.name == "bot.platforms.x"]
    warned = [r.getMessage() for r in x_lines if r.levelno >= logging.WARNING]
    assert len([m for m in warned if "retrying in" in m]) == 1  # the first failure, once
    assert "503" in warned[0]
    assert any("recovered after 2 failure(s)" in m for m in warned)
    repeats = [r.getMessage() for r in x_lines if r.levelno == logging.DEBUG]
    assert any("failure 2" in m for m in repeats)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_readyz_is_not_ready_when_the_database_is_gone(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, db_url), fake_x)
    try:
        assert (await _get(svc, "/readyz"))[0] == 200
        url = make_url(db_url)
        conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username)
        try:
            await conn.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')
        finally:
            await conn.close()
        status, body = await _get(svc, "/readyz")
        assert status == 503
        assert body["status"] == "not ready"
        assert body["database"].startswith("unreachable")
        assert (await _get(svc, "/healthz"))[0] == 200  # alive all the same
    finally:
        await svc.shutdown()


async def test_connection_resets_and_slow_answers_on_a_send_are_retried_into_one_reply(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    config = make_config(
        config_copy,
        sqlite_url,
        platforms={"x": {"request_timeout": "1s"}},
        outbox={"backoff_base": "50ms", "backoff_max": "200ms"},
    )
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        # the connection is cut before X handles the post, then X answers after our timeout
        # without posting (a slow gateway), then it works
        fake_x.fail_next("create_tweet", Fault(reset=True), Fault(status=503, delay=1.5))
        tweet = fake_x.inject_mention(author="jenny_k", text=COMPLAINT)
        await eventually(lambda: bool(fake_x.posts_in_reply_to(tweet)), timeout=30)
        await eventually(lambda: _readyz_is(svc, "ready"))
    finally:
        await svc.shutdown()
    assert len(fake_x.posts_in_reply_to(tweet)) == 1
    attempts = [r for r in fake_x.requests if r.route == "create_tweet"]
    assert len(attempts) >= 3  # the reset, the slow one, the one that worked
    [row] = [o for o in await svc.outbox() if o["kind"] == "ack"]
    assert row["state"] == "sent"


async def test_a_taken_port_is_a_clear_startup_error(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(config_copy, sqlite_url, env={"CAREBOT_HTTP_PORT": str(port)})
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}.*HTTP_PORT"):
            await start_service(config, fake_x)


async def test_a_nul_or_a_lone_surrogate_from_a_platform_is_stored_replaced_not_lost(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, db_url), fake_x)
    try:
        await polls_after(fake_x, 1)
        tweet = fake_x.inject_mention(
            author="jenny_k", text="@acme_care my order\x00 never came \ud83d back"
        )
        await eventually(lambda: bool(fake_x.posts_in_reply_to(tweet)))
    finally:
        await svc.shutdown()
    [m] = [m for m in await svc.mentions() if m["external_id"] == tweet]
    assert m["text"] == "@acme_care my order\ufffd never came ? back"
    assert m["status"] == "ticketed"


async def test_sqlite_locked_by_another_writer_is_not_ready_then_recovers_losing_nothing(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, sqlite_url), fake_x)
    blocker = sqlite3.connect(sqlite_url.split(":///", 1)[1], isolation_level=None)
    try:
        await polls_after(fake_x, 1)
        blocker.execute("BEGIN IMMEDIATE")  # another program holds SQLite's one writer
        tweets = [
            fake_x.inject_mention(author=f"cust{i}", text=f"{COMPLAINT} (order {i})")
            for i in range(3)
        ]
        # past busy_timeout (10 s) the writes fail with "database is locked": not ready
        await eventually(lambda: _readyz_is(svc, "not ready"), timeout=60)
        status, body = await _get(svc, "/readyz")
        assert status == 503
        assert "database is locked" in body["database"]
        blocker.execute("ROLLBACK")
        await eventually(lambda: all(fake_x.posts_in_reply_to(t) for t in tweets), timeout=60)
        await eventually(lambda: _readyz_is(svc, "ready"))
    finally:
        blocker.close()
        await svc.shutdown()
    assert all(len(fake_x.posts_in_reply_to(t)) == 1 for t in tweets)
    assert len(await svc.tickets()) == 3
