"""The composition root: builds every part, runs them in one event loop, stops them in order.

Start-up order: sandbox fakes → database (migrated to head) → HTTP session → adapters opened →
pipeline (recovers mentions a crash left undecided) → outbox sender → intake started →
sandbox traffic. Stop (SIGTERM / Ctrl-C) unwinds in reverse: traffic and intake stop first,
the outbox drains within ``outbox.drain_timeout``, then clients, session and engine close.
"""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp
from pydantic import SecretStr

from bot.classifier import RulesClassifier
from bot.clock import Clock, SystemClock
from bot.config import Config, XCredentials
from bot.domain import Platform
from bot.errors import StartupError
from bot.live import LiveView
from bot.migrate import upgrade
from bot.outbox import OutboxSender
from bot.pipeline import Pipeline, Screening
from bot.platforms.base import PlatformAdapter
from bot.platforms.x import XAdapter, XSettings, rebase_middleware
from bot.sandbox.traffic import DEFAULT_BOT_AUTHORS, TrafficGenerator, run_traffic
from bot.sandbox.x_fake import FakeX
from bot.store import Store, make_engine
from bot.tasks import TaskSupervisor

logger = logging.getLogger(__name__)

SANDBOX_SECRET = SecretStr("sandbox")


@dataclass(slots=True)
class Running:
    """Handles on a running service, for tests and the CLI (filled in as start-up proceeds)."""

    store: Store | None = None
    pipeline: Pipeline | None = None
    sender: OutboxSender | None = None
    adapters: dict[Platform, PlatformAdapter] = field(default_factory=dict)
    fake_x: FakeX | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


async def run(
    config: Config,
    stop: asyncio.Event,
    *,
    out: TextIO | None = None,
    clock: Clock | None = None,
    running: Running | None = None,
    fake_x: FakeX | None = None,
) -> None:
    """Run carebot until ``stop`` is set.

    ``fake_x``: tests may pass a sandbox server they control; otherwise the sandbox (when
    enabled) starts its own.

    Raises:
        StartupError: a platform refused to start (bad credentials, unreachable).
    """
    clock = clock or SystemClock()
    running = running or Running()
    cb = config.carebot
    async with AsyncExitStack() as stack:
        x_base, x_creds = cb.platforms.x.api_base_url, config.x_credentials
        if cb.sandbox.enabled:
            fake_x = await _start_fake(stack, fake_x, out)
            running.fake_x = fake_x
            x_base, x_creds = fake_x.base_url, XCredentials(*(SANDBOX_SECRET,) * 5)

        engine = make_engine(
            config.database_url.get_secret_value(), pool_size=cb.database.pool_size
        )
        stack.push_async_callback(engine.dispose)
        await upgrade(engine)
        store = running.store = Store(engine, clock)

        timeout = cb.platforms.x.request_timeout.total_seconds()
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5.0)),
            middlewares=(rebase_middleware(x_base),),
        )
        stack.push_async_callback(session.close)
        supervisor = TaskSupervisor()
        stack.push_async_callback(supervisor.close)

        adapters = running.adapters = _adapters(config, session, store, clock, x_creds)
        for adapter in adapters.values():
            await adapter.open()
            stack.push_async_callback(adapter.close)

        sender = running.sender = OutboxSender(
            store=store, adapters=adapters, settings=cb.outbox, clock=clock
        )
        pipeline = running.pipeline = _pipeline(config, store, adapters, sender)
        if out is not None and cb.sandbox.live_log:
            view = LiveView(out, clock, cb.tickets.ref_prefix)
            pipeline.observers.append(view.mentions)
            sender.observers.append(view.sent)
        await pipeline.recover()

        sender_task = supervisor.spawn(sender.run(), name="outbox-sender")
        stack.push_async_callback(sender.stop, sender_task, cb.outbox.drain_timeout)
        for adapter in adapters.values():
            await adapter.start(pipeline, supervisor)
            stack.push_async_callback(adapter.stop)
        if cb.sandbox.enabled and fake_x is not None and cb.sandbox.traffic_per_minute > 0:
            _start_traffic(config, fake_x, supervisor, stack)

        running.started.set()
        logger.info("carebot running: %s", ", ".join(p.value for p in adapters))
        await stop.wait()
        logger.info("stopping: intake first, then the outbox drains")


async def _start_fake(stack: AsyncExitStack, given: FakeX | None, out: TextIO | None) -> FakeX:
    fake = given
    if fake is None:
        fake = FakeX()
        await fake.start()
        stack.push_async_callback(fake.stop)
    if out is not None:
        out.write(
            f"carebot sandbox: fake X API at {fake.base_url} "
            f"(inject mentions: POST {fake.base_url}/_sandbox/mentions)\n"
        )
    return fake


def _adapters(
    config: Config,
    session: aiohttp.ClientSession,
    store: Store,
    clock: Clock,
    x_creds: XCredentials | None,
) -> dict[Platform, PlatformAdapter]:
    cb = config.carebot
    adapters: dict[Platform, PlatformAdapter] = {}
    if x_creds is not None:
        poll = cb.sandbox.poll_interval if cb.sandbox.enabled else cb.platforms.x.poll_interval
        adapters[Platform.X] = XAdapter(
            session=session,
            credentials=x_creds,
            settings=XSettings(
                poll_interval=poll,
                page_size=cb.platforms.x.page_size,
                backfill=cb.platforms.x.backfill,
                request_timeout=cb.platforms.x.request_timeout,
            ),
            store=store,
            clock=clock,
        )
    if not adapters:
        raise StartupError(
            "no platform is enabled: enable the sandbox or a platform in carebot.yaml"
        )
    return adapters


def _pipeline(
    config: Config,
    store: Store,
    adapters: dict[Platform, PlatformAdapter],
    sender: OutboxSender,
) -> Pipeline:
    cb = config.carebot
    bots = list(cb.screening.bot_accounts)
    if cb.sandbox.enabled:
        bots += DEFAULT_BOT_AUTHORS  # the traffic generator's bots are known bots
    return Pipeline(
        store=store,
        classifier=RulesClassifier(config.rules),
        templates=config.templates,
        escalation=config.escalation,
        adapters=adapters,
        screening=Screening.from_lists(bots, cb.screening.blocked_authors),
        brand=cb.brand.name,
        ref_prefix=cb.tickets.ref_prefix,
        on_committed=sender.wake,
    )


def _start_traffic(
    config: Config, fake: FakeX, supervisor: TaskSupervisor, stack: AsyncExitStack
) -> None:
    sandbox = config.carebot.sandbox
    flag = asyncio.Event()
    gen = TrafficGenerator(rng=random.Random(sandbox.seed), brand=config.carebot.brand.name)
    task = supervisor.spawn(
        run_traffic(
            fake,
            gen,
            rate_per_minute=sandbox.traffic_per_minute,
            stop=flag,
            first_after=1.0,  # after the first poll has recorded where "now" is
        ),
        name="sandbox-traffic",
    )
    stack.push_async_callback(_stop_traffic, flag, task)


async def _stop_traffic(flag: asyncio.Event, task: asyncio.Task[int]) -> None:
    flag.set()
    try:
        await asyncio.wait_for(task, timeout=2)
    except TimeoutError:
        task.cancel()
