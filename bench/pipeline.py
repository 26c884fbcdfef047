"""Pipeline benchmark: the real service, mentions handed to its intake as sources do.

Phases, each on a fresh database, with the service running in sandbox mode (fake X):
  sustained  N mentions handed to the pipeline by 8 concurrent sources in batches of 100
             (as X pages and webhook bursts arrive); throughput = N / (last outbox row
             written - first submit), i.e. receipt to outbox row, mentions stored, classified,
             ticketed and their acknowledgement queued.
  paced      single mentions (as webhook requests) at fixed offered loads; latency per mention
             = the fake X receiving the acknowledgement's POST - the mention being handed in
             (receipt to ack request). Outbox quotas are lifted here: this measures carebot,
             not X's 100 posts per 15 minutes.
  sqlite     (SQLite runs) the raw sqlite3 module on the same schema and pragmas, no
             SQLAlchemy, no asyncio: one mention row per commit, and 1,000 rows per commit;
             our sustained rate is reported as a ratio of each.

Usage: python bench/pipeline.py [--mentions N] [--rates 100,500,2000] [--seconds S] [--quick]
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
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.app import Running, run  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.domain import Mention, Platform  # noqa: E402
from bot.migrate import open_database  # noqa: E402
from bot.models import mentions, outbox  # noqa: E402
from bot.sandbox.traffic import TrafficGenerator  # noqa: E402
from bot.sandbox.x_fake import FakeX  # noqa: E402
from bot.store import make_engine  # noqa: E402
from bot.store_base import SQLITE_PRAGMAS  # noqa: E402

SOURCES = 8
BATCH = 100


def make_config(tmp: Path, db_url: str, *, quotas: bool) -> Any:
    target = tmp / "config"
    shutil.copytree(REPO / "config", target, dirs_exist_ok=True)
    path = target / "carebot.yaml"
    data = yaml.safe_load(path.read_text())
    # The sandbox X is polled once, at start: the bench hands mentions to the pipeline itself.
    data["sandbox"].update(traffic_per_minute=0, poll_interval="1h", live_log=False)
    data["outbox"].update(batch_size=100)
    if not quotas:
        data["outbox"]["quotas"] = {}
    data["staff"]["enabled"] = os.environ.get("BENCH_STAFF", "1") == "1"
    data["logging"]["level"] = "ERROR"
    data["http"]["port"] = 0
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


async def start(config: Any, fake: FakeX) -> tuple[asyncio.Task[None], asyncio.Event, Running]:
    stop, running = asyncio.Event(), Running()
    task = asyncio.create_task(run(config, stop, running=running, fake_x=fake))
    await asyncio.wait_for(running.started.wait(), 60)
    return task, stop, running


async def scalar(running: Running, query: Any) -> Any:
    assert running.store is not None
    async with running.store.read() as conn:  # a fresh snapshot each time
        return (await conn.execute(query)).scalar_one()


def x_mentions(n: int, seed: int, fake: FakeX) -> list[Mention]:
    """Customers' mentions as the X adapter hands them in (real texts, real authors)."""
    gen = TrafficGenerator(rng=random.Random(seed))
    out = []
    for i, s in enumerate(x for x in gen.samples(n * 2) if not x.is_bot):
        if i == n:
            break
        tweet = fake.inject_mention(author=s.author, text=s.text)  # so the ack can reply to it
        out.append(
            Mention(
                Platform.X,
                tweet,
                f"author-{s.author}",
                s.author,
                f"@{fake.account_username} {s.text}",
                datetime.now(UTC),
                thread_id=tweet,
            )
        )
    return out


async def sustained(n: int, db_url: str, tmp: Path) -> dict[str, float]:
    fake = FakeX()
    await fake.start()
    task, stop, running = await start(make_config(tmp / "sustained", db_url, quotas=True), fake)
    assert running.pipeline is not None
    pipeline = running.pipeline
    items = x_mentions(n, 1, fake)
    batches = [items[i : i + BATCH] for i in range(0, n, BATCH)]
    queue: asyncio.Queue[list[Mention]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)

    async def source() -> None:
        while not queue.empty():
            await pipeline.submit(queue.get_nowait())

    t0 = time.perf_counter()
    await asyncio.gather(*(source() for _ in range(SOURCES)))
    stored_at = time.perf_counter()
    # every decision was committed with its mention: the outbox rows exist now
    rows = await scalar(
        running, select(func.count()).select_from(outbox).where(outbox.c.kind == "ack")
    )
    tickets_ = await scalar(
        running,
        select(func.count()).select_from(mentions).where(mentions.c.status == "ticketed"),
    )
    stop.set()
    await task
    await fake.stop()
    span = stored_at - t0
    return {
        "mentions": n,
        "ack_rows": rows,
        "tickets": tickets_,
        "span_s": span,
        "mentions_per_s": n / span,
    }


async def paced(rate: float, seconds: float, db_url: str, tmp: Path) -> dict[str, float]:
    fake = FakeX()
    await fake.start()
    task, stop, running = await start(
        make_config(tmp / f"paced{rate:.0f}", db_url, quotas=False), fake
    )
    assert running.pipeline is not None
    n = int(rate * seconds)
    items = x_mentions(n, 2, fake)
    handed: dict[str, float] = {}
    pending: set[asyncio.Task[None]] = set()
    t0 = time.perf_counter()
    for i, m in enumerate(items):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        handed[m.external_id] = time.time()
        t = asyncio.create_task(running.pipeline.submit([m]))
        pending.add(t)
        t.add_done_callback(pending.discard)
    offered_for = time.perf_counter() - t0
    await asyncio.gather(*pending)
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        left = await scalar(
            running,
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.state.in_(["pending", "sending"])),
        )
        if left == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    await fake.stop()
    lat = sorted(
        (p["at"] - handed[p["in_reply_to_tweet_id"]]) * 1000
        for p in fake.posts
        if p["in_reply_to_tweet_id"] in handed
    )
    return {
        "offered_per_s": rate,
        "achieved_per_s": n / offered_for,
        "acks": len(lat),
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan"),
    }


async def sqlite_limits(tmp: Path, rows: int) -> dict[str, float]:
    """The machine's own limits on the same schema: raw sqlite3, one thread."""
    path = tmp / "raw.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    await open_database(engine)  # the same schema and indexes, by the same migrations
    await engine.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        con.execute(f"PRAGMA {pragma}")
    now = datetime.now(UTC).isoformat()
    sql = (
        "INSERT INTO mentions (platform, external_id, author_id, author_handle, author_is_bot,"
        " text, created_at, received_at, status) VALUES (?, ?, ?, ?, 0, ?, ?, ?, 'received')"
    )
    text = "@acme_care my parcel never arrived and nobody answers the phone"

    def row(i: int) -> tuple[Any, ...]:
        return ("x", str(i), f"a{i}", f"user{i}", text, now, now)

    single = min(rows, 5000)
    t = time.perf_counter()
    for i in range(single):
        con.execute("BEGIN IMMEDIATE")
        con.execute(sql, row(i))
        con.execute("COMMIT")
    commit_rate = single / (time.perf_counter() - t)
    t = time.perf_counter()
    for start_ in range(single, single + rows, 1000):
        con.execute("BEGIN IMMEDIATE")
        con.executemany(sql, [row(i) for i in range(start_, start_ + 1000)])
        con.execute("COMMIT")
    batched_rate = rows / (time.perf_counter() - t)
    con.close()
    return {"single_commit_per_s": commit_rate, "batched_insert_per_s": batched_rate}


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mentions", type=int, default=20000)
    ap.add_argument("--rates", default="100,500,2000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="a run under one minute")
    ap.add_argument(
        "--database-url", help="PostgreSQL URL of a server to create bench databases on"
    )
    args = ap.parse_args()
    if args.quick:
        args.mentions, args.seconds = min(args.mentions, 5000), min(args.seconds, 3.0)
    rates = [float(r) for r in args.rates.split(",")]
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"staff chat {'on' if os.environ.get('BENCH_STAFF', '1') == '1' else 'off'}"
    )
    dialect = "postgresql" if args.database_url else "sqlite"
    figures: dict[str, str] = {"db": dialect}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        s = await sustained(
            args.mentions, await fresh_db(args.database_url, tmp, "sustained"), tmp
        )
        print(
            f"sustained ({dialect}): {s['mentions']} mentions from {SOURCES} sources in batches of "
            f"{BATCH}: stored, classified, {s['tickets']} ticketed, {s['ack_rows']} ack rows queued "
            f"in {s['span_s']:.2f} s → {s['mentions_per_s']:.0f} mentions/s receipt→outbox row"
        )
        figures["mentions_per_s"] = f"{s['mentions_per_s']:.0f}"
        for rate in rates:
            p = await paced(
                rate, args.seconds, await fresh_db(args.database_url, tmp, f"p{rate:.0f}"), tmp
            )
            print(
                f"paced ({dialect}): {rate:.0f}/s offered ({p['achieved_per_s']:.0f}/s handed in) for "
                f"{args.seconds:.0f} s, {p['acks']} acks: receipt→ack request p50 {p['p50_ms']:.1f} ms, "
                f"p99 {p['p99_ms']:.1f} ms"
            )
            figures[f"p50_ms_at_{rate:.0f}"] = f"{p['p50_ms']:.1f}"
            figures[f"p99_ms_at_{rate:.0f}"] = f"{p['p99_ms']:.1f}"
        if dialect == "sqlite":
            raw = await sqlite_limits(tmp, 20000 if not args.quick else 10000)
            print(
                f"raw sqlite3 on the same schema: {raw['single_commit_per_s']:.0f} single-row commits/s, "
                f"{raw['batched_insert_per_s']:.0f} rows/s inserted 1,000 per commit"
            )
            figures["sqlite_commit_per_s"] = f"{raw['single_commit_per_s']:.0f}"
            figures["sqlite_batched_per_s"] = f"{raw['batched_insert_per_s']:.0f}"
            figures["sqlite_commit_ratio"] = (
                f"{s['mentions_per_s'] / raw['single_commit_per_s']:.2f}"
            )
            figures["sqlite_batched_ratio"] = (
                f"{s['mentions_per_s'] / raw['batched_insert_per_s']:.3f}"
            )
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    asyncio.run(main())
