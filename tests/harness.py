"""Running the real service inside a test, against the sandbox fakes."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import RowMapping

from bot.app import Running, run
from bot.config import Config, load_config
from bot.models import cursors, mentions, outbox, ticket_events, tickets
from bot.sandbox.telegram_fake import FakeTelegram
from bot.sandbox.x_fake import FakeX
from bot.store import READ_ONLY, Store, make_engine
from tests.conftest import ConfigDir

FAST = {
    "outbox": {"backoff_base": "50ms", "backoff_max": "500ms", "drain_timeout": "5s"},
    "sandbox": {
        "enabled": True,
        "traffic_per_minute": 0,
        "poll_interval": "50ms",
        "live_log": True,
    },
    "staff": {"enabled": False},  # tests of the staff chat turn it on
    "http": {"port": 0},  # /healthz and /readyz on a free port: services never collide
}


def make_config(
    cfg: ConfigDir, db_url: str, *, env: dict[str, str] | None = None, **sections: dict[str, Any]
) -> Config:
    """The default config made fast for tests (no generated traffic, quick polls and retries)."""
    merged = {k: dict(v) for k, v in FAST.items()}
    for key, value in sections.items():
        merged.setdefault(key, {}).update(value)
    cfg.update("carebot.yaml", **merged)
    return load_config(cfg.path, {"CAREBOT_DATABASE_URL": db_url, **(env or {})})


@dataclass
class Service:
    """A service running in a task of the test's loop."""

    task: asyncio.Task[None]
    stop: asyncio.Event
    running: Running
    out: io.StringIO = field(default_factory=io.StringIO)

    db_url: str = ""

    @property
    def store(self) -> Store:
        assert self.running.store is not None
        return self.running.store

    async def execute(self, statement: Any) -> None:
        """Run a statement on the service's database (it may be stopped)."""
        engine = make_engine(self.db_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(statement)
        finally:
            await engine.dispose()

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=30)

    async def rows(self, table: Any, *where: Any) -> list[RowMapping]:
        """Read rows with an engine of our own (the service may be stopped)."""
        engine = make_engine(self.db_url)
        try:
            async with engine.execution_options(**{READ_ONLY: True}).connect() as conn:
                first = next(iter(table.c))
                result = await conn.execute(select(table).where(*where).order_by(first))
                return list(result.mappings())
        finally:
            await engine.dispose()

    async def tickets(self) -> list[RowMapping]:
        return await self.rows(tickets)

    async def mentions(self) -> list[RowMapping]:
        return await self.rows(mentions)

    async def outbox(self) -> list[RowMapping]:
        return await self.rows(outbox)

    async def events(self, ticket_id: int) -> list[RowMapping]:
        return await self.rows(ticket_events, ticket_events.c.ticket_id == ticket_id)

    async def cursor(self, source: str) -> RowMapping | None:
        found = await self.rows(cursors, cursors.c.source == source)
        return found[0] if found else None


class FakeClock:
    """A clock the test moves by hand (time never passes on its own)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)


async def start_service(
    config: Config,
    fake: FakeX,
    *,
    telegram: FakeTelegram | None = None,
    clock: FakeClock | None = None,
) -> Service:
    """Start carebot on ``config`` with ``fake`` as X; return once intake has started.

    With ``telegram``, the staff chat uses it and the escalation sweep is left to the test.
    """
    stop = asyncio.Event()
    running = Running()
    out = io.StringIO()
    task = asyncio.create_task(
        run(
            config,
            stop,
            out=out,
            running=running,
            fake_x=fake,
            fake_telegram=telegram,
            clock=clock,
            sweep_jobs=telegram is None,
        )
    )
    started = asyncio.create_task(running.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # raises the start-up error
        raise AssertionError("service stopped during start-up")
    assert started in done, "service did not start within 30s"
    return Service(task, stop, running, out, config.database_url.get_secret_value())


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float = 15.0
) -> None:
    """Wait until ``check`` holds (a deadline for slow machines, not a measurement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def polls_after(fake: FakeX, n: int) -> None:
    """Wait until the service has polled mentions ``n`` more times (nothing else comes)."""
    start = sum(1 for r in fake.requests if r.route == "mentions")
    await eventually(lambda: sum(1 for r in fake.requests if r.route == "mentions") >= start + n)
