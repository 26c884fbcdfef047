"""Questions: acknowledged at once and ticketed, so a person answers them."""

from __future__ import annotations

from bot.domain import Category, Mention, Plan, Verdict
from handlers.base import HandlerContext


def handle(verdict: Verdict, mention: Mention, ctx: HandlerContext) -> Plan:
    """Acknowledge and open a priority-3 ticket."""
    del verdict, mention
    return Plan(
        open_ticket=True,
        ack_template=Category.QUESTION.value,
        priority=3,
        policy=ctx.escalation.policy_for(Category.QUESTION, 3),
    )
