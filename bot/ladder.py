"""The escalation ladder as pure functions: which staff notice is due now, and when the next is.

No I/O and no clock: every function takes the ticket's :class:`LadderState` and, where it
matters, ``now``. All datetimes in and out are timezone-aware (any aware input is converted
to UTC; outputs are UTC); a naive datetime raises ``ValueError``.

The sweep's loop for one ticket::

    notice = due(policy, state, now)          # None: nothing to send now
    if notice is not None:                    # write it to the outbox, in the same transaction:
        state = apply_notice(state, notice)   # rung, notices_sent, last_notice_at
    next_escalation_at = schedule(policy, state, now)   # None: nothing will ever be due

The rules (``n`` steps; "rung" = the ladder position, stored in ``tickets.escalation_step``):

* **Tiers.** Rung ``k`` (1-based, ``k <= n``) is step ``k-1``, nominally due at
  ``opened_at + step.after``. Tier numbers count staff groups, not steps: a step that notifies
  the same group as the step before it is a *reminder* of that tier ("tier 1 reminder").
* **Repeats.** After rung ``n``, with ``repeat_every`` set, one notice per ``repeat_every``
  measured from the previous notice *actually sent* (so a late notice never causes a quick
  one), cycling through steps ``repeat_from_step..n``, forever, until resolved. Without
  ``repeat_every`` the ladder ends after rung ``n``.
* **Coalescing, never a burst.** When several steps are overdue (outage, snooze, quiet hours,
  a released claim) only the step with the latest ``after`` among them is sent; the others
  are counted as passed (the rung jumps) and the reason says how many were skipped. Repeats
  are anchored to the last notice, so at most one is ever overdue.
* **Minimum gap.** No notice comes sooner than :func:`min_gap` after the previous one. The
  one exception is *fan-out*: steps with the same ``after`` (notify two groups at once) are
  sent one after another with no gap. Repeats never fan out: each repeat is one step.
* **Intervals have a floor.** ``repeat_every`` and ``claim_idle`` shorter than
  :data:`MIN_INTERVAL` (one minute; a ``claim_idle`` of 0s would page every sweep) count as
  :data:`MIN_INTERVAL`.
* **Resolved** ends everything: nothing is due and :func:`next_due`/:func:`schedule` return
  None. **Reopen** is the caller's job: start a fresh ``LadderState(opened_at=reopen_time,
  state=REOPENED)`` (rung, notices_sent and last_notice_at back to zero/None). Keep a reopen
  counter or the reopen time in outbox idempotency keys, since notice numbers restart.
* **Claims.** A claim is in force while the state is ``claimed`` (``claimed_at`` required), or
  ``snoozed`` with ``claimed_at`` set; clear ``claimed_at`` when a claim is released. While
  claimed no tier or repeat is sent. A ``claim-idle`` notice is due ``claim_idle`` after the
  latest of the claim, the last staff reply and the last notice (so it repeats every
  ``claim_idle`` until a staff reply resets the clock). It goes to the step the ladder had
  reached (the step of the current rung, or step 1 at rung 0) and does not move the rung.
  Staff replies on an unclaimed ticket do not pause anything. When a claim is released the
  ladder resumes on its original timetable, coalescing what fell due meanwhile.
* **Snooze.** While ``snoozed_until > now`` nothing is due (``snoozed_until`` rules, whatever
  the state; clear it to cancel a snooze; the state ``snoozed`` requires it). At the end the
  ladder continues where it was: what fell due during the snooze is sent once, coalesced.
* **Quiet hours** (non-urgent policies only; ``urgent: true`` ignores them). Each local day
  has a window ``[start, end)``, ending the next day when ``start > end``; ``start == end`` is
  no window. A boundary is the first instant the local clock shows that time or later: when
  the clocks go forward past it, the window ends (or starts) at the jump; when they go back,
  its first occurrence counts and the window does not reopen. Any notice kind (tier, repeat,
  claim-idle) due inside a window is held until the window ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from bot.domain import TicketState
from bot.durations import format_duration
from bot.policy import Policy, QuietHours

__all__ = [
    "MIN_INTERVAL",
    "LadderState",
    "Notice",
    "NoticeKind",
    "apply_notice",
    "due",
    "min_gap",
    "next_due",
    "policy_from_snapshot",
    "quiet_until",
    "schedule",
]

MIN_INTERVAL: Final = timedelta(minutes=1)
_MAX_WINDOWS: Final = 8  # chained quiet windows followed before giving up (only in odd zones)

NoticeKind = Literal["tier", "repeat", "claim-idle"]


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def policy_from_snapshot(snapshot: Mapping[str, Any]) -> tuple[str, Policy]:
    """Read a ticket's ``policy_snapshot`` (from :meth:`EscalationFile.snapshot`).

    Returns:
        The policy's name and the validated policy.

    Raises:
        ValueError: the snapshot is not an object, has no name, or its policy is invalid; the
            message names the policy and every bad key.
    """
    if not isinstance(snapshot, Mapping):
        # a corrupt row is bad data like any other corrupt snapshot: one exception type for all
        got = type(snapshot).__name__
        raise ValueError(f"policy snapshot must be a JSON object, got {got}")  # noqa: TRY004
    fields = dict(snapshot)
    name = fields.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"policy snapshot has no 'name' (a non-empty string), got {name!r}")
    try:
        policy = Policy.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'policy'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(f"policy snapshot {name!r} is corrupt: {problems}") from exc
    return name, policy


@dataclass(frozen=True, slots=True)
class LadderState:
    """What the ticket row knows about its ladder (datetimes are converted to UTC).

    Attributes:
        opened_at: ladder time zero (the opening, or the reopening).
        rung: ladder position: rungs passed, skipped ones included (``tickets.escalation_step``).
        notices_sent: notices of every kind sent since ``opened_at``.
        last_notice_at: when the last notice of any kind was sent.
        state: the ticket's state.
        claimed_at: start of the claim in force (None when unclaimed or released).
        last_staff_reply_at: the last staff reply to the customer.
        snoozed_until: end of the snooze in force.

    Raises:
        ValueError: a naive datetime, or fields that contradict each other.
    """

    opened_at: datetime
    rung: int = 0
    notices_sent: int = 0
    last_notice_at: datetime | None = None
    state: TicketState = TicketState.OPEN
    claimed_at: datetime | None = None
    last_staff_reply_at: datetime | None = None
    snoozed_until: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", TicketState(self.state))
        for name in ("opened_at", "last_notice_at", "claimed_at", "last_staff_reply_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _utc(value, name))
        if self.snoozed_until is not None:
            object.__setattr__(self, "snoozed_until", _utc(self.snoozed_until, "snoozed_until"))
        if self.rung < 0 or self.notices_sent < 0:
            raise ValueError(f"rung ({self.rung}) and notices_sent must not be negative")
        if (self.last_notice_at is None) != (self.notices_sent == 0):
            raise ValueError("last_notice_at must be set exactly when notices_sent > 0")
        if self.rung > 0 and self.notices_sent == 0:
            raise ValueError(f"rung {self.rung} was reached without sending a notice")
        if self.state is TicketState.CLAIMED and self.claimed_at is None:
            raise ValueError("a claimed ticket needs claimed_at")
        if self.state is TicketState.SNOOZED and self.snoozed_until is None:
            raise ValueError("a snoozed ticket needs snoozed_until (the ladder never parks)")


@dataclass(frozen=True, slots=True)
class Notice:
    """One notice to send now.

    Attributes:
        number: 1-based ordinal of this notice since ``opened_at`` (``notices_sent + 1``).
        rung: the ladder position once this is sent (unchanged by a claim-idle notice).
        step_index: 0-based index into ``policy.steps``.
        group: the staff group (``Step.notify``).
        mention: staff names to mention.
        mention_role: staff role to mention.
        kind: ``tier``, ``repeat`` or ``claim-idle``.
        reason: for the staff card and the ticket event, e.g. "tier 2 (30m without a resolution)".
        at: the ``now`` it was decided at; :func:`apply_notice` records it as sent then.
    """

    number: int
    rung: int
    step_index: int
    group: str
    mention: tuple[str, ...]
    mention_role: str | None
    kind: NoticeKind
    reason: str
    at: datetime


def min_gap(policy: Policy) -> timedelta:
    """The smallest time the policy allows between two notices (fan-out aside).

    The least of the positive differences between consecutive steps' ``after``, of
    ``repeat_every`` and of ``claim_idle`` (both floored at :data:`MIN_INTERVAL`).
    """
    gaps = [b.after - a.after for a, b in pairwise(policy.steps) if b.after > a.after]
    gaps.append(_claim_idle(policy))
    if policy.repeat_every is not None:
        gaps.append(max(policy.repeat_every, MIN_INTERVAL))
    return min(gaps)


def next_due(policy: Policy, st: LadderState) -> datetime | None:
    """When the next notice becomes due, ignoring quiet hours and snooze; may be in the past.

    Returns:
        None when nothing can ever be due in this state: resolved, or an unclaimed ladder that
        is finished (past its last step with no repeat). A claimed ticket always has a time:
        its next claim-idle notice.
    """
    pending = _pending(policy, st)
    return None if pending is None else pending[0]


def due(policy: Policy, st: LadderState, now: datetime) -> Notice | None:
    """The notice to send at ``now``, or None (not yet due, snoozed, quiet hours, resolved).

    Raises:
        ValueError: ``now`` is naive.
    """
    now = _utc(now, "now")
    pending = _pending(policy, st)
    if pending is None or pending[0] > now or _snoozed(st, now) or _quiet_now(policy, now):
        return None
    at, claim_idle = pending
    notes = _hold_notes(policy, st, at, now)
    steps, k = policy.steps, st.rung
    kind: NoticeKind
    if claim_idle:
        index, new_rung, kind = _step_at_rung(policy, max(k, 1)), k, "claim-idle"
        head = _claim_reason(st, now)
    elif k < len(steps):
        latest = max(s.after for s in steps[k:] if st.opened_at + s.after <= now)
        index = next(i for i in range(k, len(steps)) if steps[i].after == latest)
        new_rung, kind, head = index + 1, "tier", _step_label(policy, index)
        if index > k:
            notes.insert(0, f"{index - k} overdue step{'s' if index - k > 1 else ''} skipped")
    else:
        new_rung, kind = k + 1, "repeat"
        index = _step_at_rung(policy, new_rung)
        head = f"repeat {new_rung - len(steps)}, {_step_label(policy, index, tier_only=True)}"
    if kind != "claim-idle":
        waited = now - st.opened_at
        notes.insert(
            0, "new ticket" if waited < MIN_INTERVAL else f"{_ago(waited)} without a resolution"
        )
    reason = f"{head} ({'; '.join(notes)})" if notes else head
    step = steps[index]
    return Notice(
        number=st.notices_sent + 1,
        rung=new_rung,
        step_index=index,
        group=step.notify,
        mention=tuple(step.mention),
        mention_role=step.mention_role,
        kind=kind,
        reason=reason,
        at=now,
    )


def schedule(policy: Policy, st: LadderState, now: datetime) -> datetime | None:
    """The value to store in ``tickets.next_escalation_at``.

    Guarantees: the result is None (nothing will ever be due in this state) or ``>= now``; it
    equals ``now`` exactly when :func:`due` has a notice at ``now``; and, unless the state
    changes, :func:`due` has a notice at the returned time (snooze and quiet hours applied).

    Raises:
        ValueError: ``now`` is naive.
    """
    now = _utc(now, "now")
    pending = _pending(policy, st)
    if pending is None:
        return None
    at = max(pending[0], now)
    if st.snoozed_until is not None:
        at = max(at, st.snoozed_until)
    if _holds(policy) and policy.quiet_hours is not None:
        at = quiet_until(policy.quiet_hours, at) or at
    return at


def apply_notice(st: LadderState, notice: Notice) -> LadderState:
    """The state once ``notice`` has been sent (at ``notice.at``).

    Raises:
        ValueError: the notice was not made for this state (e.g. it was applied already).
    """
    if notice.number != st.notices_sent + 1:
        raise ValueError(
            f"notice #{notice.number} does not follow {st.notices_sent} sent notice(s): "
            "was it applied already?"
        )
    return replace(st, rung=notice.rung, notices_sent=notice.number, last_notice_at=notice.at)


def quiet_until(quiet: QuietHours, at: datetime) -> datetime | None:
    """The end of the quiet window ``at`` falls in (chained windows followed), or None.

    Raises:
        ValueError: ``at`` is naive.
    """
    at = _utc(at, "at")
    release = at
    for _ in range(_MAX_WINDOWS):
        for begin, end in _windows_near(quiet, release):
            if begin <= release < end:
                release = end
                break
        else:
            break
    return None if release == at else release


# --- the ladder ------------------------------------------------------------------------------


def _claimed(st: LadderState) -> bool:
    return st.state is TicketState.CLAIMED or (
        st.state is TicketState.SNOOZED and st.claimed_at is not None
    )


def _claim_idle(policy: Policy) -> timedelta:
    return max(policy.claim_idle, MIN_INTERVAL)


def _pending(policy: Policy, st: LadderState) -> tuple[datetime, bool] | None:
    """The earliest time of the next notice, and whether it is a claim-idle one."""
    if st.state is TicketState.RESOLVED:
        return None
    last = st.last_notice_at
    if _claimed(st) and st.claimed_at is not None:
        clocks = [t for t in (st.claimed_at, st.last_staff_reply_at, last) if t is not None]
        return max(clocks) + _claim_idle(policy), True
    steps, k = policy.steps, st.rung
    if k < len(steps):
        nominal = st.opened_at + steps[k].after
        if last is None:
            return nominal, False
        fan_out = k >= 1 and steps[k].after == steps[k - 1].after
        return max(nominal, last + (timedelta(0) if fan_out else min_gap(policy))), False
    if policy.repeat_every is None or last is None:
        return None
    return last + max(policy.repeat_every, MIN_INTERVAL), False


def _step_at_rung(policy: Policy, rung: int) -> int:
    n = len(policy.steps)
    if rung <= n:
        return rung - 1
    first = policy.repeat_from_step - 1
    return first + (rung - n - 1) % (n - first)


def _step_label(policy: Policy, index: int, *, tier_only: bool = False) -> str:
    steps = policy.steps
    tier, reminder = 1, 0
    for prev, step in pairwise(steps[: index + 1]):
        if step.notify == prev.notify:
            reminder += 1
        else:
            tier, reminder = tier + 1, 0
    if tier_only or reminder == 0:
        return f"tier {tier}"
    return f"tier {tier} reminder" + (f" {reminder}" if reminder > 1 else "")


def _claim_reason(st: LadderState, now: datetime) -> str:
    reply, claimed = st.last_staff_reply_at, st.claimed_at
    if reply is not None and (claimed is None or reply >= claimed):
        return f"claim idle: last staff reply {_ago(now - reply)} ago"
    assert claimed is not None  # noqa: S101 — _pending only plans claim-idle with a claim
    return f"claim idle: claimed {_ago(now - claimed)} ago, no staff reply yet"


def _hold_notes(policy: Policy, st: LadderState, at: datetime, now: datetime) -> list[str]:
    notes = []
    released = at
    if st.snoozed_until is not None and at < st.snoozed_until <= now:
        notes.append("held by a snooze")
        released = st.snoozed_until
    if _holds(policy) and policy.quiet_hours and quiet_until(policy.quiet_hours, released):
        notes.append("held for quiet hours")
    return notes


def _ago(span: timedelta) -> str:
    if span < MIN_INTERVAL:
        return f"{max(int(span.total_seconds()), 0)}s"
    return format_duration(MIN_INTERVAL * (span // MIN_INTERVAL))


def _snoozed(st: LadderState, now: datetime) -> bool:
    return st.snoozed_until is not None and st.snoozed_until > now


def _holds(policy: Policy) -> bool:
    return not policy.urgent and policy.quiet_hours is not None


def _quiet_now(policy: Policy, now: datetime) -> bool:
    return (
        _holds(policy)
        and policy.quiet_hours is not None
        and quiet_until(policy.quiet_hours, now) is not None
    )


# --- quiet hours -----------------------------------------------------------------------------


def _windows_near(quiet: QuietHours, at: datetime) -> Iterator[tuple[datetime, datetime]]:
    """The quiet windows of the local days around ``at``, as UTC ``[begin, end)``."""
    start, end = quiet.start.replace(tzinfo=None), quiet.end.replace(tzinfo=None)
    if start == end:
        return
    zone = ZoneInfo(quiet.timezone)
    today = at.astimezone(zone).date()
    for offset in (-1, 0, 1):
        day = today + timedelta(days=offset)
        end_day = day + timedelta(days=1) if start > end else day
        yield _first_instant(zone, day, start), _first_instant(zone, end_day, end)


def _first_instant(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The first instant at which the local clock on ``day`` shows ``wall`` or later."""
    naive = datetime.combine(day, wall)
    candidates = [naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    real = [c for c in candidates if c.astimezone(zone).replace(tzinfo=None) == naive]
    if real:
        return min(real)  # the first of two occurrences when the clocks go back
    # The clocks jump over ``wall``: find the jump. Local time is monotonic on this interval
    # and offsets change on whole seconds, so bisect on integer timestamps.
    lo, hi = math.floor(min(candidates).timestamp()), math.ceil(max(candidates).timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        local = datetime.fromtimestamp(mid, UTC).astimezone(zone).replace(tzinfo=None)
        if local >= naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)
