"""Leases: several carebot processes on one database, each source polled by exactly one.

A lease is a row (``leases``: name, holder, expires_at). A process holds it while it renews
it in time; if the holder dies, another process takes it over once it expires (within
``database.lease_ttl``), or at once when the holder is a process of this host that
no longer exists (a process started after a ``kill -9`` need not wait out the old lease).

What is leased:
- intake from a polled source (``x``, ``mastodon``, ``telegram``: Telegram allows one
  ``getUpdates`` consumer per bot): two pollers would fetch everything twice;
- sending to a platform with a quota or rate windows (``outbox:x``...): those windows are
  counted in the holder's memory, so one sender per platform keeps the platform's limits.

Webhooks and the webhook outbox need no lease: any process takes a request, and outbox
rows and sweeps are claimed with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from bot.clock import Clock
from bot.models import leases
from bot.store_base import StoreBase

logger = logging.getLogger(__name__)


def _machine() -> str:
    """This kernel's boot id and PID namespace (Linux): "" where they cannot be told.

    The boot id tells two machines apart even when their host names are the same (cloned
    VMs); the namespace tells containers apart (each may be pid 1).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def new_holder() -> str:
    """This process's name in the leases table: host, machine, pid, a token per start."""
    return f"{socket.gethostname()[:40]}:{_machine()}:{os.getpid()}:{secrets.token_hex(4)}"


def holder_gone(holder: str, me: str) -> bool:
    """Whether ``holder`` certainly no longer runs: a process we can see, since ended.

    Only a holder on this host, this boot and this PID namespace under another pid is checked
    (two containers may share a host name and both be pid 1): anything else waits for expiry.
    """
    try:
        host, machine, pid_text, _ = holder.rsplit(":", 3)
        my_host, my_machine, my_pid, _ = me.rsplit(":", 3)
        pid = int(pid_text)
    except ValueError:
        return False
    if (host, machine) != (my_host, my_machine) or not machine or str(pid) == my_pid:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs, as someone else
        return False
    return False


@dataclass(slots=True)
class _Held:
    until: datetime  # our lease runs out then, by our own clock
    renewed: datetime


class Leases:
    """Acquire, renew and release named leases for this process."""

    def __init__(
        self, store: StoreBase, clock: Clock, ttl: timedelta, holder: str | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self.ttl = ttl
        self.holder = holder or new_holder()
        self._held: dict[str, _Held] = {}
        # one acquire per name at a time: two loops of this process sharing a lease (the
        # staff chat and Telegram customers) must not race each other's insert or renewal
        self._locks: dict[str, asyncio.Lock] = {}
        self.trouble: dict[str, str] = {}  # why a renewal failed (the database is away)

    async def acquire(self, name: str) -> bool:
        """Take or renew ``name``; True while this process holds it."""
        now = self._clock.now()
        until = now + self.ttl
        async with self._store.write() as conn:
            current = (
                await conn.execute(
                    select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
                )
            ).first()
            if current is None:
                inserted = await conn.execute(
                    self._store._insert(leases)
                    .values(name=name, holder=self.holder, expires_at=until, acquired_at=now)
                    .on_conflict_do_nothing()
                )
                got = inserted.rowcount == 1
            else:
                holder, expires_at = current
                free = (
                    holder == self.holder or expires_at <= now or holder_gone(holder, self.holder)
                )
                got = (
                    free
                    and (
                        await conn.execute(  # compare-and-swap: nobody renewed or took it since
                            update(leases)
                            .where(
                                leases.c.name == name,
                                leases.c.holder == holder,
                                leases.c.expires_at == expires_at,
                            )
                            .values(
                                holder=self.holder,
                                expires_at=until,
                                acquired_at=now if holder != self.holder else leases.c.acquired_at,
                            )
                        )
                    ).rowcount
                    == 1
                )
        if got:
            if name not in self._held:
                logger.info("lease %s: held by this process (%s)", name, self.holder)
            self._held[name] = _Held(until=until, renewed=now)
        elif self._held.pop(name, None) is not None:
            logger.warning("lease %s: taken over by another process", name)
        return got

    def held_now(self, name: str) -> bool:
        """Whether this process holds ``name`` as of its last renewal, and it has not run out."""
        held = self._held.get(name)
        return held is not None and self._clock.now() < held.until

    async def holds(self, name: str) -> bool:
        """Whether this process may act for ``name`` now, renewing when a third is used.

        If the database cannot be reached, a lease still within its time is kept (no one
        else can take it before then) and one that ran out is given up.
        """
        async with self._locks.setdefault(name, asyncio.Lock()):
            return await self._holds(name)

    async def _holds(self, name: str) -> bool:
        now = self._clock.now()
        held = self._held.get(name)
        if held is not None and now - held.renewed < self.ttl / 3:
            return True
        try:
            got = await self.acquire(name)
        except Exception as exc:  # noqa: BLE001 — the database is away: judge by the clock
            if held is not None and now < held.until - self.ttl / 3:
                logger.warning("lease %s: cannot renew (%s); held until %s", name, exc, held.until)
                return True
            if self._held.pop(name, None) is not None:
                logger.warning("lease %s: cannot renew (%s); giving it up", name, exc)
            self.trouble[name] = f"{type(exc).__name__}"
            return False
        self.trouble.pop(name, None)
        return got

    async def release(self, name: str) -> None:
        """Give ``name`` up now, so another process need not wait for it to expire."""
        if self._held.pop(name, None) is None:
            return
        now = self._clock.now()
        try:
            async with self._store.write() as conn:
                await conn.execute(
                    update(leases)
                    .where(leases.c.name == name, leases.c.holder == self.holder)
                    .values(expires_at=now)
                )
        except Exception as exc:  # noqa: BLE001 — it expires by itself
            logger.warning("lease %s: could not release it (%s); it expires on its own", name, exc)

    async def hold(
        self,
        name: str,
        start: Callable[[], Awaitable[None]],
        stop: Callable[[], Awaitable[None]],
        stopping: asyncio.Event,
        *,
        running: bool = False,
    ) -> None:
        """Run ``start`` while this process holds ``name`` and ``stop`` when it loses it.

        ``running``: the caller already started it, holding the lease. Ends when
        ``stopping`` is set: stops what it started and releases the lease.
        """
        try:
            while not stopping.is_set():
                held = await self.holds(name)
                if held and not running:
                    try:
                        await start()
                    except Exception:  # e.g. the platform is down: try again next round
                        logger.exception("lease %s: starting failed; retrying", name)
                    else:
                        running = True
                elif not held and running:
                    logger.warning("lease %s: lost; this process stops its intake", name)
                    await stop()
                    running = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), (self.ttl / 3).total_seconds())
        finally:
            if running:
                await stop()
            await self.release(name)
