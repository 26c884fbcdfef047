"""Escalation policies (``config/escalation.yaml``): the schema, routing and the snapshot."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.domain import Category
from bot.durations import Duration


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Model):
    """One rung of a ladder: after ``after`` from the ladder's start, notify a staff group."""

    after: Duration
    notify: str = Field(min_length=1)
    mention: list[str] = Field(default_factory=list)
    mention_role: Literal["lead", "agent"] | None = None


class QuietHours(_Model):
    """A daily window in a time zone during which a non-urgent ladder holds its steps."""

    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value


class Policy(_Model):
    """A named escalation ladder; only ``resolved`` ends it."""

    steps: list[Step] = Field(min_length=1)
    repeat_every: Duration | None = None
    repeat_from_step: int = Field(default=1, ge=1)
    claim_idle: Duration = timedelta(minutes=30)
    quiet_hours: QuietHours | None = None
    urgent: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        afters = [s.after for s in self.steps]
        if afters != sorted(afters):
            raise ValueError("steps must be in order of their 'after' durations")
        if self.repeat_from_step > len(self.steps):
            raise ValueError(
                f"repeat_from_step is {self.repeat_from_step} but the policy has "
                f"{len(self.steps)} step(s)"
            )
        if self.repeat_every is not None and self.repeat_every <= timedelta(0):
            raise ValueError("repeat_every must be longer than 0s")
        return self


class Route(_Model):
    """Which policy a ticket of one category gets: ``urgent`` for priority 1, else ``default``.

    ``urgent_from``: a complaint whose verdict is at least this confident is priority 1.
    With the learned model the confidence is a probability: 0.995 makes roughly the
    clearest one complaint in seven urgent. With rules alone, 0.75 does about the same.
    """

    default: str | None = None
    urgent: str | None = None
    urgent_from: float = 0.995

    @field_validator("urgent_from")
    @classmethod
    def _check_urgent_from(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError("urgent_from must be a confidence above 0 and at most 1")
        return value


class EscalationFile(_Model):
    """``escalation.yaml``."""

    routes: dict[Category, Route] = Field(default_factory=dict)
    policies: dict[str, Policy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _routes_exist(self) -> EscalationFile:
        for category, route in self.routes.items():
            for name in (route.default, route.urgent):
                if name is not None and name not in self.policies:
                    raise ValueError(
                        f"routes.{category.value} names policy {name!r}, which is not defined "
                        f"(defined: {', '.join(sorted(self.policies)) or 'none'})"
                    )
        return self

    def policy_for(self, category: Category, priority: int) -> str | None:
        """The policy name for a new ticket, or None when its category is not escalated."""
        route = self.routes.get(category)
        if route is None:
            return None
        if priority == 1 and route.urgent is not None:
            return route.urgent
        return route.default

    def urgent_from(self, category: Category) -> float:
        """The confidence from which a verdict of ``category`` is urgent (1.0: never less)."""
        route = self.routes.get(category)
        return route.urgent_from if route is not None else Route().urgent_from

    def snapshot(self, name: str | None) -> dict[str, Any] | None:
        """The policy as JSON, stored on the ticket so config edits do not change it in flight."""
        if name is None:
            return None
        return {"name": name, **self.policies[name].model_dump(mode="json")}
