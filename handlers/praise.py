"""Praise: never ignored. Thanked at once, and ticketed so staff can recognise the customer."""

from __future__ import annotations

from bot.domain import Category, Mention, Plan, Verdict
from handlers.base import HandlerContext


def handle(verdict: Verdict, mention: Mention, ctx: HandlerContext) -> Plan:
    """Thank the customer and open a priority-4 ticket (the kudos route by default)."""
    del verdict, mention
    return Plan(
        open_ticket=True,
        ack_template=Category.PRAISE.value,
        priority=4,
        policy=ctx.escalation.policy_for(Category.PRAISE, 4),
    )
