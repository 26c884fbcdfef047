"""The live view: one readable line per mention and per delivered reply (sandbox and operators)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from bot.clock import Clock
from bot.domain import MentionStatus, OutboxKind
from bot.store import Applied, OutboxRow, ticket_ref

MAX_TEXT = 90


def _short(text: str, limit: int = MAX_TEXT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class LiveView:
    """Writes what happens, as it happens, to a terminal."""

    def __init__(self, out: TextIO, clock: Clock, ref_prefix: str) -> None:
        self._out = out
        self._clock = clock
        self._prefix = ref_prefix

    def _line(self, text: str) -> None:
        self._out.write(f"{self._clock.now():%H:%M:%S} {text}\n")
        self._out.flush()

    def mentions(self, applied: Sequence[Applied]) -> None:
        """Describe committed decisions."""
        for a in applied:
            d = a.decision
            m = d.stored.mention
            head = f"{m.platform.value:<8} @{m.author_handle}: “{_short(m.text)}”"
            if d.status is MentionStatus.SCREENED:
                self._line(f"{head}\n         ⊘ screened: {d.screen_reason}")
                continue
            v = d.verdict
            if v is None:
                continue
            why = "; ".join(v.reasons[:3])
            verdict = f"→ {v.category.value} {v.confidence:.2f} ({why})"
            if a.ticket_id is None:
                self._line(f"{head}\n         {verdict}\n         · no ticket, not answered")
                continue
            if d.status is MentionStatus.FOLLOW_UP:
                ref = ticket_ref(self._prefix, a.ticket_id)
                what = "reopens" if d.reopen else "joins"
                self._line(f"{head}\n         ↪ {what} ticket {ref} ({d.note}), no new ack")
                continue
            ref = ticket_ref(self._prefix, a.ticket_id)
            plan = d.plan
            policy = f", policy {plan.policy}" if plan and plan.policy else ""
            if d.incident_id is not None:
                policy = f", linked to INC-{d.incident_id}: escalated with the incident"
            ack = f"\n         ack queued: “{a.ack_text}”" if a.ack_text else ""
            prio = plan.priority if plan else "?"
            self._line(
                f"{head}\n         {verdict}\n         ticket {ref} (priority {prio}{policy}){ack}"
            )

    def staff(self, line: str) -> None:
        """Describe a staff action or an escalation notice."""
        self._line(f"{'staff':<8} {line}")

    def sent(self, row: OutboxRow, message_id: str) -> None:
        """Describe a delivered outbox row."""
        if row.kind is OutboxKind.STAFF:
            return  # the sweep and the desk already said what staff were sent
        ref = f" for {ticket_ref(self._prefix, row.ticket_id)}" if row.ticket_id else ""
        self._line(
            f"{row.platform.value:<8} ✓ {row.kind.value}{ref} delivered (message {message_id})"
        )
