"""Crash safety: `carebot run` killed with -9 three times under a steady storm.

The small version of ``bench/crash.py`` (20 kills there): the fake platforms, run by the
test, keep their own records across the restarts, and must agree with the database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crash import crash_run


async def test_three_kill_9s_lose_nothing_and_double_nothing(db_url: str, tmp_path: Path) -> None:
    said: list[str] = []
    figures = await crash_run(
        kills=3, rate=15, db_url=db_url, workdir=tmp_path, seed=7, say=said.append
    )
    assert figures["mentions"] > 100  # a storm under way at every kill
    assert figures["acks"] > 50
    assert figures["lost"] == 0
    assert figures["duplicate_tickets"] == 0
    assert figures["duplicate_acks"] == 0
    assert figures["resends_refused"] == 0  # not even an attempt X had to refuse
    assert figures["missed_acks"] == 0
    assert figures["duplicate_notices"] <= figures["kills"]  # the documented bound
    assert figures["exit_code"] == 0  # the last one stopped cleanly on SIGTERM
    assert len([line for line in said if line.startswith("kill ")]) == 3


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_postgresql_restart_under_a_storm_loses_and_doubles_nothing(
    db_url: str, tmp_path: Path
) -> None:
    said: list[str] = []
    figures = await crash_run(
        kills=0, db_restarts=1, rate=15, db_url=db_url, workdir=tmp_path, seed=8, say=said.append
    )
    assert any(line.startswith("database restart 1/1") for line in said)
    assert figures["mentions"] > 20
    assert figures["lost"] == 0
    assert figures["duplicate_tickets"] == 0
    assert figures["duplicate_acks"] == 0
    assert figures["missed_acks"] == 0
    assert figures["exit_code"] == 0
