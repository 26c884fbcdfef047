"""Storm benchmark: a flood of mentions on X, through the sandbox, into the real service.

The sandbox X holds the mentions; carebot polls them (every 10 ms, 100 a page) exactly as it
polls X. X's mentions timeline reaches back only 800 posts, so the injector keeps the
backlog under that (faster would lose mentions on the real X too): "as fast as possible" is
as fast as carebot takes them in. The sandbox X enforces X's posting budget (100 posts per
15 minutes, a 429 past it) and the sandbox Telegram staff groups get the escalations.

Reports: time until every mention is stored (and decided), peak RSS of the process (the
fakes run in it too), acknowledgements sent against the quota, 429s answered by the fake X,
and staff-chat messages (posts and edits) per minute per staff group.

Usage: python bench/storm.py [--mentions N] [--quick] [--database-url URL]
Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.pipeline import fresh_db  # noqa: E402
from bot.app import Running, run  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.models import mentions  # noqa: E402
from bot.sandbox.traffic import TrafficGenerator  # noqa: E402
from bot.sandbox.x_fake import FakeX  # noqa: E402

REACH = 800  # X's mentions timeline reaches back this far
CHUNK = 400
QUIET = 10.0  # seconds watched after the last mention is stored


def make_config(tmp: Path, db_url: str) -> Any:
    target = tmp / "config"
    shutil.copytree(REPO / "config", target)
    path = target / "carebot.yaml"
    data = yaml.safe_load(path.read_text())
    data["sandbox"].update(traffic_per_minute=0, poll_interval="10ms", live_log=False)
    data["staff"]["enabled"] = os.environ.get("BENCH_STAFF", "1") == "1"
    data["logging"]["level"] = "ERROR"
    data["http"]["port"] = 0
    path.write_text(yaml.safe_dump(data))
    return load_config(target, {"CAREBOT_DATABASE_URL": db_url})


async def stored(running: Running) -> tuple[int, int]:
    assert running.store is not None
    async with running.store.read() as conn:
        total = (await conn.execute(select(func.count()).select_from(mentions))).scalar_one()
        undecided = (
            await conn.execute(
                select(func.count()).select_from(mentions).where(mentions.c.status == "received")
            )
        ).scalar_one()
    return total, undecided


async def newest(running: Running) -> int:
    """The highest mention id: as many as are stored, ids being handed out one by one."""
    assert running.store is not None
    async with running.store.read() as conn:
        return (await conn.execute(select(func.max(mentions.c.id)))).scalar_one() or 0


async def storm(n: int, db_url: str, tmp: Path) -> dict[str, float]:
    fake = FakeX(enforce_limits=True, limits={"mentions": (10**9, 900.0)})
    await fake.start()
    stop, running = asyncio.Event(), Running()
    config = make_config(tmp, db_url)
    staff_chats = {g.chat_id for g in config.carebot.staff.groups}
    task = asyncio.create_task(run(config, stop, running=running, fake_x=fake))
    await asyncio.wait_for(running.started.wait(), 60)
    while not any(r.route == "mentions" for r in fake.requests):  # "now" is recorded
        await asyncio.sleep(0.01)
    gen = TrafficGenerator(rng=random.Random(7))
    samples = [s for s in gen.samples(n * 2) if not s.is_bot][:n]
    t0 = time.perf_counter()
    injected = 0
    while injected < n:
        total = await newest(running)  # an index look-up: counting rows would cost O(n)
        room = REACH - (injected - total) - CHUNK // 2
        if room > 0:
            for s in samples[injected : injected + min(room, CHUNK, n - injected)]:
                fake.inject_mention(author=s.author, text=s.text)
                injected += 1
        await asyncio.sleep(0.005)
    while await newest(running) < n:
        await asyncio.sleep(0.02)
    while True:
        total, undecided = await stored(running)
        if total >= n and undecided == 0:
            break
        await asyncio.sleep(0.05)
    took = time.perf_counter() - t0
    await asyncio.sleep(QUIET)  # the outbox and the staff chat carry on
    watched = time.perf_counter() - t0
    tg = running.fake_telegram
    staff = [
        r
        for r in (tg.requests if tg is not None else [])
        if r.method in ("sendMessage", "editMessageText") and r.chat_id in staff_chats
    ]

    def busiest_minute(rows: list[Any]) -> int:
        """The most messages any one staff group got within any 60 seconds."""
        best = 0
        for chat in staff_chats:
            times = sorted(r.at for r in rows if r.chat_id == chat)
            start = 0
            for end, at in enumerate(times):
                while at - times[start] >= 60:
                    start += 1
                best = max(best, end - start + 1)
        return best

    per_group = busiest_minute(staff)
    posts_per_group = busiest_minute([r for r in staff if r.method == "sendMessage"])
    refused = sum(1 for r in staff if r.status == 429)
    posts = [r for r in fake.requests if r.route == "create_tweet"]
    stop.set()
    await task
    await fake.stop()
    return {
        "mentions": n,
        "stored_s": took,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "acks_sent": sum(1 for r in posts if r.status == 201),
        "x_429": sum(1 for r in posts if r.status == 429),
        "watched_s": watched,
        "staff_per_min_per_group": per_group,
        "staff_posts_per_min_per_group": posts_per_group,
        "staff_429": refused,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mentions", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="10,000 mentions: a run under one minute")
    ap.add_argument(
        "--database-url", help="PostgreSQL URL of a server to create bench databases on"
    )
    args = ap.parse_args()
    if args.quick:
        args.mentions = min(args.mentions, 10_000)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    dialect = "postgresql" if args.database_url else "sqlite"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r = await storm(args.mentions, await fresh_db(args.database_url, tmp, "storm"), tmp)
    print(
        f"storm ({dialect}): {r['mentions']} mentions on X stored and decided in {r['stored_s']:.1f} s "
        f"({r['mentions'] / r['stored_s']:.0f}/s); peak RSS {r['peak_rss_mb']:.0f} MB (fakes included)\n"
        f"  acks sent in {r['watched_s']:.0f} s: {r['acks_sent']} (X allows 100 per 15 min), "
        f"429s from X: {r['x_429']}; staff chat, busiest group and minute: {r['staff_posts_per_min_per_group']} new "
        f"messages (Telegram allows 20), {r['staff_per_min_per_group']} with card edits, "
        f"{r['staff_429']} 429s"
    )
    print(
        f"db={dialect} mentions={r['mentions']} stored_s={r['stored_s']:.1f} "
        f"mentions_per_s={r['mentions'] / r['stored_s']:.0f} peak_rss_mb={r['peak_rss_mb']:.0f} "
        f"acks_sent={r['acks_sent']} x_429={r['x_429']} "
        f"staff_posts_per_min={r['staff_posts_per_min_per_group']} "
        f"staff_msgs_per_min={r['staff_per_min_per_group']} staff_429={r['staff_429']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
