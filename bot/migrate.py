"""Alembic, driven from code: upgrade at start-up inside the running loop, or from the CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations
from bot.errors import StartupError

SCRIPT_LOCATION = Path(migrations.__file__).parent
MIGRATION_LOCK = 0x6361726562  # "careb": the advisory lock that serialises migrations


def alembic_config(url: str) -> AlembicConfig:
    """An Alembic config without an ini file, pointing at the packaged migrations."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine``, sharing its connection (no nested event loop)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))

    def _run(sync_conn: Connection) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # processes starting together migrate in turn
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(_run)


def _missing_folder(database: str) -> Path | None:
    """The folder a SQLite database file would live in, if it does not exist."""
    if database.startswith("file:"):
        return None
    folder = Path(database).expanduser().parent
    return None if folder.is_dir() else folder


async def open_database(engine: AsyncEngine) -> None:
    """Upgrade the schema at start-up; a database that cannot be reached stops start-up.

    Raises:
        StartupError: naming the database (password hidden) and what went wrong.
    """
    where = engine.url.render_as_string(hide_password=True)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        # Checked first: a failed aiosqlite open leaves its worker thread to report the
        # failure into an event loop that may be gone by then.
        folder = await asyncio.to_thread(_missing_folder, database)
        if folder is not None:
            raise StartupError(
                f"cannot open the database {where}: unable to open database file "
                f"(the directory {folder} does not exist)"
            )
    try:
        await upgrade(engine)
    except (OSError, SQLAlchemyError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StartupError(f"cannot open the database {where}: {detail}") from exc


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Downgrade the database behind ``engine``."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))

    def _run(sync_conn: Connection) -> None:
        cfg.attributes["connection"] = sync_conn
        command.downgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(_run)


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext  # noqa: PLC0415 — CLI-only path

    def _get(sync_conn: Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_get)
