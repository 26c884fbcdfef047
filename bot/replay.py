"""``carebot replay``: what a config would do with past mentions, without sending or writing.

Each mention goes through screening, classification and its category's handler as in
``carebot run``. What needs the live database is simulated from the file itself, in the
order of the mentions' times:

- threads: a mention whose ``in_reply_to_id`` or ``thread_id`` names an earlier mention of
  the same author that belongs to a ticket (opened it, or joined it), or one of our replies
  on that ticket (``our_replies``), joins that ticket as a follow-up instead of opening
  another. Tickets are taken as still open: resolutions are not replayed.
- the hourly acknowledgement cap per author (``screening.max_acks_per_author_per_hour``).
- our own account: a mention marked ``"ours": true`` is screened as the service did.
- a webhook mention without ``reply_url`` gets no acknowledgement (there is nowhere to send it).

Input: JSON Lines, one mention per line, as ``carebot export-mentions`` writes them::

    {"platform": "x", "id": "1849", "author": {"id": "42", "handle": "ana"},
     "text": "my order never came", "created_at": "2026-11-20T10:00:00Z",
     "thread_id": "1849", "our_replies": ["1850"]}

Only ``text`` is required: ``platform`` defaults to ``x``, ``id`` to the line number,
``author`` to an author of its own per line, ``created_at`` to the file's order.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import Config
from bot.domain import Mention, Platform
from bot.pipeline import OWN_ACCOUNT, Screening, safe_classify
from bot.triage import TriageClassifier
from handlers import HandlerContext, plan_for

__all__ = ["Outcome", "ReplayError", "Replayed", "Replayer", "read_mentions"]

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_HOUR = timedelta(hours=1)
MAX_LINE = 1_000_000


class ReplayError(Exception):
    """A mentions file that cannot be replayed; the message names the file and line."""


def _field(data: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise ReplayError(f"{where}: {key}: missing")
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ReplayError(f"{where}: {key}: must be a string")
    return str(value)


@dataclass(frozen=True, slots=True)
class Replayed:
    """One line of the file: the mention, and what the service knew around it."""

    mention: Mention
    our_replies: tuple[str, ...] = ()
    ours: bool = False


def _optional(data: dict[str, Any], key: str, where: str) -> str | None:
    return _field(data, key, where) if data.get(key) is not None else None


def _replayed(data: Any, where: str, line: int) -> Replayed:
    if not isinstance(data, dict):
        raise ReplayError(f"{where}: a JSON object is required")
    replies = data.get("our_replies", [])
    if not isinstance(replies, list) or not all(isinstance(r, str | int) for r in replies):
        raise ReplayError(f"{where}: our_replies: must be a list of ids")
    ours = data.get("ours", False)
    if not isinstance(ours, bool):
        raise ReplayError(f"{where}: ours: must be true or false")
    return Replayed(_mention(data, where, line), tuple(str(r) for r in replies), ours)


def _mention(data: dict[str, Any], where: str, line: int) -> Mention:
    text = _field(data, "text", where)  # may be empty: the service stores such posts too
    raw_platform = _field(data, "platform", where, "x")
    try:
        platform = Platform(raw_platform)
    except ValueError:
        names = ", ".join(p.value for p in Platform if p is not Platform.STAFF)
        raise ReplayError(f"{where}: platform: {raw_platform!r} is not one of {names}") from None
    author = data.get("author", {"id": f"line-{line}"})
    if not isinstance(author, dict):
        raise ReplayError(f"{where}: author: must be an object with id and handle")
    author_id = _field(author, "id", where + " author")
    handle = _field(author, "handle", where + " author", author_id)
    is_bot = author.get("is_bot", False)
    if not isinstance(is_bot, bool):
        raise ReplayError(f"{where}: author.is_bot: must be true or false")
    created = _EPOCH + timedelta(seconds=line)
    if data.get("created_at") is not None:
        raw = _field(data, "created_at", where)
        try:
            created = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise ReplayError(
                f"{where}: created_at: {raw!r} is not an ISO 8601 time like 2026-11-22T10:00:00Z"
            ) from None
        if created.tzinfo is None:
            raise ReplayError(f"{where}: created_at: include a time zone (Z or +hh:mm)")
    return Mention(
        platform=platform,
        external_id=_field(data, "id", where, str(line)),
        author_id=author_id,
        author_handle=handle,
        text=text,
        created_at=created.astimezone(UTC),
        thread_id=_optional(data, "thread_id", where),
        in_reply_to_id=_optional(data, "in_reply_to_id", where),
        author_is_bot=is_bot,
        reply_url=_optional(data, "reply_url", where),
    )


def read_mentions(path: Path) -> Iterator[Replayed]:
    """Yield the mentions of a JSON Lines file, in file order; blank lines are skipped.

    Raises:
        ReplayError: the file cannot be read, or a line is not a usable mention.
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ReplayError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if len(raw) > MAX_LINE:
                raise ReplayError(f"{where}: line longer than {MAX_LINE} bytes")
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ReplayError(f"{where}: not JSON ({exc})") from exc
            yield _replayed(data, where, number)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one config would do with one mention."""

    action: str  # screened | ignored | ticket | follow-up | capped
    category: str | None = None
    confidence: float | None = None
    needs_triage: bool = False
    ack: str | None = None  # the template set that would answer
    priority: int | None = None
    policy: str | None = None
    reason: str | None = None  # screening reason, or a note

    def key(self) -> tuple[Any, ...]:
        """The parts that make two decisions different (not the confidence)."""
        return (
            self.action,
            self.category,
            self.needs_triage,
            self.ack,
            self.priority,
            self.policy,
        )

    def describe(self) -> str:
        """One short line for a terminal."""
        if self.action == "screened":
            return f"screened ({self.reason})"
        parts = [self.action, self.category or "-"]
        if self.needs_triage:
            parts.append("needs triage")
        parts.append(f"ack {self.ack}" if self.ack else "no ack")
        if self.policy:
            parts.append(f"policy {self.policy}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        out: dict[str, Any] = {"action": self.action}
        for name in ("category", "confidence", "ack", "priority", "policy", "reason"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.needs_triage:
            out["needs_triage"] = True
        return out


@dataclass
class _AuthorState:
    acks: deque[datetime] = field(default_factory=deque)
    ticketed: set[str] = field(default_factory=set)  # ids belonging to the author's tickets


class Replayer:
    """Decides mentions one after another as one config would, remembering what it did."""

    def __init__(self, config: Config) -> None:
        carebot = config.carebot
        self._classifier = TriageClassifier(config.rules, config.model)
        self._screening = Screening.from_lists(
            carebot.screening.bot_accounts, carebot.screening.blocked_authors
        )
        self._ctx = HandlerContext(escalation=config.escalation)
        self._max_acks = carebot.screening.max_acks_per_author_per_hour
        self._authors: dict[tuple[Platform, str], _AuthorState] = {}
        self.counts: Counter[str] = Counter()

    def decide(self, item: Replayed) -> Outcome:
        """What the config does with a mention, given the mentions decided before it."""
        outcome = self._decide(item)
        self.counts["mentions"] += 1
        self.counts[f"action:{outcome.action}"] += 1
        if outcome.category:
            self.counts[f"category:{outcome.category}"] += 1
        if outcome.ack:
            self.counts["acks"] += 1
        if outcome.action == "ticket":
            self.counts["tickets"] += 1
            self.counts[f"policy:{outcome.policy or 'none'}"] += 1
        if outcome.needs_triage:
            self.counts["needs_triage"] += 1
        return outcome

    def _decide(self, item: Replayed) -> Outcome:
        m = item.mention
        reason = OWN_ACCOUNT if item.ours else self._screening.reason(m)
        if reason is not None:
            return Outcome("screened", reason=reason)
        verdict = safe_classify(self._classifier, m.text)
        common: dict[str, Any] = {
            "category": verdict.category.value,
            "confidence": round(verdict.confidence, 3),
            "needs_triage": verdict.needs_triage,
        }
        author = self._authors.setdefault((m.platform, m.author_id), _AuthorState())
        refs = {r for r in (m.in_reply_to_id, m.thread_id) if r and r != m.external_id}
        if refs & author.ticketed:
            author.ticketed.add(m.external_id)
            return Outcome("follow-up", **common, reason="joins the author's ticket")
        plan = plan_for(verdict, m, self._ctx)
        if not plan.open_ticket:
            return Outcome("ignored", **common, reason=plan.note or None)
        recent = author.acks
        while recent and m.created_at - recent[0] >= _HOUR:
            recent.popleft()
        if plan.ack_template is not None and len(recent) >= self._max_acks:
            if author.ticketed:
                author.ticketed.add(m.external_id)
                return Outcome(
                    "capped", **common, reason="hourly ack cap: joins the author's open ticket"
                )
            ack = None
        elif m.platform is Platform.WEBHOOK and m.reply_url is None:
            ack = None  # the source gave nowhere to send it
        else:
            ack = plan.ack_template
        if ack is not None:
            recent.append(m.created_at)
        author.ticketed.add(m.external_id)
        author.ticketed.update(item.our_replies)
        return Outcome(
            "ticket", **common, ack=ack, priority=plan.priority, policy=plan.policy or None
        )
