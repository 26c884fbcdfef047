"""Hot reload: a valid change is swapped in whole, an invalid one refused and reported."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot.sandbox.telegram_fake import FakeTelegram
from bot.sandbox.x_fake import FakeX
from tests.conftest import REPO, ConfigDir
from tests.harness import eventually, make_config, polls_after, start_service

LEADS = -1001000000002  # the default config's alerts group
COMPLAINT = "@acme_care my parcel never arrived and nobody answers"


def _edit_complaint_acks(cfg: ConfigDir, text: str) -> None:
    data = cfg.read("templates.yaml")
    data["acks"]["complaint"] = {"default": [text]}
    cfg.write("templates.yaml", data)


async def test_a_valid_change_applies_to_the_next_mention_and_an_invalid_one_is_refused(
    config_copy: ConfigDir, sqlite_url: str, fake_x: FakeX, fake_tg: FakeTelegram
) -> None:
    config = make_config(config_copy, sqlite_url, staff={"enabled": True})
    svc = await start_service(config, fake_x, telegram=fake_tg)
    reloader = svc.running.reloader
    assert reloader is not None
    try:
        await polls_after(fake_x, 1)
        first = fake_x.inject_mention(author="ann", text=COMPLAINT)
        await eventually(lambda: bool(fake_x.posts_in_reply_to(first)))
        [ticket] = await svc.tickets()
        snapshot = ticket["policy_snapshot"]

        _edit_complaint_acks(config_copy, "Reloaded: so sorry, {handle}, we are on it ({ref}).")
        policies = config_copy.read("escalation.yaml")
        config_copy.write("escalation.yaml", _slower(policies))
        reloader.trigger()  # what SIGHUP does; the watcher would see it within 2 s anyway
        await eventually(lambda: reloader.reloads == 1)
        second = fake_x.inject_mention(author="ben", text=COMPLAINT)
        await eventually(lambda: bool(fake_x.posts_in_reply_to(second)))
        assert fake_x.posts_in_reply_to(second)[0]["text"].startswith("Reloaded: so sorry, @ben")
        assert not fake_x.posts_in_reply_to(first)[0]["text"].startswith("Reloaded")

        rules = (config_copy.path / "rules.yaml").read_text()
        (config_copy.path / "rules.yaml").write_text(rules + "\nno_such_key: true\n")
        reloader.trigger()
        await eventually(lambda: reloader.refusals == 1)
        await eventually(lambda: any("rules.yaml" in m["text"] for m in fake_tg.sent(LEADS)))
        [alert] = [m for m in fake_tg.sent(LEADS) if "rules.yaml" in m["text"]]
        assert "no_such_key" in alert["text"]
        assert "running config stays" in alert["text"]
        third = fake_x.inject_mention(author="cat", text=COMPLAINT)  # the last good config
        await eventually(lambda: bool(fake_x.posts_in_reply_to(third)))
        assert fake_x.posts_in_reply_to(third)[0]["text"].startswith("Reloaded: so sorry, @cat")
    finally:
        await svc.shutdown()
    tickets = {t["customer_handle"]: t for t in await svc.tickets()}
    assert tickets["ann"]["policy_snapshot"] == snapshot  # tickets keep their snapshot
    assert tickets["ben"]["policy_snapshot"] != snapshot  # new ones take the new policy


def _slower(policies: dict[str, Any]) -> dict[str, Any]:
    """The same escalation policies, repeating half as often."""
    for name in ("standard", "urgent"):
        policies["policies"][name]["repeat_every"] = "1h"
    return policies


def test_sighup_reloads_a_running_process_and_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    ConfigDir(config).update("carebot.yaml", logging={"level": "INFO"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBOT_")}
    env.update(PYTHONPATH=str(REPO), CAREBOT_CONFIG_DIR=str(config), CAREBOT_HTTP_PORT="0")
    log = tmp_path / "carebot.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        asyncio.run(_wait_for(log, "carebot running"))
        templates = config / "templates.yaml"
        # same size, same modification time: the watcher cannot see it, only SIGHUP can
        before = templates.stat()
        templates.write_text(templates.read_text().replace("Good question", "Fine question"))
        os.utime(templates, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert templates.stat().st_size == before.st_size
        proc.send_signal(signal.SIGHUP)
        asyncio.run(_wait_for(log, "config reloaded"))
        (config / "carebot.yaml").write_text("brand: [not, a, mapping\n")
        proc.send_signal(signal.SIGHUP)
        asyncio.run(_wait_for(log, "config reload refused"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "carebot.yaml" in text.split("config reload refused", 1)[1]


async def _wait_for(log: Path, needle: str) -> None:
    await eventually(lambda: needle in log.read_text(), timeout=60)
