"""The composition root: builds every part, runs them in one event loop, stops them in order.

Start-up order: sandbox fakes → database (migrated to head) → HTTP session → adapters opened →
pipeline (recovers mentions a crash left undecided) → outbox sender → intake started →
sandbox traffic. Stop (SIGTERM / Ctrl-C) unwinds in reverse: traffic and intake stop first,
the outbox drains within ``outbox.drain_timeout``, then clients, session and engine close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import zlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import SecretStr

from bot.clock import Clock, SystemClock
from bot.config import Config, XCredentials
from bot.domain import Platform
from bot.errors import StartupError
from bot.escalation import EscalationSweep
from bot.incidents import IncidentDesk
from bot.leases import Leases
from bot.live import LiveView
from bot.logs import RedactSecrets
from bot.metrics import Metrics
from bot.migrate import open_database
from bot.outbox import OutboxSender
from bot.pipeline import Pipeline, Screening, Tuning
from bot.platforms.base import PlatformAdapter
from bot.platforms.mastodon import MastodonAdapter
from bot.platforms.telegram import TelegramAdapter
from bot.platforms.telegram_staff import TelegramStaffChat
from bot.platforms.webhook import WebhookAdapter
from bot.platforms.x import XAdapter, XSettings, rebase_middleware
from bot.reload import ConfigReloader
from bot.retention import Retention
from bot.sandbox.mastodon_fake import SANDBOX_TOKEN as MASTODON_SANDBOX_TOKEN
from bot.sandbox.mastodon_fake import FakeMastodon
from bot.sandbox.staff_sim import StaffSimulator
from bot.sandbox.telegram_fake import FakeTelegram, TgUser
from bot.sandbox.traffic import (
    DEFAULT_BOT_AUTHORS,
    SampleMention,
    TrafficGenerator,
    run_outage,
    run_traffic,
)
from bot.sandbox.x_fake import FakeX
from bot.staff import StaffDesk
from bot.store import Store, make_engine
from bot.tasks import TaskSupervisor
from bot.triage import TriageClassifier
from bot.web import WebServer

logger = logging.getLogger(__name__)

SANDBOX_SECRET = SecretStr("sandbox")
READY_TIMEOUT = 2.0  # seconds /readyz waits for the database
SANDBOX_WEBHOOK_SECRET = SecretStr("sandbox-webhook-secret")


@dataclass(slots=True)
class Running:
    """Handles on a running service, for tests and the CLI (filled in as start-up proceeds)."""

    store: Store | None = None
    pipeline: Pipeline | None = None
    sender: OutboxSender | None = None
    adapters: dict[Platform, PlatformAdapter] = field(default_factory=dict)
    fake_x: FakeX | None = None
    fake_telegram: FakeTelegram | None = None
    fake_mastodon: FakeMastodon | None = None
    desk: StaffDesk | None = None
    incidents: IncidentDesk | None = None
    sweep: EscalationSweep | None = None
    leases: Leases | None = None
    reloader: ConfigReloader | None = None
    metrics: Metrics | None = None
    web: WebServer | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


async def run(
    config: Config,
    stop: asyncio.Event,
    *,
    out: TextIO | None = None,
    clock: Clock | None = None,
    running: Running | None = None,
    fake_x: FakeX | None = None,
    fake_telegram: FakeTelegram | None = None,
    sweep_jobs: bool = True,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run carebot until ``stop`` is set.

    ``environ``: where a config reload finds the secrets again (default: ``os.environ``).

    ``fake_x`` / ``fake_telegram``: tests may pass sandbox servers they control; otherwise the
    sandbox (when enabled) starts its own. ``sweep_jobs=False`` leaves the escalation sweep
    to the caller (tests drive it with an injected clock).

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
        await open_database(engine)
        store = running.store = Store(engine, clock)
        leases = running.leases = Leases(store, clock, cb.database.lease_ttl)

        timeout = cb.platforms.x.request_timeout.total_seconds()
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 5.0)),
            middlewares=(rebase_middleware(x_base),),
        )
        stack.push_async_callback(session.close)
        supervisor = TaskSupervisor()
        stack.push_async_callback(supervisor.close)

        adapters = running.adapters = _adapters(config, session, store, clock, x_creds)
        await _mastodon(config, stack, session, store, clock, adapters, running)
        desk = await _staff_chat(config, stack, store, clock, adapters, running, fake_telegram)
        for adapter in adapters.values():
            await adapter.open()
            stack.push_async_callback(adapter.close)

        sender = running.sender = OutboxSender(
            store=store,
            adapters=adapters,
            settings=cb.outbox,
            clock=clock,
            # a claim older than this was abandoned: well past any request's timeout
            stale_after=max(timedelta(seconds=30), 3 * cb.platforms.x.request_timeout),
            leases=leases,
            # a previous holder's request cannot still be in flight after this
            takeover_after=max(timedelta(seconds=5), 2 * cb.platforms.x.request_timeout),
        )
        if desk is not None:
            desk.on_queued = sender.wake
        pipeline = running.pipeline = _pipeline(config, store, adapters, sender)
        metrics = running.metrics = _metrics(clock, pipeline, sender)  # from the first mention
        view = _live_view(config, out, clock, pipeline, sender, desk)
        await pipeline.recover()

        sender_task = supervisor.spawn(sender.run(), name="outbox-sender")
        stack.push_async_callback(sender.stop, sender_task, cb.outbox.drain_timeout)
        # The writer stops after the sources (registered below, so unwound first): what
        # they queued is committed before the outbox drains.
        writer_task = supervisor.spawn(pipeline.run(), name="pipeline-writer")
        stack.push_async_callback(pipeline.stop, writer_task, cb.outbox.drain_timeout)
        for adapter in adapters.values():
            await _start_intake(adapter, pipeline, supervisor, leases, stack)
        if desk is not None:
            _start_sweep(config, running, desk, sender, view, stack, supervisor, jobs=sweep_jobs)
        _start_retention(config, store, clock, supervisor)
        _start_reloader(config, running, sender, supervisor, environ)
        _feed_metrics(metrics, running)
        running.web = await _start_web(
            config,
            adapters,
            pipeline,
            clock,
            stack,
            out,
            _readiness(store, adapters, leases),
            lambda: metrics.render(store),
        )
        if cb.sandbox.enabled and fake_x is not None and cb.sandbox.traffic_per_minute > 0:
            _start_sandbox_people(
                config, running, supervisor, stack, own_telegram=not fake_telegram
            )

        running.started.set()
        logger.info("carebot running: %s", ", ".join(p.value for p in adapters))
        await stop.wait()
        logger.info("stopping: intake first, then the outbox drains")


async def _start_fake(stack: AsyncExitStack, given: FakeX | None, out: TextIO | None) -> FakeX:
    fake = given
    if fake is None:
        # Posting keeps X's real budget (a 429 past it), so the sandbox shows the outbox
        # quota at work; reading is unlimited, as the sandbox polls faster than X allows.
        fake = FakeX(enforce_limits=True, limits={"mentions": (1_000_000, 900.0)})
        await fake.start()
        stack.push_async_callback(fake.stop)
    if out is not None:
        out.write(
            f"carebot sandbox: fake X API at {fake.base_url} "
            f"(inject mentions: POST {fake.base_url}/_sandbox/mentions)\n"
        )
    return fake


def _chat_budget(adapters: dict[Platform, PlatformAdapter]) -> Callable[[int], int] | None:
    chat = adapters.get(Platform.STAFF)
    return chat.budget_left if isinstance(chat, TelegramStaffChat) else None


def _live_view(  # noqa: PLR0917 — the composition root passes its parts
    config: Config,
    out: TextIO | None,
    clock: Clock,
    pipeline: Pipeline,
    sender: OutboxSender,
    desk: StaffDesk | None,
) -> LiveView | None:
    """The readable per-mention view, when there is a terminal to show it on."""
    sandbox = config.carebot.sandbox
    if out is None or not sandbox.enabled or not sandbox.live_log:
        return None  # customers' words go to the terminal only in the sandbox
    view = LiveView(out, clock, config.carebot.tickets.ref_prefix)
    pipeline.observers.append(view.mentions)
    sender.observers.append(view.sent)
    if desk is not None:
        desk.observers.append(view.staff)
    return view


async def _mastodon(  # noqa: PLR0917 — the composition root passes its parts
    config: Config,
    stack: AsyncExitStack,
    session: aiohttp.ClientSession,
    store: Store,
    clock: Clock,
    adapters: dict[Platform, PlatformAdapter],
    running: Running,
) -> None:
    """Add the Mastodon adapter: the sandbox's fake instance, or the configured one."""
    settings = config.carebot.platforms.mastodon
    if config.carebot.sandbox.enabled:
        fake = running.fake_mastodon = FakeMastodon()
        await fake.start()
        stack.push_async_callback(fake.stop)
        base, token = fake.base_url, SecretStr(MASTODON_SANDBOX_TOKEN)
    elif settings.enabled and config.mastodon_token is not None:
        base, token = settings.api_base_url, config.mastodon_token
    else:
        return
    adapters[Platform.MASTODON] = MastodonAdapter(
        session=session, base_url=base, token=token, settings=settings, store=store, clock=clock
    )


def _metrics(clock: Clock, pipeline: Pipeline, sender: OutboxSender) -> Metrics:
    """The service's metrics, counting decisions and deliveries from the start."""
    metrics = Metrics(clock)
    pipeline.observers.append(metrics.decided)
    sender.observers.append(metrics.sent)
    return metrics


def _feed_metrics(metrics: Metrics, running: Running) -> None:
    """The rest of the parts that see events the metrics count."""
    if running.sender is not None:
        running.sender.on_failed = metrics.failed
        running.sender.on_held_back = metrics.held_back
    if running.desk is not None:
        running.desk.on_first_reply = metrics.first_reply
    if running.sweep is not None:
        running.sweep.on_escalated = metrics.escalated
    if running.reloader is not None:
        running.reloader.on_result = metrics.reloaded


def _readiness(
    store: Store, adapters: dict[Platform, PlatformAdapter], leases: Leases
) -> Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]:
    """``/readyz``: not ready while the database does not answer; sources' states listed."""

    async def check() -> tuple[bool, dict[str, Any]]:
        try:
            await asyncio.wait_for(store.ping(), READY_TIMEOUT)
            database = (
                "ok" if store.write_failure is None else f"writes failing: {store.write_failure}"
            )
        except Exception as exc:  # noqa: BLE001 — any failure means not ready
            database = f"unreachable: {type(exc).__name__}"
        sources: dict[str, str] = {}
        for platform, adapter in adapters.items():
            lease = adapter.intake_lease
            problem = adapter.intake_problem()
            if lease is not None and not leases.held_now(lease):
                trouble = leases.trouble.get(lease)
                sources[platform.value] = (
                    f"degraded: cannot renew its lease ({trouble})"
                    if trouble
                    else "standby: another process holds its intake"
                )
            elif problem is not None:
                sources[platform.value] = f"degraded: {problem}"
            else:
                sources[platform.value] = "ok"
        ready = database == "ok"
        degraded = any(s.startswith("degraded") for s in sources.values())
        status = "not ready" if not ready else "degraded" if degraded else "ready"
        return ready, {"status": status, "database": database, "sources": sources}

    return check


async def _start_web(  # noqa: PLR0917 — the composition root passes its parts
    config: Config,
    adapters: dict[Platform, PlatformAdapter],
    pipeline: Pipeline,
    clock: Clock,
    stack: AsyncExitStack,
    out: TextIO | None,
    readiness: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]] | None = None,
    metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> WebServer:
    """Carebot's HTTP server: health and readiness, and the webhooks that are enabled."""
    chat = adapters.get(Platform.STAFF)
    telegram: tuple[Callable[[object], Awaitable[None]], SecretStr] | None = None
    webhook_mode = config.carebot.staff.telegram_webhook_url is not None
    if isinstance(chat, TelegramStaffChat) and webhook_mode and config.telegram_webhook_secret:
        telegram = (chat.feed, config.telegram_webhook_secret)
    hook = config.carebot.platforms.webhook
    server = WebServer(
        host=config.http_host,
        port=config.http_port,
        sink=pipeline,
        secret=(config.webhook_secret or SANDBOX_WEBHOOK_SECRET) if hook.enabled else None,
        clock=clock,
        max_body=hook.max_body_bytes,
        tolerance=hook.timestamp_tolerance,
        telegram=telegram,
        readiness=readiness,
        metrics=metrics,
    )
    try:
        await server.start()
    except OSError as exc:  # the port is taken, say: a clear start-up error, not a traceback
        raise StartupError(
            f"cannot listen on {config.http_host}:{config.http_port} ({exc.strerror or exc}); "
            "set http.port or CAREBOT_HTTP_PORT (0 picks a free port)"
        ) from exc
    stack.push_async_callback(server.stop)
    if out is not None and hook.enabled:
        out.write(f"carebot webhook: POST http://{config.http_host}:{server.port}/ingest\n")
    return server


async def _staff_chat(  # noqa: PLR0917 — the composition root passes its parts
    config: Config,
    stack: AsyncExitStack,
    store: Store,
    clock: Clock,
    adapters: dict[Platform, PlatformAdapter],
    running: Running,
    fake_telegram: FakeTelegram | None,
) -> StaffDesk | None:
    """Set up the staff desk and its Telegram chat (added to ``adapters``), when enabled."""
    cb = config.carebot
    if not cb.staff.enabled or (not cb.sandbox.enabled and config.telegram_staff_token is None):
        return None
    desk = running.desk = StaffDesk(
        store=store,
        staff=cb.staff,
        escalation=config.escalation,
        adapters=adapters,
        ref_prefix=cb.tickets.ref_prefix,
    )

    def tuning() -> Tuning:  # a reload swaps it: follow-ups use the current templates
        return running.pipeline.tuning if running.pipeline else tuning_for(config)

    desk.templates = lambda: tuning().templates
    desk.brand = lambda: tuning().brand
    # Always there: with crisis mode off nothing is detected, declared or linked, but an
    # incident still open from before can be updated and fixed.
    desk.incidents = running.incidents = IncidentDesk(
        store=store,
        config=cb.incidents,
        staff=cb.staff,
        adapters=adapters,
        templates=lambda: tuning().templates,
        brand=lambda: tuning().brand,
        ref_prefix=cb.tickets.ref_prefix,
    )
    root, token = cb.staff.telegram_api_base_url, config.telegram_staff_token
    if cb.sandbox.enabled:
        fake_telegram = await _start_fake_telegram(stack, fake_telegram)
        running.fake_telegram = fake_telegram
        root, token = fake_telegram.root_url, SecretStr(fake_telegram.token)
    assert token is not None  # noqa: S101 — config requires it outside the sandbox
    hook = None
    if cb.staff.telegram_webhook_url and config.telegram_webhook_secret is not None:
        hook = (cb.staff.telegram_webhook_url, config.telegram_webhook_secret)
    chat = adapters[Platform.STAFF] = TelegramStaffChat(
        token=token.get_secret_value(),
        api_root=root,
        desk=desk,
        store=store,
        clock=clock,
        ref_prefix=cb.tickets.ref_prefix,
        webhook=hook,
    )
    if cb.sandbox.enabled or cb.platforms.telegram.enabled:  # customers on the same bot
        adapters[Platform.TELEGRAM] = TelegramAdapter(
            app=chat.app, staff_chats=desk.chat_ids, clock=clock
        )
    return desk


def _schedule_sweep(sweep: EscalationSweep, every: timedelta, stack: AsyncExitStack) -> None:
    """An APScheduler 3 interval job (coalesced, one at a time); the database holds the timers."""
    scheduler = AsyncIOScheduler(timezone=UTC)
    in_flight: set[asyncio.Task[Any]] = set()

    async def job() -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 — a job always runs in a task
        in_flight.add(task)
        try:
            await sweep.run_once()
        finally:
            in_flight.discard(task)

    async def finish() -> None:
        """Let a running sweep end its batch (bounded) instead of being cancelled mid-write."""
        sweep.stopping = True
        if in_flight:
            await asyncio.wait(in_flight, timeout=every.total_seconds() + 5)

    scheduler.add_job(
        job,
        "interval",
        seconds=every.total_seconds(),
        id="escalation-sweep",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=60,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    stack.callback(scheduler.shutdown, wait=False)
    # Unwound first: the running sweep ends its batch before the scheduler cancels it.
    stack.push_async_callback(finish)


def _start_sweep(  # noqa: PLR0917 — the composition root passes its parts
    config: Config,
    running: Running,
    desk: StaffDesk,
    sender: OutboxSender,
    view: LiveView | None,
    stack: AsyncExitStack,
    supervisor: TaskSupervisor,
    *,
    jobs: bool,
) -> None:
    """The escalation sweep: run every ``staff.sweep_interval`` unless ``jobs`` is False."""
    assert running.store is not None  # noqa: S101 — set before any of this starts
    sweep = running.sweep = EscalationSweep(
        store=running.store,
        staff=config.carebot.staff,
        ref_prefix=config.carebot.tickets.ref_prefix,
        on_queued=sender.wake,
        budget=_chat_budget(running.adapters),
    )
    desk.escalate = sweep.escalate_now
    if running.incidents is not None:
        running.incidents.on_queued = sender.wake
        if running.pipeline is not None:
            running.incidents.on_change = running.pipeline.incidents.changed
    if view is not None:
        sweep.observers.append(view.staff)
        if running.incidents is not None:
            running.incidents.observers.append(view.staff)
    if jobs:
        _schedule_sweep(sweep, config.carebot.staff.sweep_interval, stack)
        if running.incidents is not None:
            _ = supervisor.spawn(  # cancelled with the supervisor's other tasks
                running.incidents.run(config.carebot.staff.sweep_interval), name="incidents"
            )


def _start_reloader(
    config: Config,
    running: Running,
    sender: OutboxSender,
    supervisor: TaskSupervisor,
    environ: Mapping[str, str] | None,
) -> None:
    """Watch the config directory; SIGHUP (see ``bot.cli``) asks for a look at once."""
    store, pipeline, desk = running.store, running.pipeline, running.desk
    assert store is not None  # noqa: S101 — started before this
    assert pipeline is not None  # noqa: S101
    chat = config.carebot.staff.alerts_chat() if config.carebot.staff.enabled else None

    def apply(new: Config) -> None:
        pipeline.tuning = tuning_for(new)
        if desk is not None:
            desk.escalation = new.escalation

    async def alert(text: str) -> None:
        if chat is not None:
            await store.queue_alert(chat, text)
            sender.wake()

    running.reloader = ConfigReloader(
        config,
        os.environ if environ is None else environ,
        apply,
        alert=alert,
        mask=RedactSecrets(config.secret_values()).mask,
    )
    _ = supervisor.spawn(running.reloader.run(), name="config-reloader")


def _start_retention(
    config: Config, store: Store, clock: Clock, supervisor: TaskSupervisor
) -> None:
    """Erase customers' data past ``retention.days``, now and every ``retention.every``."""
    retention = config.carebot.retention
    if retention.days is not None:
        purger = Retention(store, clock, retention.days)
        _ = supervisor.spawn(purger.run(retention.every), name="retention")


async def _start_intake(
    adapter: PlatformAdapter,
    pipeline: Pipeline,
    supervisor: TaskSupervisor,
    leases: Leases,
    stack: AsyncExitStack,
) -> None:
    """Start a source's intake: at once, or while this process holds the source's lease."""
    name = adapter.intake_lease
    if name is None:
        await adapter.start(pipeline, supervisor)
        stack.push_async_callback(adapter.stop)
        return
    held = await leases.holds(name)
    if held:  # the usual case, one process: intake runs before start-up is reported done
        await adapter.start(pipeline, supervisor)
    else:
        logger.info("%s: another process holds its intake; this one stands by", name)
    stopping = asyncio.Event()
    task = supervisor.spawn(
        leases.hold(
            name,
            lambda: adapter.start(pipeline, supervisor),
            adapter.stop,
            stopping,
            running=held,
        ),
        name=f"lease-{name}",
    )

    async def stop() -> None:
        stopping.set()
        with contextlib.suppress(Exception):  # its failure was logged by the supervisor
            await asyncio.shield(task)

    stack.push_async_callback(stop)


async def _start_fake_telegram(stack: AsyncExitStack, given: FakeTelegram | None) -> FakeTelegram:
    if given is not None:
        return given
    fake = FakeTelegram()
    await fake.start()
    stack.push_async_callback(fake.stop)
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
    hook = cb.platforms.webhook
    if hook.enabled:
        secret = config.webhook_secret
        if secret is None and cb.sandbox.enabled:
            secret = SANDBOX_WEBHOOK_SECRET
        if secret is not None:
            adapters[Platform.WEBHOOK] = WebhookAdapter(
                session=session, secret=secret, clock=clock, timeout=hook.reply_timeout
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
    return Pipeline(
        store=store,
        tuning=tuning_for(config),
        adapters=adapters,
        ref_prefix=config.carebot.tickets.ref_prefix,
        on_committed=sender.wake,
    )


def tuning_for(config: Config) -> Tuning:
    """The pipeline's tunable parts, from ``config`` (at start, and on every reload)."""
    cb = config.carebot
    bots = list(cb.screening.bot_accounts)
    if cb.sandbox.enabled:
        bots += DEFAULT_BOT_AUTHORS  # the traffic generator's bots are known bots
    return Tuning(
        classifier=TriageClassifier(config.rules, config.model),
        templates=config.templates,
        escalation=config.escalation,
        screening=Screening.from_lists(bots, cb.screening.blocked_authors),
        brand=cb.brand.name,
        max_acks_per_author_per_hour=cb.screening.max_acks_per_author_per_hour,
        reopen_window=cb.tickets.reopen_window,
        incident_categories=frozenset(cb.incidents.categories if cb.incidents.enabled else ()),
    )


def _start_sandbox_people(
    config: Config,
    running: Running,
    supervisor: TaskSupervisor,
    stack: AsyncExitStack,
    *,
    own_telegram: bool,
) -> None:
    """Generated customers, and a simulated support team when the sandbox runs its own chat."""
    assert running.fake_x is not None  # noqa: S101 — called in sandbox mode only
    others: dict[str, Callable[[SampleMention], str]] = {}
    rng = random.Random(config.carebot.sandbox.seed)
    if running.fake_mastodon is not None:
        others["mastodon"] = _toot(running.fake_mastodon, rng)
    if (
        running.fake_telegram is not None
        and Platform.TELEGRAM in running.adapters
        and own_telegram
    ):
        others["telegram"] = _dm(running.fake_telegram)
    _start_traffic(config, running.fake_x, supervisor, stack, others)
    if running.fake_telegram is not None and own_telegram:
        _start_staff_simulator(config, running.fake_telegram, supervisor, stack)


def _start_staff_simulator(
    config: Config, fake: FakeTelegram, supervisor: TaskSupervisor, stack: AsyncExitStack
) -> None:
    staff = config.carebot.staff
    sim = StaffSimulator(
        fake,
        chats=[g.chat_id for g in staff.groups],
        members=[TgUser(m.telegram_user_id, m.name) for m in staff.members],
        rng=random.Random(config.carebot.sandbox.seed),
        leads=[TgUser(m.telegram_user_id, m.name) for m in staff.members if m.role == "lead"],
        lead_chat=staff.chat_of(config.carebot.incidents.group or staff.alerts_group)
        if config.carebot.incidents.enabled
        else None,
    )
    flag = asyncio.Event()
    task = supervisor.spawn(sim.run(flag), name="sandbox-staff")
    stack.push_async_callback(_stop_task, flag, task)


def _start_traffic(
    config: Config,
    fake: FakeX,
    supervisor: TaskSupervisor,
    stack: AsyncExitStack,
    others: dict[str, Callable[[SampleMention], str]],
) -> None:
    """Generated customers, shared between the fake X and the other fake platforms."""
    sandbox = config.carebot.sandbox
    rng = random.Random(sandbox.seed)
    brand = config.carebot.brand.name
    rate = sandbox.traffic_per_minute / (1 + len(others))
    flag = asyncio.Event()
    channels: list[tuple[str, Callable[[SampleMention], str] | None, float]] = [
        ("sandbox-traffic", None, 1.0),
        *((f"sandbox-traffic-{name}", inject, 3.0) for name, inject in others.items()),
    ]
    if sandbox.outage_after is not None:
        task = supervisor.spawn(
            run_outage(
                lambda sample: fake.inject_mention(author=sample.author, text=sample.text),
                TrafficGenerator(rng=random.Random(rng.random()), brand=brand),
                after=sandbox.outage_after.total_seconds(),
                complaints=sandbox.outage_complaints,
                over=60.0,
                stop=flag,
            ),
            name="sandbox-outage",
        )
        stack.push_async_callback(_stop_task, flag, task)
    for name, inject, first in channels:
        task = supervisor.spawn(
            run_traffic(
                fake,
                TrafficGenerator(rng=random.Random(rng.random()), brand=brand),
                rate_per_minute=rate,
                stop=flag,
                first_after=first,  # after the first poll has recorded where "now" is
                inject=inject,
            ),
            name=name,
        )
        stack.push_async_callback(_stop_task, flag, task)


def _toot(fake: FakeMastodon, rng: random.Random) -> Callable[[SampleMention], str]:
    def inject(sample: SampleMention) -> str:
        visibility = rng.choice(("public", "public", "unlisted", "direct"))
        return fake.post_mention(
            sample.author, sample.text, visibility=visibility, bot=sample.is_bot
        )

    return inject


def _dm(fake: FakeTelegram) -> Callable[[SampleMention], str]:
    def inject(sample: SampleMention) -> str:
        user_id = 7_000_000 + zlib.crc32(sample.author.encode()) % 1_000_000
        user = TgUser(user_id, sample.author, sample.author, is_bot=sample.is_bot)
        return str(fake.user_message(user_id, user, sample.text)["message_id"])

    return inject


async def _stop_task(flag: asyncio.Event, task: asyncio.Task[Any]) -> None:
    flag.set()
    try:
        await asyncio.wait_for(task, timeout=2)
    except TimeoutError:
        task.cancel()
