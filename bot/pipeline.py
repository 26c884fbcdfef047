"""The pipeline: record → screen → classify → handle → commit (DESIGN.md, "The flow").

A mention is stored (and the source's cursor moved) in one transaction before anything else
happens to it; its ticket, first event and acknowledgement are then written in a second one.
A crash between the two leaves the mention ``received``; :meth:`Pipeline.recover` finishes it at
start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bot.classifier import Classifier
from bot.domain import (
    TRIAGE_PREFIX,
    Category,
    Mention,
    MentionStatus,
    Platform,
    TicketState,
    Verdict,
)
from bot.platforms.base import PlatformAdapter
from bot.policy import EscalationFile
from bot.store import (
    AckSpec,
    Applied,
    CursorUpdate,
    Decision,
    Store,
    StoredMention,
    TicketLink,
    ticket_ref,
)
from bot.tasks import call_observers
from bot.templates import TemplatesFile, render_ack
from handlers import HandlerContext, plan_for

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
OWN_ACCOUNT = "our own account"  # the screening reason of our own posts

Observer = Callable[[Sequence[Applied]], None]


@dataclass(frozen=True, slots=True)
class Screening:
    """Who is never answered: configured bots and blocked authors (``[platform:]handle``)."""

    bot_accounts: frozenset[str]
    blocked_authors: frozenset[str]

    @classmethod
    def from_lists(cls, bots: Sequence[str], blocked: Sequence[str]) -> Screening:
        """Normalise handles: lower case, no ``@``."""

        def norm(items: Sequence[str]) -> frozenset[str]:
            return frozenset(i.strip().lower().lstrip("@") for i in items if i.strip())

        return cls(norm(bots), norm(blocked))

    @staticmethod
    def _listed(names: frozenset[str], m: Mention) -> bool:
        handle = m.author_handle.lower().lstrip("@")
        return (
            handle in names
            or f"{m.platform.value}:{handle}" in names
            or (f"{m.platform.value}:@{handle}" in names)
        )

    def is_bot(self, m: Mention) -> bool:
        """Whether the author is a configured bot account."""
        return self._listed(self.bot_accounts, m)

    def is_blocked(self, m: Mention) -> bool:
        """Whether the author is blocked."""
        return self._listed(self.blocked_authors, m)

    def reason(self, m: Mention, own_account_ids: frozenset[str] = frozenset()) -> str | None:
        """Why ``m`` must not be answered, or None."""
        if m.author_id in own_account_ids:
            return OWN_ACCOUNT
        if m.author_is_bot:
            return "author is a bot (flagged by the platform)"
        if self.is_bot(m):
            return "author is a configured bot account"
        if self.is_blocked(m):
            return "author is blocked"
        return None


def safe_classify(classifier: Classifier, text: str) -> Verdict:
    """Classify; a classifier failure sends the mention to a human instead of dropping it."""
    try:
        return classifier.classify(text)
    except Exception:
        logger.exception("classifier failed; treating the mention as a question")
        return Verdict(
            Category.QUESTION, 0.0, (TRIAGE_PREFIX + "classifier error",), needs_triage=True
        )


def _capped(d: Decision, ticket_id: int) -> Decision:
    """The author is past the hourly ack cap: the mention joins their open ticket, unanswered."""
    return replace(
        d,
        status=MentionStatus.FOLLOW_UP,
        plan=None,
        ack=None,
        join_ticket_id=ticket_id,
        note="flood cap: no acknowledgement",
    )


class Pipeline:
    """Turns stored mentions into decisions and commits them; adapters call :meth:`submit`."""

    def __init__(
        self,
        *,
        store: Store,
        classifier: Classifier,
        templates: TemplatesFile,
        escalation: EscalationFile,
        adapters: Mapping[Platform, PlatformAdapter],
        screening: Screening,
        brand: str,
        ref_prefix: str,
        on_committed: Callable[[], None] = lambda: None,
        max_acks_per_author_per_hour: int = 3,
        reopen_window: timedelta = timedelta(days=7),
    ) -> None:
        self._store = store
        self._classifier = classifier
        self._templates = templates
        self._escalation = escalation
        self._ctx = HandlerContext(escalation=escalation)
        self._adapters = adapters
        self._screening = screening
        self._brand = brand
        self._ref_prefix = ref_prefix
        self._on_committed = on_committed
        self._max_acks = max_acks_per_author_per_hour
        self._reopen_window = reopen_window
        self.observers: list[Observer] = []
        self._stranded = False

    async def submit(self, batch: Sequence[Mention], cursor: CursorUpdate | None = None) -> None:
        """Store ``batch`` with ``cursor`` in one transaction, then decide each new mention.

        If deciding fails after the mentions were stored (the database went away), they stay
        ``received`` and are decided on a later call, even one with an empty batch: the
        platform will not deliver them again, since the cursor has moved.
        """
        stored = await self._store.record(batch, cursor) if batch or cursor else []
        if self._stranded:
            await self.recover()
            self._stranded = False
        if stored:
            try:
                await self.process(stored)
            except Exception:
                self._stranded = True
                raise

    async def process(self, stored: Sequence[StoredMention]) -> list[Applied]:
        """Decide and commit already-stored mentions.

        A reply in the thread of the author's ticket joins it (reopening it inside the reopen
        window) instead of opening another. An author past the hourly ack cap gets no more
        acks: their mentions join their open ticket; those whose ticket is being opened in the
        same batch join it in a second pass.
        """
        links = await self._store.thread_links(stored)
        now = self._store.clock.now()
        activity = await self._store.author_activity(
            {(s.mention.platform, s.mention.author_id) for s in stored}, now - HOUR
        )
        acks = {key: a.acks_last_hour for key, a in activity.items()}
        decisions: list[Decision] = []
        later: list[StoredMention] = []
        for s in stored:
            d = self.decide(s, links.get(s.id), now)
            key = (s.mention.platform, s.mention.author_id)
            if d.ack is not None and acks.get(key, 0) >= self._max_acks:
                open_ticket = activity[key].open_ticket_id
                if open_ticket is None:
                    later.append(s)
                    continue
                d = _capped(d, open_ticket)
            elif d.ack is not None:
                acks[key] = acks.get(key, 0) + 1
            decisions.append(d)
        applied = await self._store.apply(decisions, self._ref_prefix)
        if later:
            again = await self._store.author_activity(
                {(s.mention.platform, s.mention.author_id) for s in later}, now - HOUR
            )
            rest = []
            for s in later:
                d = self.decide(s, None, now)
                open_ticket = again[(s.mention.platform, s.mention.author_id)].open_ticket_id
                rest.append(_capped(d, open_ticket) if open_ticket else replace(d, ack=None))
            applied += await self._store.apply(rest, self._ref_prefix)
        if any(a.ack_text for a in applied):
            self._on_committed()
        call_observers(self.observers, applied)
        return applied

    async def recover(self) -> int:
        """Finish mentions a previous run stored but did not decide; return how many."""
        total = 0
        while batch := await self._store.received_backlog():
            await self.process(batch)
            total += len(batch)
        if total:
            logger.info("recovered %d mention(s) stored by a previous run", total)
        return total

    def screen(self, m: Mention) -> str | None:
        """Why ``m`` must not be answered, or None."""
        adapter = self._adapters.get(m.platform)
        own = adapter.own_account_ids if adapter is not None else frozenset()
        return self._screening.reason(m, own)

    def classify(self, text: str) -> Verdict:
        """Classify; a classifier failure sends the mention to a human instead of dropping it."""
        return safe_classify(self._classifier, text)

    def decide(
        self, s: StoredMention, link: TicketLink | None = None, now: datetime | None = None
    ) -> Decision:
        """The pure part: screen, classify, ask the handler, prepare the acknowledgement."""
        m = s.mention
        reason = self.screen(m)
        if reason is not None:
            return Decision(s, MentionStatus.SCREENED, screen_reason=reason)
        verdict = self.classify(m.text)
        if link is not None and now is not None:
            resolved = link.state is TicketState.RESOLVED
            inside = link.resolved_at is not None and now - link.resolved_at <= self._reopen_window
            if not resolved or inside:  # a follow-up: no second ack, the ticket hears it
                return Decision(
                    s,
                    MentionStatus.FOLLOW_UP,
                    verdict=verdict,
                    join_ticket_id=link.ticket_id,
                    reopen=resolved,
                    note="customer follow-up",
                )
        plan = plan_for(verdict, m, self._ctx)
        if not plan.open_ticket:
            return Decision(s, MentionStatus.IGNORED, verdict=verdict, plan=plan)
        ack = None
        adapter = self._adapters.get(m.platform)
        destination = adapter.reply_destination(m) if adapter is not None else None
        if plan.ack_template is not None and destination is not None:
            ack = AckSpec(render=self._renderer(plan.ack_template, m), destination=destination)
        return Decision(
            s,
            MentionStatus.TICKETED,
            verdict=verdict,
            plan=plan,
            policy_snapshot=self._escalation.snapshot(plan.policy),
            ack=ack,
        )

    def _renderer(self, template: str, m: Mention) -> Callable[[int], str]:
        def render(ticket_id: int) -> str:
            return render_ack(
                self._templates,
                template,
                m.platform,
                handle=m.author_handle,
                ref=ticket_ref(self._ref_prefix, ticket_id),
                brand=self._brand,
                variant_key=m.external_id,
            )

        return render
