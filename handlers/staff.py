"""Staff actions from the chat: who may do what to a ticket, decided without side effects.

The staff chat adapter parses a button or command into an ``Action``; :func:`decide` says
whether it is allowed and what it changes; the store applies the change with a conditional
update, so two people clicking at once cannot both win.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from bot.domain import Category, TicketState

CALLBACK_RE: Final = re.compile(
    r"^(claim|resolve|snooze30|snooze4h|escalate|cat_[a-z]+):(\d{1,12})$"
)
SNOOZES: Final = {"snooze30": timedelta(minutes=30), "snooze4h": timedelta(hours=4)}


class Verb(enum.StrEnum):
    """What a staff member asked for."""

    CLAIM = "claim"
    RESOLVE = "resolve"
    SNOOZE = "snooze"
    ESCALATE = "escalate"
    RECATEGORISE = "recategorise"


@dataclass(frozen=True, slots=True)
class Member:
    """A configured staff member."""

    name: str
    user_id: int
    role: str


@dataclass(frozen=True, slots=True)
class Action:
    """One parsed staff request."""

    verb: Verb
    ticket_id: int
    snooze: timedelta | None = None
    category: Category | None = None
    note: str = ""
    public: bool = False  # RESOLVE: the note goes to the customer in their thread


@dataclass(frozen=True, slots=True)
class TicketView:
    """The parts of a ticket a decision reads."""

    id: int
    ref: str
    state: TicketState
    category: Category
    claimed_by: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to tell the person, and the change to make (None: nothing changes)."""

    message: str
    to_state: TicketState | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    event_kind: str = ""
    refused: bool = False


def parse_callback(data: str) -> Action | None:
    """Parse button data (``claim:12``, ``cat_praise:12``); None when it is not ours or invalid."""
    match = CALLBACK_RE.match(data)
    if match is None:
        return None
    name, ticket_id = match.group(1), int(match.group(2))
    if name in SNOOZES:
        return Action(Verb.SNOOZE, ticket_id, snooze=SNOOZES[name])
    if name.startswith("cat_"):
        try:
            return Action(Verb.RECATEGORISE, ticket_id, category=Category(name[4:]))
        except ValueError:
            return None
    return Action(Verb(name), ticket_id)


def decide(  # noqa: PLR0911 — one early return per verb reads best
    action: Action, ticket: TicketView, member: Member | None, now: datetime
) -> Outcome:
    """Decide a staff action (pure)."""
    if member is None:
        return Outcome("Only configured support staff can act on tickets.", refused=True)
    if ticket.state is TicketState.RESOLVED and action.verb is not Verb.RECATEGORISE:
        return Outcome(f"{ticket.ref} is already resolved; nothing to do.")
    if action.verb is Verb.CLAIM:
        if ticket.claimed_by is not None:
            who = "you" if ticket.claimed_by == member.name else ticket.claimed_by
            return Outcome(f"{ticket.ref} is already claimed by {who}.")
        return Outcome(
            f"You have {ticket.ref}.",
            TicketState.CLAIMED,
            {"claimed_by": member.name, "claimed_at": now, "snoozed_until": None},
            "claimed",
        )
    if action.verb is Verb.RESOLVE:
        if action.public:
            said = f" The customer was sent: “{action.note}”"
        else:
            said = f" Note: {action.note}" if action.note else ""
        return Outcome(
            f"{ticket.ref} resolved." + said,
            TicketState.RESOLVED,
            {"resolved_at": now, "snoozed_until": None},
            "resolved",
        )
    if action.verb is Verb.SNOOZE:
        assert action.snooze is not None  # noqa: S101 — parse_callback sets it
        until = now + action.snooze
        return Outcome(
            f"{ticket.ref} snoozed until {until:%H:%M} UTC.",
            TicketState.SNOOZED,
            {"snoozed_until": until},
            "snoozed",
        )
    if action.verb is Verb.ESCALATE:  # hand it up: any claim is released, the next tier fires now
        return Outcome(
            f"{ticket.ref} escalated now.",
            TicketState.ESCALATED,
            {"snoozed_until": None, "claimed_by": None, "claimed_at": None},
            "escalate_requested",
        )
    assert action.category is not None  # noqa: S101 — parse_callback sets it
    if action.category is ticket.category:
        return Outcome(f"{ticket.ref} is already a {ticket.category.value}.")
    return Outcome(
        f"{ticket.ref} is now a {action.category.value}.",
        None,
        {"category": action.category.value},
        "recategorised",
    )
