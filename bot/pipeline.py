"""The pipeline: record → screen → classify → handle → commit (DESIGN.md, "The flow").

Group commit: sources hand their mentions to :meth:`Pipeline.submit`, which queues them
(bounded: a full queue makes sources wait, never memory grow) and returns once they are
committed. One writer task takes what is queued, up to ``group_size`` mentions or what
arrives within ``group_wait`` of the first, and commits it in ONE transaction: the
mentions, the sources' cursors, and every decision (mention status, ticket, first event,
acknowledgement row), written with bulk statements. Nothing is sent before that commit, so
a mention is stored before anything else happens to it, and a crash loses or doubles
nothing (ingest is idempotent on platform + id, and the cursor moves with the mentions).

If deciding fails (a bug, not the database), the group's mentions and cursors are stored
alone, left ``received``, and decided by :meth:`Pipeline.recover` after the next group has
committed (one by one if need be, so one bad mention cannot hold back the rest), as at
start-up after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

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
from bot.incidents import ActiveIncident, ActiveIncidents, first_match, incident_ref
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
from bot.templates import TemplatesFile, render_ack, render_message
from bot.textlimits import storable
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


class Tuning:
    """What operators tune in the config files, swapped whole on a reload.

    A group of mentions is decided with the tuning it started with, so a reload never mixes
    old rules with new templates for one mention.
    """

    def __init__(
        self,
        *,
        classifier: Classifier,
        templates: TemplatesFile,
        escalation: EscalationFile,
        screening: Screening,
        brand: str,
        max_acks_per_author_per_hour: int = 3,
        reopen_window: timedelta = timedelta(days=7),
        incident_categories: frozenset[Category] = frozenset(),
    ) -> None:
        self.classifier = classifier
        self.templates = templates
        self.escalation = escalation
        self.ctx = HandlerContext(escalation=escalation)
        self.screening = screening
        self.brand = brand
        self.max_acks = max_acks_per_author_per_hour
        self.reopen_window = reopen_window
        self.incident_categories = incident_categories  # empty: incidents link nothing
        self._snapshots: dict[str | None, dict[str, Any] | None] = {}

    def snapshot(self, policy: str | None) -> dict[str, Any] | None:
        """The policy's snapshot, made once per policy and tuning."""
        if policy not in self._snapshots:
            self._snapshots[policy] = self.escalation.snapshot(policy)
        return self._snapshots[policy]


@dataclass
class _Delivery:
    """One source's batch waiting in the queue, and how its sender learns it is committed."""

    batch: Sequence[Mention]
    cursor: CursorUpdate | None
    done: asyncio.Future[None] | None = field(default=None, repr=False)  # None: direct


_TEXT_FIELDS: Final = (
    "external_id",
    "author_id",
    "author_handle",
    "text",
    "thread_id",
    "in_reply_to_id",
    "url",
    "reply_url",
)


def _storable(m: Mention) -> Mention:
    """``m`` with any NUL or lone surrogate replaced: neither database could store it.

    A platform could send one; refusing the mention would lose it, and failing the group
    would stall its source, so the characters are replaced (U+FFFD, "?") instead.
    """
    bad = {
        name: value
        for name in _TEXT_FIELDS
        if isinstance(value := getattr(m, name), str) and not storable(value)
    }
    if not bad:
        return m
    fixed: dict[str, Any] = {
        name: value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
        for name, value in bad.items()
    }
    return replace(m, **fixed)


def _verdict(verdicts: Mapping[int, Verdict] | None, s: StoredMention) -> Verdict | None:
    """The verdict made before the transaction for this mention object, if any."""
    return verdicts.get(id(s.mention)) if verdicts is not None else None


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
        tuning: Tuning,
        adapters: Mapping[Platform, PlatformAdapter],
        ref_prefix: str,
        on_committed: Callable[[], None] = lambda: None,
        group_size: int = 500,
        group_wait: float = 0.005,
        queue_batches: int = 256,
    ) -> None:
        self._store = store
        self.tuning = tuning  # swapped whole by a config reload
        self._adapters = adapters
        self._ref_prefix = ref_prefix
        self._on_committed = on_committed
        self.observers: list[Observer] = []
        self.incidents = ActiveIncidents()  # what new mentions may be linked to
        self._stranded = False
        self._group_size = group_size
        self._group_wait = group_wait
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(maxsize=queue_batches)
        self._writing = False  # the writer task runs: submit queues instead of committing
        self._closed = False

    async def submit(self, batch: Sequence[Mention], cursor: CursorUpdate | None = None) -> None:
        """Store ``batch`` with ``cursor`` and decide each new mention; return once committed.

        With the writer running (:meth:`run`), the batch joins the next group commit; a full
        queue makes the caller wait. Otherwise the batch is committed on its own.

        Raises:
            Exception: whatever kept the batch from being stored (the database is away); the
                source must offer it again, as its cursor did not move.
        """
        if self._closed:
            raise RuntimeError("carebot is stopping: no more intake")
        batch = [_storable(m) for m in batch]
        if not self._writing:
            await self._commit_group([_Delivery(batch, cursor)])
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Delivery(batch, cursor, done))
        await done

    @property
    def queued(self) -> int:
        """Batches waiting for the writer (at most ``queue_batches``)."""
        return self._queue.qsize()

    async def run(self) -> None:
        """The writer: commit queued batches in groups until cancelled."""
        self._writing = True
        try:
            while True:
                group = await self._next_group()
                try:
                    await self._commit_group(group)
                except Exception:  # the writer must outlive any one group
                    logger.exception("pipeline: a group commit failed unexpectedly")
                    for d in group:
                        if d.done is not None and not d.done.done():
                            d.done.set_exception(RuntimeError("carebot could not store this"))
                except asyncio.CancelledError:
                    # Stopped mid-commit: the transaction rolled back (or, just committed,
                    # will be offered again and skipped as a duplicate). Sources must know.
                    for d in group:
                        if d.done is not None and not d.done.done():
                            d.done.set_exception(
                                RuntimeError("carebot stopped before storing this")
                            )
                    raise
                finally:
                    for _ in group:
                        self._queue.task_done()
        finally:
            self._writing = False

    async def _next_group(self) -> list[_Delivery]:
        """The next batch, and what else is queued or arrives within ``group_wait``."""
        group = [await self._queue.get()]
        size = len(group[0].batch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._group_wait
        while size < self._group_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            group.append(item)
            size += len(item.batch)
        return group

    async def stop(self, task: asyncio.Task[None], drain_for: timedelta) -> None:
        """Refuse new intake, commit what is queued (bounded by ``drain_for``), end ``task``."""
        self._closed = True
        try:
            await asyncio.wait_for(self._queue.join(), drain_for.total_seconds())
        except TimeoutError:
            logger.warning("pipeline: %d batch(es) still queued at stop", self._queue.qsize())
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while not self._queue.empty():  # their sources did not see them stored
            item = self._queue.get_nowait()
            if item.done is not None and not item.done.done():
                item.done.set_exception(RuntimeError("carebot stopped before storing this"))

    async def _commit_group(self, group: list[_Delivery]) -> None:
        """Commit a group in one transaction and tell each sender how it went."""
        batch = [m for d in group for m in d.batch]
        cursors = [d.cursor for d in group if d.cursor is not None]
        try:
            applied = await self._record_and_decide(batch, cursors)
        except Exception as exc:
            direct = False
            for d in group:
                if d.done is None:
                    direct = True
                elif not d.done.done():
                    d.done.set_exception(exc)
            if direct:
                raise  # the caller of a direct submit gets the error itself
            return
        for d in group:
            if d.done is not None and not d.done.done():
                d.done.set_result(None)
        self._announce(applied)
        if self._stranded:  # after this group is safe: a bad mention must not block intake
            try:
                await self.recover()
                self._stranded = False
            except Exception:
                logger.exception("pipeline: recovering stored mentions failed; trying again later")

    async def _record_and_decide(
        self, batch: Sequence[Mention], cursors: Sequence[CursorUpdate]
    ) -> list[Applied]:
        if not batch and not cursors:
            return []
        tuning = self.tuning  # the whole group is decided with one tuning
        # Classified before the transaction: the CPU work must not hold the database's writer.
        verdicts = {
            id(m): self.classify(m.text, tuning) for m in batch if self.screen(m, tuning) is None
        }
        try:
            async with self._store.write() as conn:
                stored = await self._store.record(batch, cursors=cursors, within=conn)
                return await self._decide_apply(stored, conn, verdicts, tuning) if stored else []
        except Exception:
            logger.exception("pipeline: deciding %d mention(s) failed; storing them", len(batch))
        # Stored alone, undecided: recover() finishes them before the next group.
        await self._store.record(batch, cursors=cursors)
        self._stranded = True
        return []

    async def process(self, stored: Sequence[StoredMention]) -> list[Applied]:
        """Decide and commit already-stored mentions (each chunk its own transaction)."""
        applied = await self._decide_apply(stored, None)
        self._announce(applied)
        return applied

    def _announce(self, applied: Sequence[Applied]) -> None:
        if any(a.ack_text for a in applied):
            try:
                self._on_committed()
            except Exception:
                logger.exception("pipeline: the on-committed callback failed")
        call_observers(self.observers, applied)

    async def _decide_apply(
        self,
        stored: Sequence[StoredMention],
        within: AsyncConnection | None,
        verdicts: Mapping[int, Verdict] | None = None,
        tuning: Tuning | None = None,
    ) -> list[Applied]:
        """Decide stored mentions and write the decisions (in ``within`` if given).

        A reply in the thread of the author's ticket joins it (reopening it inside the reopen
        window) instead of opening another. An author past the hourly ack cap gets no more
        acks: their mentions join their open ticket; those whose ticket is being opened in the
        same batch join it in a second pass.
        """
        tuning = tuning or self.tuning
        links = await self._store.thread_links(stored, within=within)
        now = self._store.clock.now()
        activity = await self._store.author_activity(
            {(s.mention.platform, s.mention.author_id) for s in stored}, now - HOUR, within=within
        )
        acks = {key: a.acks_last_hour for key, a in activity.items()}
        found: list[ActiveIncident] = []
        if tuning.incident_categories:
            async with self._store.using(within, write=False) as conn:
                found = await self.incidents.get(conn)
        decisions: list[Decision] = []
        later: list[StoredMention] = []
        for s in stored:
            d = self.decide(s, links.get(s.id), now, _verdict(verdicts, s), tuning, found=found)
            key = (s.mention.platform, s.mention.author_id)
            if d.ack is not None and acks.get(key, 0) >= tuning.max_acks:
                open_ticket = activity[key].open_ticket_id
                if open_ticket is None:
                    later.append(s)
                    continue
                d = _capped(d, open_ticket)
            elif d.ack is not None:
                acks[key] = acks.get(key, 0) + 1
            decisions.append(d)
        applied = await self._store.apply(decisions, self._ref_prefix, within=within)
        if later:
            again = await self._store.author_activity(
                {(s.mention.platform, s.mention.author_id) for s in later},
                now - HOUR,
                within=within,
            )
            rest = []
            for s in later:
                d = self.decide(s, None, now, _verdict(verdicts, s), tuning, found=found)
                open_ticket = again[(s.mention.platform, s.mention.author_id)].open_ticket_id
                rest.append(_capped(d, open_ticket) if open_ticket else replace(d, ack=None))
            applied += await self._store.apply(rest, self._ref_prefix, within=within)
        return applied

    async def recover(self) -> int:
        """Finish mentions stored but not decided (a crash, a failed group); return how many.

        A batch that fails is tried one mention at a time; a mention that cannot be decided
        (a bug, not the database) is logged and left stored and undecided, so it can never
        hold back the others. A database error stops the recovery, to be tried again.
        """
        total = after = 0
        while batch := await self._store.received_backlog(after=after):
            after = batch[-1].id
            try:
                await self.process(batch)
            except (SQLAlchemyError, OSError):
                raise
            except Exception:
                logger.exception("pipeline: deciding %d stored mention(s) failed", len(batch))
                for one in batch:
                    try:
                        await self.process([one])
                    except (SQLAlchemyError, OSError):
                        raise
                    except Exception:
                        logger.exception(
                            "pipeline: mention %d cannot be decided; it stays stored", one.id
                        )
            total += len(batch)
        if total:
            logger.info("recovered %d stored mention(s) that were not decided", total)
        return total

    def screen(self, m: Mention, tuning: Tuning | None = None) -> str | None:
        """Why ``m`` must not be answered, or None."""
        adapter = self._adapters.get(m.platform)
        own = adapter.own_account_ids if adapter is not None else frozenset()
        return (tuning or self.tuning).screening.reason(m, own)

    def classify(self, text: str, tuning: Tuning | None = None) -> Verdict:
        """Classify; a classifier failure sends the mention to a human instead of dropping it."""
        return safe_classify((tuning or self.tuning).classifier, text)

    def decide(
        self,
        s: StoredMention,
        link: TicketLink | None = None,
        now: datetime | None = None,
        verdict: Verdict | None = None,
        tuning: Tuning | None = None,
        *,
        found: Sequence[ActiveIncident] = (),
    ) -> Decision:
        """The pure part: screen, classify, ask the handler, prepare the acknowledgement.

        ``verdict``: the mention's classification, when it was made beforehand. ``found``: the
        active incidents; a new complaint or question matching one is linked to it and
        acknowledged with the incident's status.
        """
        m = s.mention
        t = tuning or self.tuning
        reason = self.screen(m, t)
        if reason is not None:
            return Decision(s, MentionStatus.SCREENED, screen_reason=reason)
        if verdict is None:
            verdict = self.classify(m.text, t)
        if link is not None and now is not None:
            resolved = link.state is TicketState.RESOLVED
            inside = link.resolved_at is not None and now - link.resolved_at <= t.reopen_window
            if not resolved or inside:  # a follow-up: no second ack, the ticket hears it
                # "thanks, works now!" after a resolution is recorded, not a new problem
                thanks = (
                    resolved
                    and verdict.category in {Category.PRAISE, Category.OTHER}
                    and not verdict.needs_triage
                )
                return Decision(
                    s,
                    MentionStatus.FOLLOW_UP,
                    verdict=verdict,
                    join_ticket_id=link.ticket_id,
                    reopen=resolved and not thanks,
                    note="thanks after the resolution" if thanks else "customer follow-up",
                )
        plan = plan_for(verdict, m, t.ctx)
        if not plan.open_ticket:
            return Decision(s, MentionStatus.IGNORED, verdict=verdict, plan=plan)
        incident = (
            first_match(found, m.text) if verdict.category in t.incident_categories else None
        )
        ack = None
        adapter = self._adapters.get(m.platform)
        destination = adapter.reply_destination(m) if adapter is not None else None
        if plan.ack_template is not None and destination is not None:
            render = (
                self._renderer(plan.ack_template, m, t)
                if incident is None
                else self._incident_renderer(incident, m, t)
            )
            ack = AckSpec(render=render, destination=destination)
        return Decision(
            s,
            MentionStatus.TICKETED,
            verdict=verdict,
            plan=plan,
            policy_snapshot=t.snapshot(plan.policy),
            ack=ack,
            incident_id=incident.id if incident is not None else None,
            note=f"linked to {incident_ref(incident.id)}" if incident is not None else "",
        )

    def _incident_renderer(
        self, incident: ActiveIncident, m: Mention, tuning: Tuning
    ) -> Callable[[int], str]:
        def render(ticket_id: int) -> str:
            return render_message(
                tuning.templates.incidents.ack,
                m.platform,
                variant_key=m.external_id,
                handle=m.author_handle,
                ref=ticket_ref(self._ref_prefix, ticket_id),
                brand=tuning.brand,
                title=incident.title,
                status=incident.status,
            )

        return render

    def _renderer(self, template: str, m: Mention, tuning: Tuning) -> Callable[[int], str]:
        def render(ticket_id: int) -> str:
            return render_ack(
                tuning.templates,
                template,
                m.platform,
                handle=m.author_handle,
                ref=ticket_ref(self._ref_prefix, ticket_id),
                brand=tuning.brand,
                variant_key=m.external_id,
            )

        return render
