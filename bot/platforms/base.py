"""The adapter contract every platform implements (open → start → stop → close)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from bot.domain import Mention, Platform
from bot.store import CursorUpdate
from bot.tasks import TaskSupervisor


class MentionSink(Protocol):
    """Where adapters hand over what they received (the pipeline)."""

    async def submit(self, batch: Sequence[Mention], cursor: CursorUpdate | None = None) -> None:
        """Store ``batch`` (and move ``cursor`` in the same transaction), then process it."""
        ...


class PlatformAdapter(abc.ABC):
    """One social platform: turns its events into Mentions and posts replies.

    ``open`` verifies credentials and learns our own identity, ``start`` begins intake, ``stop``
    ends intake only (replies must still work while the outbox drains), ``close`` releases
    clients. ``send`` and ``find_delivery`` raise only ``bot.errors.AdapterError`` subclasses.
    """

    platform: ClassVar[Platform]
    #: Intake only one process may run at a time (a polled source): its lease's name.
    intake_lease: str | None = None
    #: Sending whose rate limits are counted in memory: one process at a time sends.
    send_lease: str | None = None

    @property
    @abc.abstractmethod
    def own_account_ids(self) -> frozenset[str]:
        """Author ids that are our own accounts on this platform (never answered)."""

    def intake_problem(self) -> str | None:
        """What is wrong with this source's intake now (None: fine, or nothing to poll)."""
        return None

    @abc.abstractmethod
    async def open(self) -> None:
        """Verify credentials; raise ``StartupError`` when the platform refuses them."""

    @abc.abstractmethod
    async def start(self, sink: MentionSink, supervisor: TaskSupervisor) -> None:
        """Begin intake; background work is spawned on ``supervisor``."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """End intake (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release clients (idempotent)."""

    @abc.abstractmethod
    def reply_destination(self, mention: Mention) -> dict[str, Any] | None:
        """Where a reply to ``mention`` goes (JSON stored on the outbox row); None: nowhere."""

    @abc.abstractmethod
    async def send(self, destination: dict[str, Any], text: str, idempotency_key: str) -> str:
        """Post ``text``; return the platform's id for the new message."""

    @abc.abstractmethod
    async def find_delivery(self, destination: dict[str, Any], text: str) -> str | None:
        """Look for a message we already posted (after a crash mid-send); its id, or None."""
