"""Mastodon customers through the whole service: stream in, acknowledgement out, nothing lost."""

from __future__ import annotations

from bot.sandbox.mastodon_fake import FakeMastodon
from bot.sandbox.x_fake import FakeX
from tests.conftest import ConfigDir
from tests.harness import Service, eventually, make_config, start_service


def _mastodon(svc: Service) -> FakeMastodon:
    assert svc.running.fake_mastodon is not None
    return svc.running.fake_mastodon


async def test_mentions_are_acked_in_reply_with_acct_and_same_visibility_even_across_a_drop(
    config_copy: ConfigDir, db_url: str, fake_x: FakeX
) -> None:
    svc = await start_service(make_config(config_copy, db_url), fake_x)
    try:
        fake = _mastodon(svc)
        await eventually(lambda: fake.open_streams >= 1)
        direct = fake.post_mention(
            "ola@social.example",
            "my subscription was charged twice this month",
            visibility="direct",
        )
        await eventually(lambda: len(fake.posts) == 1)
        ack = fake.posts[0]
        assert ack["in_reply_to_id"] == direct
        assert ack["visibility"] == "direct"  # a direct message stays direct
        assert str(ack["status"]).startswith("@ola@social.example ")
        assert "CB-" in str(ack["status"])

        fake.drop_streams()  # mid-event: the next mention is half-sent, then the line drops
        missed = [
            fake.post_mention(f"fan{i}", f"the app keeps crashing on login, attempt {i}")
            for i in range(3)
        ]
        await eventually(lambda: len(fake.posts) == 4)
        await eventually(lambda: fake.stream_connects >= 2)
    finally:
        await svc.shutdown()
    replied = sorted(str(p["in_reply_to_id"]) for p in fake.posts)
    assert replied == sorted([direct, *missed])  # each exactly once
    rows = [m for m in await svc.mentions() if m["platform"] == "mastodon"]
    assert len(rows) == 4
    assert len({p["idempotency_key"] for p in fake.posts}) == 4
