"""Fuzzing (hypothesis): every input from outside is handled or refused clearly.

The properties live in ``bench/fuzz.py`` (which runs 100,000 examples each); here they run
a few hundred, and the webhook and Telegram routes are fuzzed end to end over HTTP against
a running service: never a 500, every accepted mention stored exactly once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import PROPERTIES, any_text, mention_like, run_property, update_like
from bot.platforms.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, parse_mention, sign
from bot.sandbox.telegram_fake import FakeTelegram
from bot.sandbox.x_fake import FakeX
from bot.textlimits import storable
from tests.conftest import ConfigDir
from tests.harness import Service, make_config, start_service

SECRET = "fuzz-webhook-secret-0123456789"
TG_SECRET = "fuzz-telegram-secret-0123456789"


@pytest.mark.parametrize("name", list(PROPERTIES))
def test_property_holds(name: str) -> None:
    count, failures = run_property(name, 300)
    assert failures == []
    assert count >= 100  # hypothesis really ran it (it stops early only on a failure)


class _Loop:
    """A service's event loop in a thread, so hypothesis's synchronous tests can drive it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def service(config_copy: ConfigDir, sqlite_url: str) -> Iterator[tuple[Service, int, _Loop]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = _Loop()
    fake_x, fake_tg = FakeX(), FakeTelegram()
    runner.call(fake_x.start())
    runner.call(fake_tg.start())
    config = make_config(
        config_copy,
        sqlite_url,
        env={
            "CAREBOT_WEBHOOK_SECRET": SECRET,
            "CAREBOT_TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
            "CAREBOT_HTTP_PORT": str(port),
        },
        staff={"enabled": True, "telegram_webhook_url": f"http://127.0.0.1:{port}/telegram"},
        platforms={"webhook": {"enabled": True}, "telegram": {"enabled": True}},
    )

    async def start() -> Service:
        return await start_service(config, fake_x, telegram=fake_tg)

    svc = runner.call(start())
    try:
        yield svc, port, runner
    finally:
        runner.call(svc.shutdown())
        runner.call(fake_x.stop())
        runner.call(fake_tg.stop())
        runner.close()


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 — 127.0.0.1
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


valid_mention = st.fixed_dictionaries(
    {
        "source": st.sampled_from(["fuzz", "reviews"]),
        "external_id": st.integers(0, 40).map(str),  # repeats: re-deliveries of one mention
        "text": any_text.filter(lambda t: t.strip() != "" and storable(t)),
        "author": st.fixed_dictionaries(
            {"id": st.integers(0, 5).map(str)},
            optional={"handle": st.text(min_size=1, max_size=30).filter(storable)},
        ),
    }
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_webhook_and_telegram_routes_never_fail_and_store_each_mention_once(
    service: tuple[Service, int, _Loop],
) -> None:
    svc, port, runner = service
    accepted: set[str] = set()

    @FUZZ
    @given(st.one_of(valid_mention, mention_like))
    def ingest(doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        ts = str(int(time.time()))
        headers = {
            TIMESTAMP_HEADER: ts,
            SIGNATURE_HEADER: sign(SECRET, ts, body),
            "Content-Type": "application/json",
        }
        status = _post(f"http://127.0.0.1:{port}/ingest", body, headers)
        assert status in {202, 400}, (status, doc)
        if status == 202:
            accepted.add(parse_mention(body, svc.running.store.clock.now()).external_id)  # type: ignore[union-attr]

    ingest()
    assert len(accepted) > 10  # the valid half really got through
    rows = runner.call(svc.mentions())
    stored = [r["external_id"] for r in rows if r["platform"] == "webhook"]
    assert sorted(stored) == sorted(accepted)  # each once, however often it was delivered

    @FUZZ
    @given(st.one_of(update_like, st.binary(max_size=200)))
    def telegram(update: Any) -> None:
        body = update if isinstance(update, bytes) else json.dumps(update).encode()
        headers = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
        status = _post(f"http://127.0.0.1:{port}/telegram", body, headers)
        assert status in {200, 400}, (status, update)

    telegram()
    # still serving: one more ordinary mention goes through
    body = json.dumps(
        {"source": "fuzz", "external_id": "last", "text": "hello?", "author": {"id": "z"}}
    ).encode()
    ts = str(int(time.time()))
    status = _post(
        f"http://127.0.0.1:{port}/ingest",
        body,
        {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(SECRET, ts, body)},
    )
    assert status == 202
