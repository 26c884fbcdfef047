"""Owned background tasks: every task is tracked, its failure logged, and cancelled on stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

logger = logging.getLogger(__name__)


class TaskSupervisor:
    """Keeps a strong reference to each task it spawns (PTB / aiogram pattern)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a named task that is owned until it ends."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("task %s crashed", task.get_name(), exc_info=exc)

    @property
    def running(self) -> list[str]:
        """Names of the tasks still running."""
        return sorted(t.get_name() for t in self._tasks)

    async def close(self) -> None:
        """Cancel every remaining task and wait for them to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def call_observers(observers: Iterable[Callable[..., None]], *args: Any) -> None:
    """Tell every observer; one that fails is logged and never stops the caller's work."""
    for observer in observers:
        try:
            observer(*args)
        except Exception:
            logger.exception("observer %r failed", observer)
