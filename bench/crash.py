"""Crash harness: `carebot run` killed with -9 at random moments under a steady storm.

The fake X and the fake Telegram staff chat run here, in the harness, so their own records
(every mention injected, every reply and card they received) outlive each carebot process.
carebot runs as a real subprocess on them (sandbox off, X and the staff chat on), is killed
with SIGKILL after a random 1-4 s of service, restarted at once, and so on ``--kills``
times; the last process is left to catch up and then stopped with SIGTERM. The platforms'
records are then compared with the database:

  lost               mentions injected on X that are not in the database
  duplicate_tickets  tickets beyond one per mention
  duplicate_acks     replies on X beyond one per mention
  resends_refused    posts carebot attempted twice, which X refused as duplicate content (X
                     keeps customers from seeing a double; this counts carebot's own doubles)
  missed_acks        mentions whose acknowledgement was queued but never reached X, plus
                     mentions never decided
  duplicate_notices  staff cards posted more than once for one ticket (Telegram cannot be
                     searched, so a card interrupted mid-send may be posted twice: at most
                     one per kill is the documented bound)

Usage: python bench/crash.py [--kills 20] [--rate 30] [--seed 1] [--database-url URL]
Ends with one line: kills=… mentions=… lost=… duplicate_tickets=… duplicate_acks=…
resends_refused=… missed_acks=… duplicate_notices=…
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.models import mentions, outbox, tickets  # noqa: E402
from bot.sandbox.telegram_fake import FakeTelegram  # noqa: E402
from bot.sandbox.traffic import TrafficGenerator  # noqa: E402
from bot.sandbox.x_fake import FakeX  # noqa: E402
from bot.store import make_engine  # noqa: E402

SUPPORT = -1001000000001  # the default config's support group
X_VARS = ("BEARER_TOKEN", "CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_TOKEN", "ACCESS_TOKEN_SECRET")


def write_config(target: Path, fake_x: FakeX, fake_tg: FakeTelegram) -> None:
    shutil.copytree(REPO / "config", target, dirs_exist_ok=True)
    path = target / "carebot.yaml"
    data = yaml.safe_load(path.read_text())
    data["sandbox"]["enabled"] = False
    data["platforms"]["x"].update(
        enabled=True,
        api_base_url=fake_x.base_url,
        poll_interval="100ms",
        request_timeout="2s",
        backfill="1h",  # the first start answers what was injected before it polled
    )
    data["platforms"]["webhook"]["enabled"] = False
    data["staff"].update(enabled=True, telegram_api_base_url=fake_tg.root_url)
    data["outbox"].update(quotas={}, backoff_base="100ms", backoff_max="1s", drain_timeout="5s")
    data["database"]["lease_ttl"] = "3s"
    data["logging"]["level"] = "INFO"
    path.write_text(yaml.safe_dump(data))


def environment(config: Path, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBOT_")}
    env.update(
        PYTHONPATH=str(REPO),
        CAREBOT_CONFIG_DIR=str(config),
        CAREBOT_DATABASE_URL=db_url,
        CAREBOT_TELEGRAM_STAFF_TOKEN="123456:sandbox",
        CAREBOT_HTTP_PORT="0",
    )
    env.update({f"CAREBOT_X_{name}": "crash-harness" for name in X_VARS})
    return env


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def _read(path: Path) -> str:
    return await asyncio.to_thread(_text, path)


async def started(proc: asyncio.subprocess.Process, log: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = await _read(log)
        if "carebot running" in text:
            return
        if proc.returncode is not None:
            raise RuntimeError(f"carebot exited with {proc.returncode} at start:\n{text}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"carebot did not start within {within} s:\n{await _read(log)}")


async def db_state(db_url: str) -> dict[str, Any]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            stored = dict(
                (await conn.execute(select(mentions.c.external_id, mentions.c.status))).all()
            )
            per_mention = (
                await conn.execute(
                    select(tickets.c.mention_id, func.count()).group_by(tickets.c.mention_id)
                )
            ).all()
            acks = (
                await conn.execute(
                    select(mentions.c.external_id, outbox.c.state)
                    .join(tickets, tickets.c.id == outbox.c.ticket_id)
                    .join(mentions, mentions.c.id == tickets.c.mention_id)
                    .where(outbox.c.kind == "ack")
                )
            ).all()
            unsettled = dict(
                (
                    await conn.execute(
                        select(outbox.c.platform, func.count())
                        .where(outbox.c.state.in_(["pending", "sending"]))
                        .group_by(outbox.c.platform)
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    return {
        "stored": stored,
        "tickets_per_mention": [n for _, n in per_mention],
        "acks": acks,
        "unsettled": unsettled,
    }


async def restart_postgres() -> None:
    """Restart the local PostgreSQL cluster (fast shutdown: every connection is cut)."""
    versions = await asyncio.to_thread(
        lambda: sorted(p.name for p in Path("/etc/postgresql").iterdir())
    )
    version = versions[-1]
    proc = await asyncio.create_subprocess_exec(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        version,
        "main",
        "restart",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pg_ctlcluster restart failed: {err.decode(errors='replace')}")


def card_refs(fake_tg: FakeTelegram) -> Counter[str]:
    refs: Counter[str] = Counter()
    for message in fake_tg.sent(SUPPORT):
        found = re.search(r"\bCB-\d+\b", message.get("text", ""))
        if found:
            refs[found.group()] += 1
    return refs


async def crash_run(
    *,
    kills: int,
    rate: float,
    db_url: str,
    workdir: Path,
    seed: int = 1,
    up: tuple[float, float] = (1.0, 4.0),
    settle_for: float = 90.0,
    say: Callable[[str], None] = print,
    db_restarts: int = 0,
) -> dict[str, Any]:
    """Run the harness; return its figures (see the module docstring) and the logs' path.

    ``db_restarts``: after the kills, restart the PostgreSQL server this many times under
    the last process (which must wait, retry and lose nothing).
    """
    rng = random.Random(seed)
    fake_x, fake_tg = FakeX(), FakeTelegram()
    await fake_x.start()
    await fake_tg.start()
    config = workdir / "config"
    write_config(config, fake_x, fake_tg)
    env = environment(config, db_url)
    samples = [s for s in TrafficGenerator(rng=random.Random(seed)).samples(20000) if not s.is_bot]
    injected: list[str] = []
    stop_injecting = asyncio.Event()

    async def inject() -> None:
        t0 = time.monotonic()
        while not stop_injecting.is_set():
            due = t0 + len(injected) / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sample = samples[len(injected) % len(samples)]
            author = f"c{seed}x{len(injected)}"  # one mention per customer: no flood cap
            injected.append(fake_x.inject_mention(author=author, text=sample.text))

    injector = asyncio.create_task(inject())
    runs = 0
    proc: asyncio.subprocess.Process | None = None
    try:
        for kill in range(kills + 1):
            log = workdir / f"run{runs}.log"
            with log.open("w") as out:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", "run", env=env, stdout=out, stderr=out
                )
            runs += 1
            await started(proc, log)
            if kill == kills:
                for restart in range(db_restarts):
                    await asyncio.sleep(rng.uniform(*up))
                    await restart_postgres()
                    say(f"database restart {restart + 1}/{db_restarts}: {len(injected)} injected")
                break
            await asyncio.sleep(rng.uniform(*up))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            say(f"kill {kill + 1}/{kills}: {len(injected)} mentions injected so far")
        stop_injecting.set()
        await injector
        assert proc is not None
        # The last process catches up: every mention decided, every reply to X settled
        # (staff cards trickle out at Telegram's 20 a minute per group: not waited for).
        t0 = time.monotonic()
        while time.monotonic() < t0 + settle_for:
            state = await db_state(db_url)
            decided = sum(1 for s in state["stored"].values() if s != "received")
            if decided >= len(injected) and not state["unsettled"].get("x"):
                break
            await asyncio.sleep(0.2)
        say(f"caught up {time.monotonic() - t0:.1f} s after the last start")
        proc.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(proc.wait(), 60)
    finally:
        stop_injecting.set()
        injector.cancel()
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake_x.stop()
        await fake_tg.stop()

    state = await db_state(db_url)
    stored = state["stored"]
    replies = {t: len(fake_x.posts_in_reply_to(t)) for t in injected}
    acked = {external_id for external_id, _ in state["acks"]}
    refs = card_refs(fake_tg)
    return {
        "kills": kills,
        "db_restarts": db_restarts,
        "mentions": len(injected),
        "lost": sum(1 for t in injected if t not in stored),
        "duplicate_tickets": sum(n - 1 for n in state["tickets_per_mention"] if n > 1),
        "duplicate_acks": sum(n - 1 for n in replies.values() if n > 1),
        # X refuses a second post of the same text, so customers never see a double there:
        # these are the doubles carebot itself attempted (answered 403 "duplicate content")
        "resends_refused": sum(
            1 for r in fake_x.requests if r.route == "create_tweet" and r.status == 403
        ),
        "missed_acks": sum(1 for t in acked if replies.get(t, 0) == 0)
        + sum(1 for s in stored.values() if s == "received"),
        "duplicate_notices": sum(n - 1 for n in refs.values() if n > 1),
        "acks": sum(1 for n in replies.values() if n),
        "cards": len(refs),
        "exit_code": exit_code,
        "logs": workdir,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--rate", type=float, default=30.0, help="mentions per second on X")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--database-url", help="default: a SQLite file in a temporary directory")
    ap.add_argument(
        "--db-restarts",
        type=int,
        default=0,
        help="then restart the local PostgreSQL this many times (needs --database-url)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        db_url = args.database_url or f"sqlite+aiosqlite:///{work / 'carebot.db'}"
        if args.database_url:
            from bench.pipeline import fresh_db

            db_url = asyncio.run(fresh_db(args.database_url, work, "crash"))
        f = asyncio.run(
            crash_run(
                kills=args.kills,
                rate=args.rate,
                db_url=db_url,
                workdir=work,
                seed=args.seed,
                db_restarts=args.db_restarts,
            )
        )
        print(
            f"{f['mentions']} mentions over {f['kills']} kills: {f['acks']} acknowledged on X, "
            f"{f['cards']} staff cards; last process exited {f['exit_code']}"
        )
        keys = ("kills", "db_restarts", "mentions", "lost", "duplicate_tickets", "duplicate_acks")
        keys += ("resends_refused", "missed_acks", "duplicate_notices")
        print(" ".join(f"{k}={f[k]}" for k in keys))


if __name__ == "__main__":
    main()
