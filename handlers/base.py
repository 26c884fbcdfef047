"""What handlers may look at when they decide."""

from __future__ import annotations

from dataclasses import dataclass

from bot.policy import EscalationFile


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """Read-only inputs to a handler's decision."""

    escalation: EscalationFile
