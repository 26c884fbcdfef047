"""``carebot report``: the figures a person reads, from a database seeded with known rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.cli import main
from bot.config import load_config
from bot.migrate import open_database, upgrade
from bot.models import mentions, outbox, ticket_events, tickets
from bot.store import make_engine
from tests.conftest import ConfigDir

# The period: three whole UTC days, ten days ago (so every deadline in it has passed).
D0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)
D1, D2 = D0 + timedelta(days=1), D0 + timedelta(days=2)
BEFORE, AFTER = D0 - timedelta(days=1), D0 + timedelta(days=3)
PERIOD = ["--since", f"{D0:%Y-%m-%d}", "--until", f"{D2:%Y-%m-%d}"]  # D2 included
NOW_TICKET_AGE = timedelta(minutes=2)

# (id, platform, received, status, category, ticket id)
MENTIONS: list[tuple[int, str, datetime, str, str | None, int | None]] = [
    (100, "x", BEFORE.replace(hour=10), "ticketed", "complaint", 10),
    (1, "x", D0.replace(hour=10), "ticketed", "complaint", 1),
    (2, "x", D0.replace(hour=11), "ticketed", "question", 2),
    (3, "telegram", D0.replace(hour=12), "ignored", "other", None),
    (4, "mastodon", D1.replace(hour=10), "ticketed", "complaint", 3),
    (5, "x", D1.replace(hour=11), "ticketed", "praise", 4),
    (6, "x", D1.replace(hour=12), "screened", None, None),
    (7, "webhook", D1.replace(hour=13), "ticketed", "complaint", 5),
    (8, "telegram", D2.replace(hour=10), "ticketed", "complaint", 6),
    (9, "x", D2.replace(hour=23, minute=59), "ticketed", "question", 7),
    (101, "x", AFTER.replace(hour=10), "ticketed", "complaint", 11),
]
TEXTS = {
    100: "refund refund refund",  # before the period
    1: "@acme_care my refund never arrived, still waiting for my refund",
    2: "@acme_care how do I change my address?",
    3: "lol nice weather",
    4: "@acme_care the refund page is broken https://acme.example/refund",
    5: "@acme_care love the new app",
    6: "@acme_care deals deals deals",
    7: "Acme's late delivery was a joke and the courier was rude",
    8: "@acme_care Refund still missing, late delivery again!!",
    9: "@acme_care where is my order?",
    101: "refund refund refund",  # after the period
    200: "@acme_care my parcel is lost",
}
# ticket id → (policy, acks as (state, seconds after receipt), first response after opening)
TICKETS: dict[int, tuple[str | None, list[tuple[str, float | None]], timedelta | None]] = {
    10: ("standard", [("sent", 1.0)], timedelta(minutes=1)),
    1: ("standard", [("sent", 2.0)], timedelta(minutes=20)),  # hit (30m)
    2: ("standard", [("sent", 4.0)], timedelta(minutes=45)),  # miss
    3: ("urgent", [("sent", 10.0)], timedelta(minutes=3)),  # hit (5m)
    4: ("kudos", [("sent", 6.0)], timedelta(hours=2)),  # no target
    5: ("standard", [("sent", 30.0), ("sent", 50.0)], None),  # miss: no reply, deadline past
    6: ("standard", [("failed", None)], None),  # miss; never acknowledged
    7: ("standard", [("pending", None)], timedelta(minutes=10)),  # hit; ack still pending
    11: ("standard", [("sent", 1.0)], timedelta(minutes=1)),
}
# (ticket, kind, at)
EVENTS = [
    (10, "resolved", BEFORE.replace(hour=11)),
    (10, "reopened", D0.replace(hour=8)),  # reopened before its resolution in the period
    (10, "resolved", D0.replace(hour=9)),  # resolved in the period, not reopened afterwards
    (1, "resolved", D0.replace(hour=11)),
    (1, "reopened", D1.replace(hour=9)),
    (1, "resolved", D1.replace(hour=12)),
    (3, "resolved", D1.replace(hour=11)),
    (7, "resolved", D2.replace(hour=12)),
    (2, "resolved", D2.replace(hour=13)),
    (2, "reopened", AFTER.replace(hour=9)),  # resolved in the period, reopened after it
]


async def _seed(db_url: str, config_dir: Path, *, recent: bool = False) -> None:
    """Migrate the database and write the rows above (``recent``: one ticket opened just now)."""
    escalation = load_config(config_dir, {"CAREBOT_DATABASE_URL": db_url}).escalation
    rows = list(MENTIONS)
    plan = dict(TICKETS)
    if recent:
        rows.append((200, "x", datetime.now(UTC) - NOW_TICKET_AGE, "ticketed", "complaint", 20))
        plan[20] = ("standard", [("sent", 1.5)], None)  # pending: 30m not over yet
    received = {ticket: at for _, _, at, _, _, ticket in rows if ticket is not None}
    engine = make_engine(db_url)
    try:
        await open_database(engine)
        async with engine.begin() as conn:
            for tid, (policy, acks, first) in plan.items():
                mention = next(m for m in rows if m[5] == tid)
                opened = received[tid] + timedelta(milliseconds=200)
                await conn.execute(
                    tickets.insert().values(
                        id=tid,
                        mention_id=mention[0],
                        platform=mention[1],
                        customer_id=f"c{tid}",
                        customer_handle=f"customer{tid}",
                        state="open",
                        category=mention[4],
                        priority=1 if policy == "urgent" else 2,
                        confidence=0.9,
                        reasons=[],
                        policy=policy,
                        policy_snapshot=escalation.snapshot(policy),
                        created_at=opened,
                        updated_at=opened,
                        first_response_at=None if first is None else opened + first,
                    )
                )
                for n, (state, after) in enumerate(acks):
                    sent = None if after is None else received[tid] + timedelta(seconds=after)
                    await conn.execute(
                        outbox.insert().values(
                            ticket_id=tid,
                            kind="ack",
                            platform=mention[1],
                            destination={},
                            text=f"ack {tid}",
                            idempotency_key=f"ack:{tid}:{n}",
                            state=state,
                            priority=2,
                            attempts=1,
                            next_attempt_at=opened,
                            created_at=opened,
                            sent_at=sent,
                        )
                    )
                if acks[0][0] == "sent":
                    await conn.execute(
                        update(tickets)
                        .where(tickets.c.id == tid)
                        .values(acknowledged_at=received[tid] + timedelta(seconds=acks[0][1] or 0))
                    )
            for mid, platform, at, status, category, tid in rows:
                await conn.execute(
                    mentions.insert().values(
                        id=mid,
                        platform=platform,
                        external_id=f"e{mid}",
                        author_id=f"a{mid}",
                        author_handle=f"author{mid}",
                        text=TEXTS[mid],
                        created_at=at,
                        received_at=at,
                        status=status,
                        category=category,
                        ticket_id=tid,
                    )
                )
            for tid, kind, at in EVENTS:
                await conn.execute(
                    ticket_events.insert().values(ticket_id=tid, at=at, actor="Sam", kind=kind)
                )
    finally:
        await engine.dispose()


async def _report(
    config: ConfigDir, db_url: str, args: Sequence[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    capsys.readouterr()
    argv = ["report", "--config", str(config.path), *args]
    code = await asyncio.to_thread(main, argv, {"CAREBOT_DATABASE_URL": db_url})
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _section(out: str, heading: str) -> list[list[str]]:
    """The data rows (cells split on spaces) of the first table after the line ``heading``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rule = next(
        i for i in range(start, len(lines)) if "-" in lines[i] and set(lines[i]) <= {"-", " "}
    )
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


async def test_report_shows_volume_latency_sla_reopens_and_complaint_terms(
    config_copy: ConfigDir, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed(db_url, config_copy.path)
    code, out, err = await _report(config_copy, db_url, PERIOD, capsys)
    assert (code, err) == (0, "")
    days = [f"{d:%Y-%m-%d}" for d in (D0, D1, D2)]
    assert out.splitlines()[0] == (
        f"carebot report: {days[0]} 00:00 to {AFTER:%Y-%m-%d} 00:00 UTC (3 days)"
    )
    # day, complaint, question, praise, other, screened, total, tickets opened
    assert _section(out, "Mentions by category") == [
        [days[0], "1", "1", "0", "1", "0", "3", "2"],
        [days[1], "2", "0", "1", "0", "1", "4", "3"],
        [days[2], "1", "1", "0", "0", "0", "2", "2"],
        ["total", "4", "2", "1", "1", "1", "9", "7"],
    ]
    assert "complaint  question  praise  other  screened  total  tickets opened" in out
    # day, x, telegram, mastodon, webhook, total
    assert _section(out, "Mentions by platform") == [
        [days[0], "2", "1", "0", "0", "3"],
        [days[1], "2", "0", "1", "1", "4"],
        [days[2], "1", "1", "0", "0", "2"],
        ["total", "5", "2", "1", "1", "9"],
    ]
    # acks after 2, 4, 6, 10 and 30 s (the earlier of ticket 5's two); 6 failed, 7 pending
    assert _section(out, "Acknowledgement latency") == [
        ["5", "6.0s", "22.0s", "29.2s", "30.0s", "2", "(1", "pending,", "1", "failed)"]
    ]
    # replies after 3m, 10m, 20m, 45m and 2h; tickets 5 and 6 have none
    assert _section(out, "Time to first human response") == [
        ["5", "20m00s", "1h30m", "1h57m", "2h00m", "2"]
    ]
    sla = out[out.index("First-response SLA") :]
    assert "no first-response target setting" in sla
    assert "standard 30m, urgent 5m; none for kudos" in " ".join(sla.split())
    assert _section(sla, "  category") == [
        ["complaint", "4", "2", "2", "0", "0", "50.0%"],
        ["question", "2", "1", "1", "0", "0", "50.0%"],
        ["praise", "1", "0", "0", "0", "1", "n/a"],
        ["total", "7", "3", "3", "0", "1", "50.0%"],
    ]
    assert "Reopen rate: 2 of 5 tickets resolved in the period reopened afterwards: 40.0%" in out
    terms = _section(out, "Most frequent complaint terms (4 complaint mentions")
    # handles, the link, stopwords and the brand ("Acme's") are left out; ties alphabetical
    assert terms[:3] == [["refund", "3"], ["delivery", "2"], ["late", "2"]]
    assert [t[0] for t in terms[3:]] == [
        "arrived",
        "broken",
        "courier",
        "joke",
        "missing",
        "page",
        "rude",
    ]
    assert {n for _, n in terms[3:]} == {"1"}
    assert _section(out, "  phrase") == [["late", "delivery", "2"]]

    code, out, err = await _report(config_copy, db_url, [*PERIOD, "--json"], capsys)
    assert (code, err) == (0, "")
    figures = json.loads(out)
    assert [d["mentions"] for d in figures["volume"]["days"]] == [3, 4, 2]
    assert figures["volume"]["total"]["by_category"] == {
        "complaint": 4,
        "question": 2,
        "praise": 1,
        "other": 1,
        "screened": 1,
    }
    assert figures["volume"]["total"]["by_platform"] == {
        "x": 5,
        "telegram": 2,
        "mastodon": 1,
        "webhook": 1,
    }
    assert figures["volume"]["total"]["tickets_opened"] == 7
    ack = figures["ack_latency"]
    assert (ack["acknowledged"], ack["p50"], ack["max"], ack["not_acknowledged"]) == (
        5,
        6.0,
        30.0,
        2,
    )
    assert figures["first_response"]["p50"] == 1200.0
    assert figures["sla"]["total"] == {
        "tickets": 7,
        "hit": 3,
        "miss": 3,
        "pending": 0,
        "no_target": 1,
        "hit_rate": 0.5,
    }
    assert figures["sla"]["targets"] == {"kudos": None, "standard": 1800.0, "urgent": 300.0}
    assert figures["reopen"] == {"resolved": 5, "reopened": 2, "rate": 0.4}
    assert figures["complaint_terms"]["words"][0] == {"term": "refund", "mentions": 3}
    assert figures["complaint_terms"]["phrases"] == [{"term": "late delivery", "mentions": 2}]


async def test_an_open_ticket_within_its_target_is_pending_and_an_empty_period_says_so(
    config_copy: ConfigDir, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await _seed(db_url, config_copy.path, recent=True)
    code, out, _ = await _report(config_copy, db_url, ["--since", "1h", "--json"], capsys)
    assert code == 0
    figures = json.loads(out)
    assert figures["mentions"] == 1
    assert figures["sla"]["by_category"] == {
        "complaint": {
            "tickets": 1,
            "hit": 0,
            "miss": 0,
            "pending": 1,
            "no_target": 0,
            "hit_rate": None,
        }
    }
    assert figures["ack_latency"]["p50"] == 1.5
    code, out, err = await _report(
        config_copy, db_url, ["--since", "2020-01-01", "--until", "2020-01-02"], capsys
    )
    assert (code, err) == (0, "")
    assert out == "no mentions between 2020-01-01 00:00 and 2020-01-03 00:00 UTC\n"


async def test_png_chart_of_volume_by_category(
    config_copy: ConfigDir, sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    await _seed(sqlite_url, config_copy.path)
    chart = tmp_path / "charts" / "week.png"
    chart.parent.mkdir()
    code, out, err = await _report(config_copy, sqlite_url, [*PERIOD, "--png", str(chart)], capsys)
    assert code == 0
    assert err == f"chart written to {chart}\n"
    assert out.startswith("carebot report:")
    assert [p.name for p in chart.parent.iterdir()] == ["week.png"]  # no temporary file left
    with Image.open(chart) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 400 <= width <= 3000
        assert 300 <= height <= 2000
        extrema = image.convert("L").getextrema()
        assert extrema[0] < 100  # dark text and bars
        assert extrema[1] > 200  # on a light ground
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None
        assert len(colours) > 20

    # A destination that cannot be written: a clear error, exit 2, no traceback.
    for bad in (tmp_path / "missing" / "c.png", chart.parent):
        code, _, err = await _report(config_copy, sqlite_url, [*PERIOD, "--png", str(bad)], capsys)
        assert code == 2
        assert err.startswith(f"carebot report: cannot write {bad}: ")
        assert "Traceback" not in err
    assert [p.name for p in chart.parent.iterdir()] == ["week.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since", "soon"],
            "carebot report: --since: expected a duration such as 7d, 24h or 90m, or an ISO "
            "date such as 2026-11-16, got 'soon'\n",
        ),
        (
            ["--since", "2026-13-01"],
            "carebot report: --since: expected a duration such as 7d, 24h or 90m, or an ISO "
            "date such as 2026-11-16, got '2026-13-01': month must be in 1..12\n",
        ),
        (["--until", "7x"], "carebot report: --until: expected a duration such as 7d"),
        (
            ["--since", "2026-11-10", "--until", "2026-11-09"],
            "carebot report: --since (2026-11-10 00:00 UTC) must be before --until "
            "(2026-11-10 00:00 UTC)\n",
        ),
    ],
)
def test_a_bad_period_is_a_clear_error_with_exit_2(
    config_copy: ConfigDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    env = {"CAREBOT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"}
    code = main(["report", "--config", str(config_copy.path), *args], environ=env)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.startswith(message)
    assert captured.out == ""
    assert not (tmp_path / "none.db").exists()


async def test_a_database_without_the_current_schema_is_refused_and_left_alone(
    config_copy: ConfigDir, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    code, _, err = await _report(config_copy, f"sqlite+aiosqlite:///{missing}", [], capsys)
    assert code == 3
    assert err == f"carebot report: cannot read the database: no file {missing}\n"
    assert not missing.exists()  # reading never creates a database

    engine = make_engine(db_url)
    try:
        if db_url.startswith("sqlite"):  # an empty file: the schema was never created
            async with engine.begin() as conn:
                await conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
        code, _, err = await _report(config_copy, db_url, [], capsys)
        assert code == 3
        assert "holds no carebot data (its schema was never created)" in err
        assert err.endswith("run `carebot migrate` first\n")

        await upgrade(engine, "0005")
        code, _, err = await _report(config_copy, db_url, [], capsys)
        assert code == 3
        assert "has schema revision 0005, behind this carebot's" in err
        assert err.endswith("run `carebot migrate` first\n")
        await _assert_still_at(engine, "0005")  # the report never migrates
    finally:
        await engine.dispose()


async def _assert_still_at(engine: Any, revision: str) -> None:
    from bot.migrate import current

    assert await current(engine) == revision
