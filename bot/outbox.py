"""The outbox sender: delivers due rows through their platform, exactly once.

States: ``pending → sending → sent | failed``. A row is claimed (``sending``, committed) before
the platform is called, and settled after. Retries use jittered exponential backoff; a 429
with a reset time pauses the whole platform until then (no request before the reset).

Quotas (``outbox.quotas``): a platform gets at most its limit of sends per window, counted
from the rows sent before a restart too. Rows are claimed most urgent first, so in a storm
the quota goes to complaints, then questions, then praise, oldest first within each.

Rows left in ``sending`` (the process died mid-call, so the outcome is unknown) are settled
once their claim is older than ``stale_after``, or at once when the process that claimed them
(``claimed_by``) is known to be gone (see ``_abandoned``): the adapter looks for the message
on the platform (X: our recent replies in that thread with the same text); found → ``sent``
with its id, not found → ``pending`` again and sent normally; the platform cannot be asked →
the row stays ``sending`` and is checked again later. So a crash never loses a reply and
never doubles one that the platform confirms it received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Final

from bot import logs
from bot.backoff import Backoff, jittered
from bot.clock import Clock
from bot.config import OutboxConfig
from bot.domain import Platform
from bot.errors import AdapterError, AuthError, PermanentError, RateLimited, TransientError
from bot.faults import FaultLog
from bot.leases import Leases, holder_gone
from bot.platforms.base import PlatformAdapter
from bot.ratelimit import SlidingWindow
from bot.store import OutboxRow, Store
from bot.tasks import call_observers

logger = logging.getLogger(__name__)

AUTH_PAUSE: Final = timedelta(minutes=5)
IDLE_POLL: Final = 1.0  # seconds between looks at the table when nothing wakes us
SEND_CONCURRENCY: Final = 32  # rows to one customer platform in flight at once
FRESH_CLAIM: Final = timedelta(seconds=5)  # a claim this recent needs no renewal before sending


def _waves(rows: list[OutboxRow], size: int) -> list[list[OutboxRow]]:
    """Rows in order, cut into waves of at most ``size`` with distinct destinations.

    Two rows to one destination never travel together, so they arrive in order.
    """
    waves: list[list[OutboxRow]] = []
    current: list[OutboxRow] = []
    seen: set[str] = set()
    for row in rows:
        key = json.dumps(row.destination, sort_keys=True, default=str)
        if len(current) == size or key in seen:
            waves.append(current)
            current, seen = [], set()
        current.append(row)
        seen.add(key)
    if current:
        waves.append(current)
    return waves


SentObserver = Callable[[OutboxRow, str], None]


class OutboxSender:
    """Delivers pending outbox rows per platform."""

    def __init__(
        self,
        *,
        store: Store,
        adapters: Mapping[Platform, PlatformAdapter],
        settings: OutboxConfig,
        clock: Clock,
        rng: random.Random | None = None,
        stale_after: timedelta = timedelta(seconds=30),
        leases: Leases | None = None,
        takeover_after: timedelta = timedelta(seconds=15),
    ) -> None:
        self._store = store
        self._adapters = adapters
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._stale_after = stale_after
        self._wakes = {p: asyncio.Event() for p in adapters}
        # a platform that is down is logged once, not once a row and attempt
        self._send_faults = {
            p: FaultLog(logger, f"outbox: sending to {p}", clock) for p in adapters
        }
        self._round_faults = {p: FaultLog(logger, f"outbox: {p} round", clock) for p in adapters}
        self._paused: dict[Platform, datetime] = {}
        self._draining = False
        self._last_settle: datetime | None = None
        # Sends per platform in the current window: a platform at its quota is not called.
        self._quotas = {
            platform: SlidingWindow(quota.limit, quota.window)
            for platform, quota in settings.quotas.items()
            if platform in adapters
        }
        self._quotas_loaded: set[Platform] = set()
        self._leases = leases
        self._takeover_after = takeover_after
        self._holding: set[Platform] = set()
        self.observers: list[SentObserver] = []
        self.on_failed: Callable[[OutboxRow], None] = lambda row: None  # given up for good
        # a send held back: the platform's 429, or our own quota
        self.on_held_back: Callable[[Platform, str], None] = lambda platform, reason: None

    @property
    def _claimer(self) -> str | None:
        return self._leases.holder if self._leases is not None else None

    def wake(self) -> None:
        """New rows were committed: look now rather than at the next idle poll."""
        for event in self._wakes.values():
            event.set()

    def paused_until(self, platform: Platform) -> datetime | None:
        """When a rate-limited platform may be called again (None: not paused)."""
        until = self._paused.get(platform)
        return until if until is not None and until > self._clock.now() else None

    def _room(self, platform: Platform, now: datetime) -> int | None:
        """Sends the platform's quota allows now (None: no quota)."""
        window = self._quotas.get(platform)
        return None if window is None else window.limit - window.used(platform, now)

    def _blocked_until(self, platform: Platform, now: datetime) -> datetime | None:
        """Until when nothing may be sent to ``platform``: a 429 pause or a spent quota."""
        moments = []
        until = self._paused.get(platform)
        if until is not None and until > now:
            moments.append(until)
        window = self._quotas.get(platform)
        if window is not None and (free := window.wait_until(platform, now)) is not None:
            moments.append(free)
        return max(moments) if moments else None

    async def _load_quotas(self, platforms: list[Platform]) -> None:
        """Count what was sent within each quota's window before this process took over."""
        for platform in platforms:
            window = self._quotas.get(platform)
            if window is None or platform in self._quotas_loaded:
                continue
            fresh = SlidingWindow(window.limit, window.window)
            now = self._clock.now()
            for at in await self._store.sent_since(platform, now - window.window):
                fresh.record(platform, at)
            self._quotas[platform] = fresh
            self._quotas_loaded.add(platform)

    async def run(self) -> None:
        """Deliver until stopped; with :meth:`stop`, first drain what is due.

        Each platform has its own loop, so a slow or rate-limited destination (the staff
        chat in a storm) never holds back customers' acknowledgements on another.
        """
        try:
            await asyncio.gather(*(self._run_for(p) for p in self._adapters))
        finally:  # the next process (a restart, say) need not wait for them to expire
            if self._leases is not None:
                names = {a.send_lease for a in self._adapters.values() if a.send_lease}
                for name in sorted(names):
                    await self._leases.release(name)

    async def _run_for(self, platform: Platform) -> None:
        failures = Backoff(timedelta(seconds=1), timedelta(minutes=1), self._rng)
        while True:
            try:
                if not await self._may_send(platform):
                    if self._draining:
                        return
                    await self._idle(platform, until_lease=True)
                    continue
                sent = await self.run_once([platform])
                if not sent:
                    if self._draining:
                        return
                    await self._idle(platform)
            except Exception as exc:  # noqa: BLE001 — the database is away, say: logged, retried
                wait = failures.failed()
                self._round_faults[platform].failed(
                    f"{type(exc).__name__}: {exc}", wait.total_seconds(), unexpected=True
                )
                if self._draining:
                    return
                await asyncio.sleep(wait.total_seconds())
                continue
            failures.succeeded()
            self._round_faults[platform].succeeded()

    async def stop(self, task: asyncio.Task[None], drain_for: timedelta) -> None:
        """Drain what is due (bounded by ``drain_for``), then end ``task``."""
        self._draining = True
        self.wake()
        try:
            await asyncio.wait_for(asyncio.shield(task), drain_for.total_seconds())
        except TimeoutError:
            logger.warning(
                "outbox: drain timed out after %s; the rest goes on next start", drain_for
            )
            task.cancel()
        except Exception:  # noqa: BLE001 — the task's own failure was already logged
            logger.debug("outbox task ended with an error during drain")

    async def _may_send(self, platform: Platform) -> bool:
        """Whether this process sends to ``platform`` (it holds the platform's lease).

        On taking the lease over, the quota is counted again from the database: another
        process may have sent meanwhile.
        """
        name = self._adapters[platform].send_lease
        if self._leases is None or name is None:
            return True
        if await self._leases.holds(name):
            if platform not in self._holding:  # just taken over: settle what was left at once
                self._holding.add(platform)
                self._last_settle = None
            return True
        self._holding.discard(platform)
        self._quotas_loaded.discard(platform)
        return False

    async def _idle(self, platform: Platform, *, until_lease: bool = False) -> None:
        """Sleep until the platform's next row is due, its pause or quota ends, or rows come."""
        if until_lease and self._leases is not None:  # another process sends: look again later
            left = (self._leases.ttl / 3).total_seconds()
            while left > 0 and not self._draining:
                await asyncio.sleep(min(left, IDLE_POLL))
                left -= IDLE_POLL
            return
        now = self._clock.now()
        blocked = self._blocked_until(platform, now)
        wake = self._wakes[platform]
        if blocked is not None:
            window = self._quotas.get(platform)
            if window is not None and window.wait_until(platform, now) is not None:
                self.on_held_back(platform, "quota")
            # New rows cannot leave before the block ends: commits must not wake us to spin.
            wait = min(IDLE_POLL, (blocked - now).total_seconds())
            if wait > 0:
                await asyncio.sleep(wait)
            wake.clear()
            return
        moments = []
        due = await self._store.next_due_at([platform])
        if due is not None:
            moments.append(due)
        wait = min([IDLE_POLL, *((m - now).total_seconds() for m in moments)])
        if wait <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=wait)
        wake.clear()

    async def run_once(self, platforms: list[Platform] | None = None) -> int:
        """Settle stale rows, claim a batch of due rows and deliver them; return how many."""
        await self._settle_stale()
        targets = platforms if platforms is not None else list(self._adapters)
        await self._load_quotas(targets)
        now = self._clock.now()
        open_ = [p for p in targets if self._blocked_until(p, now) is None]
        unlimited = [p for p in open_ if p not in self._quotas]
        rows = (
            await self._store.claim_due(
                self._settings.batch_size, platforms=unlimited, claimer=self._claimer
            )
            if unlimited
            else []
        )
        for platform in open_:
            room = self._room(platform, now)
            if room:  # most urgent first: the quota goes to complaints, then questions...
                batch = min(self._settings.batch_size, room)
                rows += await self._store.claim_due(
                    batch, platforms=[platform], claimer=self._claimer
                )
        by_platform: dict[Platform, list[OutboxRow]] = {}
        for row in rows:
            by_platform.setdefault(row.platform, []).append(row)
        # platforms in parallel (a slow staff chat must not hold customers' acks), each in order
        await asyncio.gather(*(self._deliver_in_order(group) for group in by_platform.values()))
        return len(rows)

    async def _deliver_in_order(self, rows: list[OutboxRow]) -> None:
        """Deliver one platform's claimed rows, most urgent first.

        Customer platforms are sent to in waves of up to ``SEND_CONCURRENCY`` rows with
        different destinations, and each wave's outcomes are written in one transaction.
        The staff chat goes one row at a time: a card's edits must follow the card.
        """
        platform = rows[0].platform
        if platform is Platform.STAFF:
            for i, row in enumerate(rows):
                if not await self._still_sending(platform, rows[i:]):
                    return
                await self._deliver(row)
            return
        waves = _waves(rows, SEND_CONCURRENCY)
        for i, wave in enumerate(waves):
            if not await self._still_sending(platform, [r for w in waves[i:] for r in w]):
                return
            # Every send finishes and every delivery is recorded even if one of them hit a
            # database error: a delivered row left in "sending" could be sent twice.
            results = await asyncio.gather(
                *(self._send(row) for row in wave), return_exceptions=True
            )
            sent = [
                (row, mid) for row, mid in zip(wave, results, strict=True) if isinstance(mid, str)
            ]
            await self._store.mark_sent_many(sent)
            for row, message_id in sent:
                self._sent(row, message_id)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def _still_sending(self, platform: Platform, rest: list[OutboxRow]) -> bool:
        """Whether this process may go on sending to ``platform`` (renewing its lease).

        A round can outlast the lease (a slow platform); if another process took the lease
        meanwhile, the rows not sent yet go back to pending for it.
        """
        name = self._adapters[platform].send_lease
        if self._leases is None or name is None or await self._leases.holds(name):
            return True
        logger.warning(
            "outbox: lost the %s lease mid-round; %d row(s) left to its holder",
            platform,
            len(rest),
        )
        self._holding.discard(platform)
        await self._store.release(rest)
        return False

    async def _deliver(self, claimed: OutboxRow) -> None:
        """Send one row and record the outcome."""
        message_id = await self._send(claimed)
        if message_id is not None:
            await self._store.mark_sent(claimed, message_id)
            self._sent(claimed, message_id)

    def _sent(self, row: OutboxRow, message_id: str) -> None:
        logger.debug("outbox: row %d (%s) sent as %s", row.id, row.kind.value, message_id)
        self._send_faults[row.platform].succeeded()
        call_observers(self.observers, row, message_id)

    async def _send(self, claimed: OutboxRow) -> str | None:
        """Call the platform for one row: its message id, or None (the row was settled)."""
        with logs.bound(ticket=claimed.ticket_id, outbox_row=claimed.id):  # every log line
            return await self._send_bound(claimed)

    async def _send_bound(self, claimed: OutboxRow) -> str | None:
        if self.paused_until(claimed.platform) is not None:  # paused by an earlier row
            await self._store.mark_retry(
                claimed,
                self._paused[claimed.platform],
                "platform rate limited",
                count_attempt=False,
            )
            return None
        adapter = self._adapters[claimed.platform]
        row: OutboxRow | None = claimed
        if claimed.claimed_at is None or self._clock.now() - claimed.claimed_at > FRESH_CLAIM:
            row = await self._store.touch_claim(claimed)  # it waited: renew before sending
        if row is None:
            logger.info("outbox: row %d was taken over meanwhile; not sending it", claimed.id)
            return None
        window = self._quotas.get(row.platform)
        if window is not None:  # a refused or failed request counts against the quota too
            window.record(row.platform, self._clock.now())
        try:
            return await adapter.send(row.destination, row.text, row.idempotency_key)
        except RateLimited as exc:
            await self._rate_limited(row, exc)
        except PermanentError as exc:
            await self._permanent(adapter, row, exc)
        except AuthError as exc:
            until = self._clock.now() + AUTH_PAUSE
            self._paused[row.platform] = until
            logger.error("outbox: %s refused our credentials (%s); pausing it", row.platform, exc)
            await self._store.mark_retry(row, until, str(exc), count_attempt=False)
        except TransientError as exc:
            await self._retry(row, str(exc))
        except Exception as exc:
            logger.exception("outbox: unexpected error sending row %d", row.id)
            await self._retry(row, f"{type(exc).__name__}: {exc}")
        return None

    async def _rate_limited(self, row: OutboxRow, exc: RateLimited) -> None:
        self.on_held_back(row.platform, "429")
        if exc.reset_at is None:
            await self._retry(row, str(exc))
            return
        if exc.scope is not None:  # only this destination must wait
            await self._store.mark_retry(row, exc.reset_at, str(exc), count_attempt=False)
            return
        self._paused[row.platform] = exc.reset_at
        logger.warning("outbox: %s rate limited until %s", row.platform, exc.reset_at.isoformat())
        await self._store.mark_retry(row, exc.reset_at, str(exc), count_attempt=False)

    async def _retry(self, row: OutboxRow, error: str) -> None:
        if row.attempts >= self._settings.max_attempts:
            logger.error(
                "outbox: row %d failed after %d attempts: %s", row.id, row.attempts, error
            )
            await self._store.mark_failed(row, f"gave up after {row.attempts} attempts: {error}")
            self.on_failed(row)
            return
        delay = jittered(
            row.attempts, self._settings.backoff_base, self._settings.backoff_max, self._rng
        )
        self._send_faults[row.platform].failed(
            f"row {row.id} attempt {row.attempts}: {error}", delay.total_seconds()
        )
        await self._store.mark_retry(row, self._clock.now() + delay, error)

    async def _permanent(
        self, adapter: PlatformAdapter, row: OutboxRow, exc: PermanentError
    ) -> None:
        if exc.duplicate:  # the platform already has this exact text: find our earlier post
            found = await self._find(adapter, row)
            if found is not None:
                await self._store.mark_sent(row, found, recovered=True)
                return
        logger.error("outbox: row %d refused by %s: %s", row.id, row.platform, exc)
        await self._store.mark_failed(row, str(exc))
        self.on_failed(row)

    async def _find(self, adapter: PlatformAdapter, row: OutboxRow) -> str | None:
        try:
            return await adapter.find_delivery(row.destination, row.text)
        except AdapterError as exc:
            logger.warning("outbox: cannot check row %d on %s: %s", row.id, row.platform, exc)
            return None

    def _abandoned(self, row: OutboxRow, now: datetime) -> bool:
        """Whether a ``sending`` row's sender is gone, so its outcome must be settled here.

        Its claim is older than ``stale_after``; or the process that claimed it no longer
        runs (this host); or the platform is leased, this process holds the lease, and the
        claim is older than any request of the previous holder could still be in flight.
        """
        if row.claimed_at is None or row.claimed_at <= now - self._stale_after:
            return True
        holder = self._leases.holder if self._leases is not None else None
        if row.claimed_by is None or holder is None or row.claimed_by == holder:
            return False
        if holder_gone(row.claimed_by, holder):
            return True
        lease = self._adapters[row.platform].send_lease
        return (
            lease is not None
            and self._leases is not None
            and self._leases.held_now(lease)
            and row.claimed_at <= now - self._takeover_after
        )

    async def _settle_stale(self) -> None:
        now = self._clock.now()
        if self._last_settle is not None and now - self._last_settle < self._stale_after / 3:
            return
        self._last_settle = now
        for row in await self._store.stale_sending(now, self._adapters):
            if not self._abandoned(row, now):
                continue
            try:
                found = await self._adapters[row.platform].find_delivery(row.destination, row.text)
            except AdapterError as exc:  # cannot tell yet: resending could double it, so wait
                logger.warning(
                    "outbox: cannot check row %d on %s yet: %s", row.id, row.platform, exc
                )
                continue
            if found is not None:
                logger.info("outbox: row %d was delivered before a restart (%s)", row.id, found)
                await self._store.mark_sent(row, found, recovered=True)
            elif await self._store.release_stale(row):
                logger.info("outbox: row %d was not delivered before a restart; resending", row.id)
