"""Other (spam, chit-chat, news): stored with its verdict, never acknowledged, no ticket."""

from __future__ import annotations

from bot.domain import Mention, Plan, Verdict
from handlers.base import HandlerContext


def handle(verdict: Verdict, mention: Mention, ctx: HandlerContext) -> Plan:
    """Do nothing visible: talking at spam would be the robotic broadcast we avoid."""
    del verdict, mention, ctx
    return Plan(open_ticket=False, ack_template=None, priority=4, policy=None, note="not answered")
