"""Pipeline benchmark: mentions injected into the sandbox X, measured through the real service.

Two phases, each on a fresh database:
  burst  N mentions injected at once; throughput = mentions / (last outbox row written -
         first mention stored), i.e. receipt to outbox row.
  paced  mentions injected at a fixed offered rate; latency per mention = the fake X receiving
         the acknowledgement's POST - the mention being stored (receipt to ack request).

Usage: python bench/pipeline.py [--mentions N] [--rate R] [--seconds S] [--quick]
                                [--database-url URL]
Ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import Running, run  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.models import mentions, outbox  # noqa: E402
from bot.sandbox.traffic import TrafficGenerator  # noqa: E402
from bot.sandbox.x_fake import FakeX  # noqa: E402


def make_config(tmp: Path, db_url: str) -> object:
    target = tmp / "config"
    shutil.copytree(REPO / "config", target)
    path = target / "carebot.yaml"
    data = yaml.safe_load(path.read_text())
    data["sandbox"].update(traffic_per_minute=0, poll_interval="20ms", live_log=False)
    data["outbox"].update(batch_size=100)
    data["staff"]["enabled"] = os.environ.get("BENCH_STAFF", "1") == "1"
    data["logging"]["level"] = "ERROR"
    path.write_text(yaml.safe_dump(data))
    return load_config(target, {"CAREBOT_DATABASE_URL": db_url})


async def fresh_db(base: str | None, tmp: Path, name: str) -> str:
    if base is None:
        return f"sqlite+aiosqlite:///{tmp / (name + '.db')}"
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(base)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    db = f"carebot_bench_{name}_{os.getpid()}"
    await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    await conn.execute(f'CREATE DATABASE "{db}"')
    await conn.close()
    return url.set(database=db).render_as_string(hide_password=False)


async def start(config: object, fake: FakeX) -> tuple[asyncio.Task[None], asyncio.Event, Running]:
    stop, running = asyncio.Event(), Running()
    task = asyncio.create_task(run(config, stop, running=running, fake_x=fake))  # type: ignore[arg-type]
    await asyncio.wait_for(running.started.wait(), 60)
    # wait for the first poll, which records where "now" is
    while not any(r.route == "mentions" for r in fake.requests):
        await asyncio.sleep(0.01)
    return task, stop, running


async def count(running: Running, table: object) -> int:
    assert running.store is not None
    async with running.store.read() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()  # type: ignore[arg-type]


async def burst(n: int, db_url: str, tmp: Path) -> dict[str, float]:
    fake = FakeX()
    await fake.start()
    task, stop, running = await start(make_config(tmp / "burst", db_url), fake)
    gen = TrafficGenerator(rng=random.Random(1))
    samples = [s for s in gen.samples(n * 2) if not s.is_bot][:n]
    t0 = time.perf_counter()
    for s in samples:
        fake.inject_mention(author=s.author, text=s.text)
    while (stored := await count(running, mentions)) < n:
        print(f"  stored {stored}/{n}", file=sys.stderr, end="\r")
        await asyncio.sleep(0.05)
    assert running.store is not None
    while True:
        async with running.store.read() as conn:  # a fresh snapshot each time
            undecided = (
                await conn.execute(
                    select(func.count())
                    .select_from(mentions)
                    .where(mentions.c.status == "received")
                )
            ).scalar_one()
        print(f"  undecided {undecided}", file=sys.stderr, end="\r")
        if undecided == 0:
            break
        await asyncio.sleep(0.05)
    async with running.store.read() as conn:
        first = (await conn.execute(select(func.min(mentions.c.received_at)))).scalar_one()
        last = (await conn.execute(select(func.max(outbox.c.created_at)))).scalar_one()
        rows = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
    wall = time.perf_counter() - t0
    stop.set()
    await task
    await fake.stop()
    span = (last - first).total_seconds()
    return {
        "mentions": n,
        "outbox_rows": rows,
        "span_s": span,
        "mentions_per_s": n / span,
        "wall_s": wall,
    }


async def paced(rate: float, seconds: float, db_url: str, tmp: Path) -> dict[str, float]:
    fake = FakeX()
    await fake.start()
    task, stop, running = await start(make_config(tmp / "paced", db_url), fake)
    gen = TrafficGenerator(rng=random.Random(2))
    n = int(rate * seconds)
    injected: list[str] = []
    t0 = time.perf_counter()
    for i in range(n):
        target = t0 + i / rate
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        s = gen.sample()
        while s.is_bot:
            s = gen.sample()
        injected.append(fake.inject_mention(author=s.author, text=s.text))
    deadline = time.perf_counter() + 60
    assert running.store is not None
    while time.perf_counter() < deadline:
        async with running.store.read() as conn:
            pending = (
                await conn.execute(
                    select(func.count())
                    .select_from(outbox)
                    .where(outbox.c.state.in_(["pending", "sending"]))
                )
            ).scalar_one()
            decided = (
                await conn.execute(
                    select(func.count())
                    .select_from(mentions)
                    .where(mentions.c.status != "received")
                )
            ).scalar_one()
        if decided >= n and pending == 0:
            break
        await asyncio.sleep(0.05)
    async with running.store.read() as conn:
        received = {
            r.external_id: r.received_at.timestamp()
            for r in await conn.execute(select(mentions.c.external_id, mentions.c.received_at))
        }
    stop.set()
    await task
    await fake.stop()
    lat = sorted(
        (p["at"] - received[p["in_reply_to_tweet_id"]]) * 1000
        for p in fake.posts
        if p["in_reply_to_tweet_id"] in received
    )
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return {
        "offered_per_s": rate,
        "acks": len(lat),
        "p50_ms": statistics.median(lat),
        "p99_ms": p99,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mentions", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--quick", action="store_true", help="a run under one minute")
    ap.add_argument(
        "--database-url", help="PostgreSQL URL of a server to create bench databases on"
    )
    args = ap.parse_args()
    if args.quick:
        args.mentions, args.seconds = min(args.mentions, 2000), min(args.seconds, 8.0)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    dialect = "postgresql" if args.database_url else "sqlite"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        b = await burst(args.mentions, await fresh_db(args.database_url, tmp, "burst"), tmp)
        print(
            f"burst ({dialect}): {b['mentions']} mentions stored, decided and queued in {b['span_s']:.2f}s "
            f"→ {b['mentions_per_s']:.0f} mentions/s receipt→outbox row"
        )
        p = await paced(
            args.rate, args.seconds, await fresh_db(args.database_url, tmp, "paced"), tmp
        )
        print(
            f"paced ({dialect}): {p['offered_per_s']:.0f} mentions/s offered for {args.seconds:.0f}s, "
            f"{p['acks']} acks: receipt→ack request p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms"
        )
    print(
        f"db={dialect} mentions={b['mentions']} mentions_per_s={b['mentions_per_s']:.0f} "
        f"offered_per_s={p['offered_per_s']:.0f} p50_ms={p['p50_ms']:.1f} p99_ms={p['p99_ms']:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
