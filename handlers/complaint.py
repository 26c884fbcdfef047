"""Complaints: always acknowledged, always ticketed, the most urgent escalate fastest."""

from __future__ import annotations

from typing import Final

from bot.domain import Category, Mention, Plan, Verdict
from handlers.base import HandlerContext

URGENT_CONFIDENCE: Final = 0.75


def handle(verdict: Verdict, mention: Mention, ctx: HandlerContext) -> Plan:
    """Acknowledge with sympathy and open a ticket; a confident complaint is priority 1."""
    del mention  # the decision rests on the verdict alone for now
    priority = 1 if verdict.confidence >= URGENT_CONFIDENCE else 2
    return Plan(
        open_ticket=True,
        ack_template=Category.COMPLAINT.value,
        priority=priority,
        policy=ctx.escalation.policy_for(Category.COMPLAINT, priority),
    )
