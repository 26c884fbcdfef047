"""GET /metrics: Prometheus counters move by what happened in a sandbox run."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.sandbox.telegram_fake import FakeTelegram
from bot.sandbox.x_fake import FakeX
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, polls_after, start_service
from tests.test_staff import SAM, SUPPORT, known, swept_card

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(svc: Service) -> Samples:
    assert svc.running.web is not None
    url = f"http://127.0.0.1:{svc.running.web.port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_by_what_happened(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    config = make_config(config_copy, sqlite_url, staff={"enabled": True})
    svc = await start_service(config, fake_x, telegram=fake_tg)
    try:
        await polls_after(fake_x, 1)
        before = await _scrape(svc)
        complaints = [
            fake_x.inject_mention(author=f"c{i}", text=f"@acme_care my order {i} never arrived")
            for i in range(2)
        ]
        praise = fake_x.inject_mention(author="fan", text="@acme_care you are the best, thanks!")
        for tweet in [*complaints, praise]:
            await eventually(lambda t=tweet: bool(fake_x.posts_in_reply_to(t)))
        card = await swept_card(svc, fake_tg, SUPPORT)
        await known(svc, SUPPORT, card["message_id"])
        fake_tg.user_message(
            SUPPORT,
            SAM,
            "Found it, arriving tomorrow.",
            reply_to_message_id=int(card["message_id"]),
        )
        await eventually(lambda: len(fake_x.posts) == 4)  # the staff reply reached X
        assert svc.running.reloader is not None
        svc.running.reloader.trigger()
        await eventually(lambda: svc.running.reloader.reloads == 1)  # type: ignore[union-attr]
        after = await _scrape(svc)
    finally:
        await svc.shutdown()

    def moved(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    x = {"platform": "x"}
    ticketed = {"status": "ticketed", **x}
    assert moved("carebot_mentions_total", category="complaint", **ticketed) == 2
    assert moved("carebot_mentions_total", category="praise", **ticketed) == 1
    assert moved("carebot_acks_total", result="sent", **x) == 3
    assert moved("carebot_ack_latency_seconds_count", **x) == 3
    assert moved("carebot_classifier_confidence_count", category="complaint") == 2
    assert moved("carebot_first_human_response_seconds_count") == 1
    assert moved("carebot_escalations_total", level="1") >= 1
    assert moved("carebot_config_reloads_total", result="applied") == 1
    tickets = sum(v for (name, _), v in after.items() if name == "carebot_tickets")
    assert tickets == 3


async def test_outbox_depth_and_quota_waits_show_a_platform_at_its_quota(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX
) -> None:
    config = make_config(
        config_copy, sqlite_url, outbox={"quotas": {"x": {"limit": 1, "window": "15m"}}}
    )
    svc = await start_service(config, fake_x)
    try:
        await polls_after(fake_x, 1)
        for i in range(3):
            fake_x.inject_mention(author=f"c{i}", text=f"@acme_care my order {i} never arrived")
        await eventually(lambda: len(fake_x.posts) == 1)

        async def two_waiting() -> bool:
            samples = await _scrape(svc)
            return _get(samples, "carebot_outbox_depth", platform="x", kind="ack") == 2

        await eventually(two_waiting)
        samples = await _scrape(svc)
    finally:
        await svc.shutdown()
    assert _get(samples, "carebot_rate_limit_waits_total", platform="x", reason="quota") >= 1
    assert _get(samples, "carebot_acks_total", platform="x", result="sent") == 1
