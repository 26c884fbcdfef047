"""Policy: one module per category turns a Verdict into a Plan; the registry maps them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bot.domain import Category, Mention, Plan, Verdict
from handlers import complaint, other, praise, question
from handlers.base import HandlerContext

Handler = Callable[[Verdict, Mention, HandlerContext], Plan]

HANDLERS: Final[dict[Category, Handler]] = {
    Category.COMPLAINT: complaint.handle,
    Category.QUESTION: question.handle,
    Category.PRAISE: praise.handle,
    Category.OTHER: other.handle,
}


def plan_for(verdict: Verdict, mention: Mention, ctx: HandlerContext) -> Plan:
    """Ask the category's handler what to do (pure: no I/O, no side effects)."""
    return HANDLERS[verdict.category](verdict, mention, ctx)


__all__ = ["HANDLERS", "Handler", "HandlerContext", "plan_for"]
