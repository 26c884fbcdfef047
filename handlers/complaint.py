"""Complaints: always acknowledged, always ticketed, the most urgent escalate fastest."""

from __future__ import annotations

from bot.domain import Category, Mention, Plan, Verdict
from handlers.base import HandlerContext


def handle(verdict: Verdict, mention: Mention, ctx: HandlerContext) -> Plan:
    """Acknowledge with sympathy and open a ticket; a clear complaint is priority 1.

    Clear: the verdict is at least ``routes.complaint.urgent_from`` confident
    (``escalation.yaml``) and was not an unsure one sent to triage.
    """
    del mention  # the decision rests on the verdict alone for now
    clear = verdict.confidence >= ctx.escalation.urgent_from(Category.COMPLAINT)
    priority = 1 if clear and not verdict.needs_triage else 2
    return Plan(
        open_ticket=True,
        ack_template=Category.COMPLAINT.value,
        priority=priority,
        policy=ctx.escalation.policy_for(Category.COMPLAINT, priority),
    )
