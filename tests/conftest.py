"""Shared fixtures: databases (SQLite always, PostgreSQL when configured), configs, the X fake."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from sqlalchemy.engine import make_url

from bot.sandbox.telegram_fake import FakeTelegram
from bot.sandbox.x_fake import FakeX

REPO = Path(__file__).resolve().parent.parent
PG_ENV = "CAREBOT_TEST_DATABASE_URL"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CI") and not os.environ.get(PG_ENV):
        raise pytest.UsageError(f"CI must run the PostgreSQL tests: set {PG_ENV}")


async def _fresh_pg_database(base_url: str) -> str:
    """Create an empty database for one test on the configured server; return its URL."""
    url = make_url(base_url)
    name = f"carebot_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(base_url: str, test_url: str) -> None:
    url = make_url(base_url)
    conn = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, database=url.database
    )
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{make_url(test_url).database}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'carebot.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(
            f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+asyncpg://postgres@127.0.0.1/test)"
        )
    url = await _fresh_pg_database(base)
    yield url
    await _drop_pg_database(base, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file for tests that need only one dialect."""
    return f"sqlite+aiosqlite:///{tmp_path / 'carebot.db'}"


class ConfigDir:
    """A writable copy of the repository's default config."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, name: str) -> dict[str, Any]:
        return yaml.safe_load((self.path / name).read_text(encoding="utf-8")) or {}

    def write(self, name: str, data: dict[str, Any]) -> None:
        (self.path / name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def update(self, name: str, **sections: dict[str, Any]) -> None:
        data = self.read(name)
        for key, value in sections.items():
            merged = dict(data.get(key) or {})
            merged.update(value)
            data[key] = merged
        self.write(name, data)


@pytest.fixture
def config_copy(tmp_path: Path) -> Iterator[ConfigDir]:
    """The default config, copied so a test may edit it."""
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    return ConfigDir(target)


@pytest.fixture
async def fake_x() -> AsyncIterator[FakeX]:
    """A running fake X API."""
    fake = FakeX()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def fake_tg() -> AsyncIterator[FakeTelegram]:
    """A running fake Telegram Bot API (the staff chat)."""
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root handlers and every logger's level back after a test that reconfigures."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {
        name: logger.level
        for name, logger in logging.root.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):  # loggers made during the test: unset
            logger.setLevel(levels.get(name, logging.NOTSET))
