"""Group commit: sources wait on a full queue, and batching neither loses nor doubles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bot.clock import SystemClock
from bot.config import load_config
from bot.domain import Mention, Platform
from bot.migrate import open_database
from bot.models import mentions, tickets
from bot.pipeline import Pipeline, Screening, Tuning
from bot.store import CursorUpdate, Store, make_engine
from bot.triage import TriageClassifier
from tests.conftest import ConfigDir


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    engine = make_engine(sqlite_url)
    await open_database(engine)
    yield Store(engine, SystemClock())
    await engine.dispose()


def make_pipeline(config_copy: ConfigDir, store: Store, **options: int) -> Pipeline:
    config = load_config(config_copy.path, {})
    tuning = Tuning(
        classifier=TriageClassifier(config.rules, config.model),
        templates=config.templates,
        escalation=config.escalation,
        screening=Screening.from_lists([], []),
        brand="Acme",
    )
    return Pipeline(
        store=store,
        tuning=tuning,
        adapters={},
        ref_prefix="CB-",
        **options,  # type: ignore[arg-type]
    )


def mention(i: int) -> Mention:
    return Mention(
        Platform.WEBHOOK,
        f"src:{i}",
        f"src:author-{i}",
        f"author{i}",
        f"my order {i} never arrived",
        datetime.now(UTC),
    )


async def counts(store: Store) -> tuple[int, int, int]:
    async with store.read() as conn:
        stored = (await conn.execute(select(func.count()).select_from(mentions))).scalar_one()
        undecided = (
            await conn.execute(
                select(func.count()).select_from(mentions).where(mentions.c.status == "received")
            )
        ).scalar_one()
        opened = (await conn.execute(select(func.count()).select_from(tickets))).scalar_one()
    return stored, undecided, opened


async def test_a_full_queue_makes_sources_wait_and_loses_nothing(
    config_copy: ConfigDir, store: Store
) -> None:
    pipeline = make_pipeline(config_copy, store, queue_batches=2, group_size=1)
    writer = asyncio.create_task(pipeline.run())
    try:
        async with store.write():  # the database is busy: the writer cannot commit
            submits = [asyncio.create_task(pipeline.submit([mention(i)])) for i in range(6)]
            await asyncio.sleep(0.3)
            assert pipeline.queued == 2  # bounded: the other sources wait their turn
            assert not any(t.done() for t in submits)  # none is told "stored" early
            assert await counts(store) == (0, 0, 0)
        await asyncio.wait_for(asyncio.gather(*submits), 10)
        assert await counts(store) == (6, 0, 6)
    finally:
        await pipeline.stop(writer, timedelta(seconds=5))


async def test_redelivered_batches_in_one_group_are_stored_once(
    config_copy: ConfigDir, store: Store
) -> None:
    pipeline = make_pipeline(config_copy, store, group_size=1000)
    writer = asyncio.create_task(pipeline.run())
    try:
        batches = [[mention(i) for i in range(start, start + 10)] for start in range(0, 50, 5)]
        # Overlapping batches (each mention in two of them) and their cursors, all queued at once.
        await asyncio.gather(
            *(pipeline.submit(b, CursorUpdate("src", str(n))) for n, b in enumerate(batches))
        )
    finally:
        await pipeline.stop(writer, timedelta(seconds=5))
    assert await counts(store) == (55, 0, 55)
    assert (await store.get_cursor("src")) is not None


async def test_stop_commits_what_is_queued_then_refuses_intake(
    config_copy: ConfigDir, store: Store
) -> None:
    pipeline = make_pipeline(config_copy, store, group_size=3)
    writer = asyncio.create_task(pipeline.run())
    submits = [asyncio.create_task(pipeline.submit([mention(i)])) for i in range(20)]
    await asyncio.sleep(0)  # they are queued
    await pipeline.stop(writer, timedelta(seconds=10))
    await asyncio.gather(*submits)
    assert await counts(store) == (20, 0, 20)
    with pytest.raises(RuntimeError, match="stopping"):
        await pipeline.submit([mention(99)])
