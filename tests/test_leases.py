"""Leases on SQLite and PostgreSQL: one holder at a time, expiry, release, dead holders."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from bot.leases import Leases, new_holder
from bot.migrate import open_database
from bot.models import leases
from bot.store import Store, make_engine
from tests.harness import FakeClock, eventually

TTL = timedelta(seconds=15)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[tuple[Store, FakeClock]]:
    engine = make_engine(db_url)
    await open_database(engine)
    clock = FakeClock()
    yield Store(engine, clock), clock
    await engine.dispose()


async def test_one_holder_until_the_lease_expires(store: tuple[Store, FakeClock]) -> None:
    db, clock = store
    a = Leases(db, clock, TTL, holder="host-a:1:100:aaaa")
    b = Leases(db, clock, TTL, holder="host-b:1:100:bbbb")
    assert await a.acquire("x")
    assert not await b.acquire("x")
    assert not await b.holds("x")
    clock.advance(seconds=10)
    assert await a.holds("x")  # renewed: a third of the time had passed
    clock.advance(seconds=14)
    assert not await b.acquire("x")  # a renewed 14 s ago, within its 15 s
    clock.advance(seconds=2)  # a stopped renewing (it died, say): its lease runs out
    assert await b.acquire("x")
    assert not await a.holds("x")  # a learns it lost it on its next renewal
    assert await b.holds("x")


async def test_release_hands_over_at_once_and_names_are_separate(
    store: tuple[Store, FakeClock],
) -> None:
    db, clock = store
    a = Leases(db, clock, TTL, holder="host-a:1:100:aaaa")
    b = Leases(db, clock, TTL, holder="host-b:1:100:bbbb")
    assert await a.acquire("x")
    assert await b.acquire("outbox:x")
    assert not await b.acquire("x")
    assert not await a.acquire("outbox:x")
    await a.release("x")
    assert await b.acquire("x")


async def test_a_dead_process_of_this_host_is_taken_over_without_waiting(
    store: tuple[Store, FakeClock],
) -> None:
    db, clock = store
    me = new_holder()
    host, namespace, _, _ = me.rsplit(":", 3)
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()  # its pid belongs to no running process now
    dead = Leases(db, clock, TTL, holder=f"{host}:{namespace}:{proc.pid}:dead")
    assert await dead.acquire("x")
    assert await Leases(db, clock, TTL, holder=me).acquire("x")
    # a live process (this one), or one in another PID namespace, is waited for
    alive = Leases(db, clock, TTL, holder=f"{host}:{namespace}:{os.getppid()}:live")
    assert await alive.acquire("y")
    assert not await Leases(db, clock, TTL, holder=me).acquire("y")
    elsewhere = Leases(db, clock, TTL, holder=f"{host}:other-ns:{proc.pid}:gone")
    assert await elsewhere.acquire("z")
    assert not await Leases(db, clock, TTL, holder=me).acquire("z")


async def test_hold_starts_and_stops_intake_with_the_lease(
    store: tuple[Store, FakeClock],
) -> None:
    db, clock = store
    events: list[str] = []

    async def start() -> None:
        events.append("start")

    async def stop() -> None:
        events.append("stop")

    ours = Leases(db, clock, timedelta(seconds=3), holder="host-a:1:100:aaaa")
    other = Leases(db, clock, timedelta(seconds=3), holder="host-b:1:100:bbbb")
    stopping = asyncio.Event()
    task = asyncio.create_task(ours.hold("x", start, stop, stopping))
    await eventually(lambda: events == ["start"])
    # another process holds it now (as after ours missed its renewals), then time passes
    await _set_lease(db, "x", other.holder, clock.now() + timedelta(minutes=5))
    clock.advance(seconds=2)
    await eventually(lambda: events == ["start", "stop"], timeout=5)
    await _set_lease(db, "x", other.holder, clock.now())  # it let go
    await eventually(lambda: events == ["start", "stop", "start"], timeout=5)
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert events == ["start", "stop", "start", "stop"]
    assert await other.acquire("x")  # released on the way out


async def _set_lease(db: Store, name: str, holder: str, expires_at: datetime) -> None:
    async with db.write() as conn:
        await conn.execute(
            update(leases)
            .where(leases.c.name == name)
            .values(holder=holder, expires_at=expires_at)
        )


async def test_loops_of_one_process_sharing_a_lease_never_race_each_other(
    store: tuple[Store, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    db, clock = store
    ours = Leases(db, clock, TTL, holder="host-a:1:100:aaaa")
    for _ in range(3):  # the first take, then renewals once a third of the time has passed
        assert (
            await asyncio.gather(*(ours.holds("outbox:telegram") for _ in range(4))) == [True] * 4
        )
        clock.advance(seconds=6)
    assert "taken over" not in caplog.text
