"""The escalation ladder: the sequence of staff notices a ticket produces over its life."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain import TicketState
from bot.ladder import (
    MIN_INTERVAL,
    LadderState,
    Notice,
    apply_notice,
    due,
    min_gap,
    next_due,
    policy_from_snapshot,
    quiet_until,
    schedule,
)
from bot.policy import EscalationFile, Policy, QuietHours, Step

T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)  # a Monday, British Summer Time (UTC+1)
LONDON = ZoneInfo("Europe/London")

# The brief's ladder: tier 1 at once, a reminder at +10m, tier 2 (leads) at +30m, then every
# 30m from step 2 (support reminder, leads, support reminder, ...) until resolved.
YAML = """
policies:
  standard:
    steps:
      - {after: 0s, notify: support}
      - {after: 10m, notify: support}
      - {after: 30m, notify: leads, mention_role: lead, mention: [dana]}
    repeat_every: 30m
    repeat_from_step: 2
    claim_idle: 20m
  night:
    steps:
      - {after: 0s, notify: support}
      - {after: 10m, notify: support}
      - {after: 30m, notify: leads}
    repeat_every: 30m
    repeat_from_step: 2
    quiet_hours: {start: "22:00", end: "07:00", timezone: Europe/London}
  night-urgent:
    steps:
      - {after: 0s, notify: support}
      - {after: 10m, notify: support}
      - {after: 30m, notify: leads}
    repeat_every: 30m
    repeat_from_step: 2
    quiet_hours: {start: "22:00", end: "07:00", timezone: Europe/London}
    urgent: true
  kudos:
    steps:
      - {after: 0s, notify: kudos}
"""
FILE = EscalationFile.model_validate(yaml.safe_load(YAML))
STANDARD = FILE.policies["standard"]
NIGHT = FILE.policies["night"]
NIGHT_URGENT = FILE.policies["night-urgent"]
KUDOS = FILE.policies["kudos"]


def at(hhmm: str, day: datetime = T0) -> datetime:
    """A UTC time on ``day``'s date ("09:30"), or the next date with a "+" ("+06:00")."""
    plus = hhmm.startswith("+")
    hh, mm = hhmm.lstrip("+").split(":")
    base = day.replace(hour=int(hh), minute=int(mm), second=0, microsecond=0)
    return base + timedelta(days=1) if plus else base


Event = Callable[[LadderState, datetime], LadderState]


def claim(s: LadderState, now: datetime) -> LadderState:
    return replace(s, state=TicketState.CLAIMED, claimed_at=now, last_staff_reply_at=None)


def staff_reply(s: LadderState, now: datetime) -> LadderState:
    return replace(s, last_staff_reply_at=now)


def release(s: LadderState, now: datetime) -> LadderState:
    return replace(s, state=TicketState.ESCALATED, claimed_at=None)


def resolve(s: LadderState, now: datetime) -> LadderState:
    return replace(s, state=TicketState.RESOLVED)


def snooze(until: datetime) -> Event:
    def apply(s: LadderState, now: datetime) -> LadderState:
        return replace(s, state=TicketState.SNOOZED, snoozed_until=until)

    return apply


@dataclass
class Life:
    """What staff saw: (time, kind, group, reason) per notice, and the final state."""

    seen: list[tuple[datetime, str, str, str]]
    notices: list[Notice]
    state: LadderState


def live(
    policy: Policy,
    opened: datetime,
    events: Sequence[tuple[datetime, Event]] = (),
    *,
    until: datetime,
    down: tuple[datetime, datetime] | None = None,
) -> Life:
    """Run a ticket the way the sweep does: wake at ``schedule``, send ``due``, repeat.

    ``down`` is an outage: the sweep does not run inside it and wakes at its end.
    """
    s, now = LadderState(opened_at=opened), opened
    todo = sorted(events, key=lambda e: e[0])
    life = Life([], [], s)
    for _ in range(1000):
        wake = schedule(policy, s, now)
        if todo and (wake is None or todo[0][0] < wake):
            now, event = todo.pop(0)
            s = event(s, now)
            continue
        if wake is None or wake > until:
            break
        assert wake >= now
        scheduled = wake
        if down is not None and down[0] <= wake < down[1]:
            wake = down[1]
        now = wake
        notice = due(policy, s, now)
        if wake == scheduled:
            assert notice is not None, f"schedule promised a notice at {now}"
        if notice is None:
            continue
        assert schedule(policy, s, now) == now
        life.seen.append((now, notice.kind, notice.group, notice.reason))
        life.notices.append(notice)
        s = apply_notice(s, notice)
    life.state = s
    return life


# --- the brief's scenario ---------------------------------------------------------------------


def test_tiers_then_repeats_until_resolved() -> None:
    life = live(STANDARD, T0, [(at("11:15"), resolve)], until=at("+09:00"))
    assert life.seen == [
        (at("09:00"), "tier", "support", "tier 1 (new ticket)"),
        (at("09:10"), "tier", "support", "tier 1 reminder (10m without a resolution)"),
        (at("09:30"), "tier", "leads", "tier 2 (30m without a resolution)"),
        (at("10:00"), "repeat", "support", "repeat 1, tier 1 (1h without a resolution)"),
        (at("10:30"), "repeat", "leads", "repeat 2, tier 2 (1h30m without a resolution)"),
        (at("11:00"), "repeat", "support", "repeat 3, tier 1 (2h without a resolution)"),
    ]
    assert [n.number for n in life.notices] == [1, 2, 3, 4, 5, 6]
    assert [n.rung for n in life.notices] == [1, 2, 3, 4, 5, 6]
    assert [n.step_index for n in life.notices] == [0, 1, 2, 1, 2, 1]
    leads = life.notices[2]
    assert (leads.mention, leads.mention_role) == (("dana",), "lead")
    assert life.notices[0].mention == ()
    resolved = life.state
    assert resolved.state is TicketState.RESOLVED
    for later in (at("11:15"), at("11:30"), at("+09:00"), at("09:00") + timedelta(days=400)):
        assert due(STANDARD, resolved, later) is None
        assert schedule(STANDARD, resolved, later) is None
    assert next_due(STANDARD, resolved) is None


def test_without_repeat_the_ladder_ends_after_its_last_step() -> None:
    life = live(KUDOS, T0, until=at("+09:00"))
    assert life.seen == [(at("09:00"), "tier", "kudos", "tier 1 (new ticket)")]
    assert next_due(KUDOS, life.state) is None
    assert schedule(KUDOS, life.state, at("09:01")) is None
    assert due(KUDOS, life.state, at("+09:00")) is None


def test_each_reminder_of_a_tier_is_numbered() -> None:
    policy = Policy(
        steps=[
            Step(after=timedelta(0), notify="support"),
            Step(after=timedelta(minutes=5), notify="support"),
            Step(after=timedelta(minutes=10), notify="support"),
            Step(after=timedelta(minutes=15), notify="leads"),
            Step(after=timedelta(minutes=20), notify="execs"),
        ]
    )
    life = live(policy, T0, until=at("12:00"))
    assert [reason for *_, reason in life.seen] == [
        "tier 1 (new ticket)",
        "tier 1 reminder (5m without a resolution)",
        "tier 1 reminder 2 (10m without a resolution)",
        "tier 2 (15m without a resolution)",
        "tier 3 (20m without a resolution)",
    ]


def test_steps_at_the_same_time_fan_out_to_every_group() -> None:
    policy = Policy(
        steps=[
            Step(after=timedelta(0), notify="support"),
            Step(after=timedelta(0), notify="leads"),
            Step(after=timedelta(minutes=10), notify="leads"),
        ]
    )
    life = live(policy, T0, until=at("12:00"))
    assert life.seen == [
        (at("09:00"), "tier", "support", "tier 1 (new ticket)"),
        (at("09:00"), "tier", "leads", "tier 2 (new ticket)"),
        (at("09:10"), "tier", "leads", "tier 2 reminder (10m without a resolution)"),
    ]


# --- claims -----------------------------------------------------------------------------------


def test_an_idle_claim_reescalates_and_a_staff_reply_resets_the_clock() -> None:
    events = [(at("09:05"), claim), (at("09:40"), staff_reply), (at("10:50"), resolve)]
    life = live(STANDARD, T0, events, until=at("+09:00"))
    assert life.seen == [
        (at("09:00"), "tier", "support", "tier 1 (new ticket)"),
        # claimed at 09:05: no reminder at 09:10, no tier 2 at 09:30
        (at("09:25"), "claim-idle", "support", "claim idle: claimed 20m ago, no staff reply yet"),
        # the reply at 09:40 moves the next one from 09:45 to 10:00
        (at("10:00"), "claim-idle", "support", "claim idle: last staff reply 20m ago"),
        (at("10:20"), "claim-idle", "support", "claim idle: last staff reply 40m ago"),
        (at("10:40"), "claim-idle", "support", "claim idle: last staff reply 1h ago"),
    ]
    assert [n.rung for n in life.notices] == [1, 1, 1, 1, 1]  # claim-idle keeps the rung
    assert [n.number for n in life.notices] == [1, 2, 3, 4, 5]


def test_claim_idle_goes_to_the_step_the_ladder_had_reached() -> None:
    life = live(STANDARD, T0, [(at("09:35"), claim)], until=at("10:10"))
    assert life.seen[-2:] == [
        (at("09:30"), "tier", "leads", "tier 2 (30m without a resolution)"),
        (at("09:55"), "claim-idle", "leads", "claim idle: claimed 20m ago, no staff reply yet"),
    ]
    assert life.notices[-1].mention_role == "lead"
    # claimed before any notice (tier 1 held): claim-idle goes to step 1
    s = claim(LadderState(opened_at=T0), at("09:00"))
    notice = due(STANDARD, s, at("09:20"))
    assert notice is not None
    assert (notice.kind, notice.group, notice.rung, notice.step_index) == (
        "claim-idle",
        "support",
        0,
        0,
    )


def test_a_released_claim_resumes_the_ladder_with_one_coalesced_notice() -> None:
    events = [(at("09:05"), claim), (at("10:02"), release)]
    life = live(STANDARD, T0, events, until=at("10:40"))
    assert life.seen == [
        (at("09:00"), "tier", "support", "tier 1 (new ticket)"),
        (at("09:25"), "claim-idle", "support", "claim idle: claimed 20m ago, no staff reply yet"),
        (at("09:45"), "claim-idle", "support", "claim idle: claimed 40m ago, no staff reply yet"),
        (
            at("10:02"),
            "tier",
            "leads",
            "tier 2 (1h2m without a resolution; 1 overdue step skipped)",
        ),
        (at("10:32"), "repeat", "support", "repeat 1, tier 1 (1h32m without a resolution)"),
    ]


def test_a_claimed_ticket_is_always_scheduled() -> None:
    s = claim(apply_notice(LadderState(opened_at=T0), _due(KUDOS, LadderState(T0), T0)), T0)
    assert next_due(KUDOS, s) == at("09:30")  # kudos has the default claim_idle of 30m
    assert schedule(KUDOS, s, at("09:01")) == at("09:30")


# --- snooze -----------------------------------------------------------------------------------


def test_snooze_holds_the_ladder_then_continues_without_a_burst() -> None:
    events = [(at("09:05"), snooze(at("10:00")))]
    life = live(STANDARD, T0, events, until=at("10:45"))
    assert life.seen == [
        (at("09:00"), "tier", "support", "tier 1 (new ticket)"),
        (
            at("10:00"),
            "tier",
            "leads",
            "tier 2 (1h without a resolution; 1 overdue step skipped; held by a snooze)",
        ),
        (at("10:30"), "repeat", "support", "repeat 1, tier 1 (1h30m without a resolution)"),
    ]
    snoozed = snooze(at("10:00"))(
        apply_notice(LadderState(T0), _due(STANDARD, LadderState(T0), T0)), T0
    )
    assert due(STANDARD, snoozed, at("09:30")) is None
    assert schedule(STANDARD, snoozed, at("09:05")) == at("10:00")
    assert next_due(STANDARD, snoozed) == at("09:10")  # next_due ignores the snooze


def test_a_snoozed_claim_wakes_with_a_claim_idle_notice() -> None:
    events = [(at("09:02"), claim), (at("09:03"), snooze(at("11:00")))]
    life = live(STANDARD, T0, events, until=at("11:10"))
    assert life.seen[1:] == [
        (
            at("11:00"),
            "claim-idle",
            "support",
            "claim idle: claimed 1h58m ago, no staff reply yet (held by a snooze)",
        )
    ]


# --- missed time ------------------------------------------------------------------------------


def test_a_long_outage_coalesces_to_one_notice() -> None:
    life = live(STANDARD, T0, until=at("12:45"), down=(at("09:01"), at("12:00")))
    assert life.seen == [
        (at("09:00"), "tier", "support", "tier 1 (new ticket)"),
        (
            at("12:00"),
            "tier",
            "leads",
            "tier 2 (3h without a resolution; 1 overdue step skipped)",
        ),
        (at("12:30"), "repeat", "support", "repeat 1, tier 1 (3h30m without a resolution)"),
    ]


def test_an_outage_during_repeats_sends_one_repeat() -> None:
    life = live(STANDARD, T0, until=at("14:40"), down=(at("10:01"), at("14:00")))
    assert life.seen[-3:] == [
        (at("10:00"), "repeat", "support", "repeat 1, tier 1 (1h without a resolution)"),
        (at("14:00"), "repeat", "leads", "repeat 2, tier 2 (5h without a resolution)"),
        (at("14:30"), "repeat", "support", "repeat 3, tier 1 (5h30m without a resolution)"),
    ]


def test_an_outage_from_the_opening_skips_to_the_highest_step() -> None:
    notice = _due(STANDARD, LadderState(opened_at=T0), at("12:00"))
    assert (notice.kind, notice.group, notice.rung) == ("tier", "leads", 3)
    assert notice.reason == "tier 2 (3h without a resolution; 2 overdue steps skipped)"
    after = apply_notice(LadderState(opened_at=T0), notice)
    assert due(STANDARD, after, at("12:00")) is None
    assert schedule(STANDARD, after, at("12:00")) == at("12:30")


def test_a_late_notice_pushes_the_next_one_to_the_minimum_gap() -> None:
    # tier 1 sent 8 minutes late: the reminder waits min_gap (10m) after it, not 2 minutes
    s = apply_notice(LadderState(opened_at=T0), _due(STANDARD, LadderState(T0), at("09:08")))
    assert next_due(STANDARD, s) == at("09:18")
    assert due(STANDARD, s, at("09:10")) is None


def test_reopen_restarts_the_ladder_from_the_reopen_time() -> None:
    resolved = resolve(live(STANDARD, T0, until=at("09:15")).state, at("09:20"))
    assert schedule(STANDARD, resolved, at("10:00")) is None
    reopened = LadderState(opened_at=at("10:00"), state=TicketState.REOPENED)
    life_seen = _due(STANDARD, reopened, at("10:00"))
    assert (life_seen.number, life_seen.reason) == (1, "tier 1 (new ticket)")


def test_short_intervals_are_floored_at_one_minute() -> None:
    policy = Policy(
        steps=[Step(after=timedelta(0), notify="support")],
        repeat_every=timedelta(seconds=1),
        claim_idle=timedelta(0),
    )
    assert min_gap(policy) == MIN_INTERVAL
    s = apply_notice(LadderState(opened_at=T0), _due(policy, LadderState(T0), T0))
    assert schedule(policy, s, T0) == at("09:01")
    claimed = claim(s, T0)
    assert schedule(policy, claimed, T0) == at("09:01")


def test_min_gap() -> None:
    assert min_gap(STANDARD) == timedelta(minutes=10)
    assert min_gap(KUDOS) == timedelta(minutes=30)  # only claim_idle applies


# --- quiet hours ------------------------------------------------------------------------------


def test_quiet_hours_hold_a_non_urgent_policy_across_midnight() -> None:
    opened = at("20:55")  # 21:55 in London (BST)
    life = live(NIGHT, opened, [(at("+07:15"), resolve)], until=at("+12:00"))
    assert life.seen == [
        (at("20:55"), "tier", "support", "tier 1 (new ticket)"),
        # 22:05 London is quiet: held until 07:00 London (06:00 UTC), then coalesced
        (
            at("+06:00"),
            "tier",
            "leads",
            "tier 2 (9h5m without a resolution; 1 overdue step skipped; held for quiet hours)",
        ),
        (at("+06:30"), "repeat", "support", "repeat 1, tier 1 (9h35m without a resolution)"),
        (at("+07:00"), "repeat", "leads", "repeat 2, tier 2 (10h5m without a resolution)"),
    ]


def test_an_urgent_policy_ignores_quiet_hours() -> None:
    opened = at("20:55")
    life = live(NIGHT_URGENT, opened, [(at("22:10"), resolve)], until=at("+12:00"))
    assert [(t, kind, group) for t, kind, group, _ in life.seen] == [
        (at("20:55"), "tier", "support"),
        (at("21:05"), "tier", "support"),
        (at("21:25"), "tier", "leads"),
        (at("21:55"), "repeat", "support"),
    ]


def test_quiet_hours_hold_claim_idle_notices_too() -> None:
    s = claim(
        apply_notice(LadderState(at("20:55")), _due(NIGHT, LadderState(at("20:55")), at("20:55"))),
        at("20:56"),
    )
    assert next_due(NIGHT, s) == at("21:26")  # 22:26 London: quiet
    assert due(NIGHT, s, at("21:26")) is None
    assert schedule(NIGHT, s, at("21:00")) == at("+06:00")
    notice = _due(NIGHT, s, at("+06:00"))
    assert notice.reason == (
        "claim idle: claimed 9h4m ago, no staff reply yet (held for quiet hours)"
    )


@pytest.mark.parametrize(
    ("opened", "held_until"),
    [
        # spring forward, Sunday 30 March 2025: 22:00 GMT (UTC) to 07:00 BST (06:00 UTC)
        (datetime(2025, 3, 29, 21, 50, tzinfo=UTC), datetime(2025, 3, 30, 6, 0, tzinfo=UTC)),
        # fall back, Sunday 26 October 2025: 22:00 BST (21:00 UTC) to 07:00 GMT (07:00 UTC)
        (datetime(2025, 10, 25, 20, 50, tzinfo=UTC), datetime(2025, 10, 26, 7, 0, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_quiet_hours_follow_the_clock_change(opened: datetime, held_until: datetime) -> None:
    life = live(NIGHT, opened, until=held_until + timedelta(minutes=1))
    assert [(t, group) for t, _, group, _ in life.seen] == [
        (opened, "support"),
        (held_until, "leads"),
    ]
    assert held_until.astimezone(LONDON).time() == time(7, 0)


def test_a_window_ending_inside_the_spring_forward_gap_ends_at_the_jump() -> None:
    # London clocks jump from 01:00 GMT to 02:00 BST at 01:00 UTC: 01:30 never happens
    quiet = QuietHours(start=time(0, 0), end=time(1, 30), timezone="Europe/London")
    jump = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
    assert quiet_until(quiet, jump - timedelta(minutes=15)) == jump
    assert quiet_until(quiet, jump) is None


def test_a_window_starting_inside_the_spring_forward_gap_starts_at_the_jump() -> None:
    quiet = QuietHours(start=time(1, 15), end=time(3, 0), timezone="Europe/London")
    jump = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
    assert quiet_until(quiet, jump - timedelta(seconds=1)) is None
    assert quiet_until(quiet, jump) == datetime(2025, 3, 30, 2, 0, tzinfo=UTC)  # 03:00 BST


def test_a_window_ending_in_the_repeated_hour_ends_the_first_time() -> None:
    # London shows 01:00-02:00 twice on 26 October 2025 (BST, then GMT)
    quiet = QuietHours(start=time(23, 0), end=time(1, 30), timezone="Europe/London")
    first = datetime(2025, 10, 26, 0, 30, tzinfo=UTC)  # 01:30 BST
    assert quiet_until(quiet, datetime(2025, 10, 25, 22, 0, tzinfo=UTC)) == first
    assert quiet_until(quiet, first) is None
    assert quiet_until(quiet, datetime(2025, 10, 26, 1, 15, tzinfo=UTC)) is None  # 01:15 GMT


def test_a_daytime_window_and_an_empty_window() -> None:
    lunch = QuietHours(start=time(12, 0), end=time(13, 0))
    assert quiet_until(lunch, at("12:30")) == at("13:00")
    assert quiet_until(lunch, at("13:00")) is None
    assert quiet_until(lunch, at("11:59")) is None
    never = QuietHours(start=time(9, 0), end=time(9, 0))
    assert quiet_until(never, at("09:00")) is None


# --- snapshots and validation -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILE.policies))
def test_policy_snapshot_round_trip(name: str) -> None:
    snapshot = FILE.snapshot(name)
    assert snapshot is not None
    stored = json.loads(json.dumps(snapshot))  # as the database gives it back
    assert policy_from_snapshot(stored) == (name, FILE.policies[name])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: ["not", "a", "mapping"], "must be a JSON object, got list"),
        (lambda s: {k: v for k, v in s.items() if k != "name"}, "has no 'name'"),
        (lambda s: {**s, "steps": []}, r"'standard' is corrupt: steps: List should have"),
        (lambda s: {**s, "steps": [{"after": "soon", "notify": "x"}]}, r"steps\.0\.after"),
        (lambda s: {**s, "colour": "red"}, "colour: Extra inputs are not permitted"),
        (lambda s: {**s, "repeat_from_step": 9}, "repeat_from_step is 9"),
        (
            lambda s: {**s, "quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars"}},
            "unknown time zone 'Mars'",
        ),
    ],
    ids=[
        "not-a-mapping",
        "no-name",
        "no-steps",
        "bad-duration",
        "extra-key",
        "bad-repeat",
        "zone",
    ],
)
def test_a_corrupt_snapshot_is_a_clear_value_error(
    mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    snapshot = FILE.snapshot("standard")
    assert snapshot is not None
    with pytest.raises(ValueError, match=message):
        policy_from_snapshot(mutate(dict(snapshot)))


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2025, 6, 2, 9, 0)  # noqa: DTZ001 — the point of the test
    with pytest.raises(ValueError, match="opened_at must be timezone-aware"):
        LadderState(opened_at=naive)
    with pytest.raises(ValueError, match="claimed_at must be timezone-aware"):
        LadderState(opened_at=T0, state=TicketState.CLAIMED, claimed_at=naive)
    s = LadderState(opened_at=T0)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        due(STANDARD, s, naive)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        schedule(STANDARD, s, naive)
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        quiet_until(QuietHours(start=time(22), end=time(7)), naive)


def test_aware_times_in_other_zones_are_converted_to_utc() -> None:
    s = LadderState(opened_at=T0.astimezone(LONDON))
    assert s.opened_at.tzinfo is UTC
    assert s.opened_at == T0
    notice = _due(STANDARD, s, at("09:10").astimezone(ZoneInfo("Asia/Tokyo")))
    assert notice.at.tzinfo is UTC


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"state": TicketState.CLAIMED}, "needs claimed_at"),
        ({"state": TicketState.SNOOZED}, "needs snoozed_until"),
        ({"notices_sent": 1}, "last_notice_at must be set"),
        ({"last_notice_at": T0}, "last_notice_at must be set"),
        ({"rung": 2}, "without sending a notice"),
        ({"rung": -1}, "must not be negative"),
        ({"state": "lost"}, "'lost' is not a valid TicketState"),
    ],
)
def test_contradictory_states_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LadderState(opened_at=T0, **fields)


def test_a_notice_is_applied_once() -> None:
    s = LadderState(opened_at=T0)
    notice = _due(STANDARD, s, T0)
    s = apply_notice(s, notice)
    with pytest.raises(ValueError, match="applied already"):
        apply_notice(s, notice)


def _due(policy: Policy, s: LadderState, now: datetime) -> Notice:
    notice = due(policy, s, now)
    assert notice is not None
    return notice


# --- properties -------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
BASES = [
    datetime(2025, 3, 29, 18, tzinfo=UTC),  # London spring forward
    datetime(2025, 10, 25, 18, tzinfo=UTC),  # London fall back
    datetime(2025, 3, 8, 22, tzinfo=UTC),  # New York spring forward
    datetime(2025, 4, 5, 10, tzinfo=UTC),  # Lord Howe: a 30-minute change
    T0,
]
MINUTES = st.integers(0, 12).map(lambda m: timedelta(minutes=10 * m))  # collisions: fan-out
INTERVALS = st.sampled_from([0, 30, 60, 600, 1200, 1800, 5400]).map(lambda s: timedelta(seconds=s))
CLOCK = st.builds(time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
QUIET = st.builds(QuietHours, start=CLOCK, end=CLOCK, timezone=st.sampled_from(ZONES))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    n = draw(st.integers(1, 4))
    afters = sorted(draw(st.lists(MINUTES, min_size=n, max_size=n)))
    groups = draw(st.lists(st.sampled_from(["support", "leads", "execs"]), min_size=n, max_size=n))
    repeat = draw(st.none() | INTERVALS.filter(bool))
    return Policy(
        steps=[Step(after=a, notify=g) for a, g in zip(afters, groups, strict=True)],
        repeat_every=repeat,
        repeat_from_step=draw(st.integers(1, n)),
        claim_idle=draw(INTERVALS),
        quiet_hours=draw(st.none() | QUIET),
        urgent=draw(st.booleans()),
    )


KINDS = ["claim", "reply", "release", "snooze", "unsnooze", "resolve", "reopen", "outage"]
EVENTS = st.lists(
    st.tuples(st.integers(0, 300), st.sampled_from(KINDS), st.integers(1, 600)), max_size=12
)


def _claimed(s: LadderState) -> bool:
    return s.state is TicketState.CLAIMED or (
        s.state is TicketState.SNOOZED and s.claimed_at is not None
    )


def _event(s: LadderState, kind: str, now: datetime, minutes: int) -> LadderState:
    """One staff or customer action, as the handlers would record it (None: not possible now)."""
    live_ticket = s.state is not TicketState.RESOLVED
    claimed, snoozed = _claimed(s), s.state is TicketState.SNOOZED
    actions: dict[str, Callable[[], LadderState | None]] = {
        "claim": lambda: (
            replace(s, state=TicketState.CLAIMED, claimed_at=now, snoozed_until=None)
            if live_ticket and not claimed
            else None
        ),
        "reply": lambda: replace(s, last_staff_reply_at=now) if live_ticket else None,
        "release": lambda: (
            replace(s, state=TicketState.ESCALATED, claimed_at=None)
            if s.state is TicketState.CLAIMED
            else None
        ),
        "snooze": lambda: (
            replace(s, state=TicketState.SNOOZED, snoozed_until=now + timedelta(minutes=minutes))
            if live_ticket
            else None
        ),
        "unsnooze": lambda: (
            replace(
                s,
                state=TicketState.CLAIMED if s.claimed_at else TicketState.ESCALATED,
                snoozed_until=None,
            )
            if snoozed
            else None
        ),
        "resolve": lambda: replace(s, state=TicketState.RESOLVED),
        "reopen": lambda: (
            None if live_ticket else LadderState(opened_at=now, state=TicketState.REOPENED)
        ),
    }
    action = actions.get(kind)
    return (action() if action else None) or s


def _check_now(policy: Policy, s: LadderState, now: datetime) -> None:
    """The contract between due, schedule and next_due at one instant."""
    notice, wake = due(policy, s, now), schedule(policy, s, now)
    assert (wake is None) == (next_due(policy, s) is None)
    if notice is not None:
        assert wake == now
    else:
        assert wake is None or wake > now
    if wake is not None:
        assert due(policy, s, wake) is not None
    if s.state is TicketState.RESOLVED:
        assert wake is None
        assert notice is None


def _sweep(
    policy: Policy, s: LadderState, now: datetime, horizon: datetime, down_until: datetime
) -> tuple[LadderState, list[Notice]]:
    """Run the sweep from ``now`` to ``horizon`` (inclusive); it is down until ``down_until``."""
    sent: list[Notice] = []
    for _ in range(2000):
        _check_now(policy, s, now)
        wake = schedule(policy, s, now)
        if wake is None or max(wake, down_until) > horizon:
            return s, sent
        scheduled, now = wake, max(wake, down_until)
        notice = due(policy, s, now)
        if now == scheduled:
            assert notice is not None
        if notice is None:
            continue
        assert notice.number == s.notices_sent + 1
        assert (notice.kind == "claim-idle") == _claimed(s)
        assert s.snoozed_until is None or notice.at >= s.snoozed_until
        if policy.quiet_hours is not None and not policy.urgent:
            assert quiet_until(policy.quiet_hours, notice.at) is None
        sent.append(notice)
        s = apply_notice(s, notice)
    pytest.fail("the sweep never settles: a burst")


@settings(max_examples=300, deadline=None, database=None)
@given(
    policy=policies(),
    opened=st.tuples(st.sampled_from(BASES), st.integers(0, 48 * 60)).map(
        lambda b: b[0] + timedelta(minutes=b[1])
    ),
    events=EVENTS,
)
def test_the_ladder_never_bursts_and_stops_at_resolve(
    policy: Policy, opened: datetime, events: list[tuple[int, str, int]]
) -> None:
    s, now, down_until = LadderState(opened_at=opened), opened, opened
    runs: list[list[Notice]] = [[]]  # one per opening: notice numbers restart on reopen
    for delay, kind, minutes in [*events, (24 * 60, "end", 0)]:
        horizon = now + timedelta(minutes=delay)
        s, sent = _sweep(policy, s, now, horizon, down_until)
        runs[-1].extend(sent)
        now = horizon
        if kind == "outage":
            down_until = now + timedelta(minutes=minutes)
        before, s = s, _event(s, kind, now, minutes)
        if s.opened_at != before.opened_at:
            runs.append([])
        if s.state is TicketState.RESOLVED:
            for later in (now, now + timedelta(minutes=1), now + timedelta(days=30)):
                assert due(policy, s, later) is None
                assert schedule(policy, s, later) is None
                assert next_due(policy, s) is None

    gap = min_gap(policy)
    for run in runs:
        for prev, this in pairwise(run):
            fan_out = (
                prev.kind == this.kind == "tier"
                and policy.steps[prev.step_index].after == policy.steps[this.step_index].after
            )
            assert this.at - prev.at >= (timedelta(0) if fan_out else gap), (prev, this)


def _wall_quiet(quiet: QuietHours, moment: datetime) -> bool:
    local = moment.astimezone(ZoneInfo(quiet.timezone)).time()
    if quiet.start < quiet.end:
        return quiet.start <= local < quiet.end
    if quiet.start > quiet.end:
        return local >= quiet.start or local < quiet.end
    return False


@settings(max_examples=300, deadline=None, database=None)
@given(
    quiet=QUIET,
    moment=st.tuples(st.sampled_from(BASES), st.integers(0, 72 * 3600)).map(
        lambda b: b[0] + timedelta(seconds=b[1])
    ),
)
def test_quiet_until_releases_at_the_first_moment_outside_the_window(
    quiet: QuietHours, moment: datetime
) -> None:
    release = quiet_until(quiet, moment)
    if release is not None:
        assert release > moment
        assert quiet_until(quiet, release) is None
        assert quiet_until(quiet, release - timedelta(seconds=1)) is not None
    zone = ZoneInfo(quiet.timezone)
    offsets = {(moment + timedelta(days=d)).astimezone(zone).utcoffset() for d in (-2, 2)}
    steady = len(offsets) == 1
    if steady:  # away from clock changes the window is plain wall-clock arithmetic
        assert (release is not None) == _wall_quiet(quiet, moment)
