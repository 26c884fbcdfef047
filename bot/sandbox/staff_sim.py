"""A simulated support team for the sandbox: claims, answers and resolves, and leads incidents.

A lead declares an incident on a surge alert, updates it and marks it fixed.

It acts only through the fake Telegram server (button clicks and replies to cards), so what
you watch in ``carebot run`` is the real staff-chat path: PTB receives the updates, the desk
applies them, the outbox relays replies to the customer on the fake X.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Sequence
from typing import Final

from bot.sandbox.telegram_fake import FakeTelegram, TgUser

REPLIES: Final = (
    "Hi! I've looked into this and sent you the details by DM. Anything else, just reply here.",
    "Thanks for your patience. This is sorted now; let us know if it happens again.",
    "Good news: the fix is on its way to you today. Sorry again for the hassle!",
)
THANKS: Final = (
    "Thank you! We've shared your kind words with the whole team.",
    "That's so kind of you, thank you! Enjoy a little something on us next time.",
)


class StaffSimulator:
    """Plays the configured staff members: each card is claimed, answered, then resolved."""

    def __init__(
        self,
        fake: FakeTelegram,
        *,
        chats: Sequence[int],
        members: Sequence[TgUser],
        rng: random.Random,
        share: float = 0.6,
        leads: Sequence[TgUser] = (),
        lead_chat: int | None = None,
    ) -> None:
        self._fake = fake
        self._leads = list(leads)
        self._lead_chat = lead_chat
        self._ticks = 0
        # (due tick, what, chat, message, incident number): the lead's moves in an incident
        self._incident_plans: list[tuple[int, str, int, int, int]] = []
        self._chats = list(chats)
        self._members = list(members)
        self._rng = rng
        self._share = share
        self._seen: set[tuple[int, int]] = set()  # (chat, message): ids repeat across chats
        self._plans: list[tuple[int, int, int, TgUser]] = []  # (step, chat, message, member)

    async def run(self, stop: asyncio.Event, *, every: float = 2.0) -> None:
        """Act every ``every`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                self.tick()

    def tick(self) -> None:
        """Take one round of actions: notice new cards, move planned ones one step on."""
        self._ticks += 1
        self._lead()
        if not self._members:
            return
        for chat in self._chats:
            for message in self._fake.sent(chat):
                self._notice(chat, message)
        plans, self._plans = self._plans, []
        for step, chat, message_id, member in plans:
            self._act(step, chat, message_id, member)

    def _lead(self) -> None:
        """Play the lead in crisis mode: declare on a surge alert, update, then mark fixed."""
        if not self._leads or self._lead_chat is None:
            return
        chat, lead = self._lead_chat, self._leads[0]
        for message in self._fake.sent(chat):
            message_id = int(str(message["message_id"]))
            if (chat, message_id) in self._seen:
                continue
            datas = [d for row in self._fake.buttons(chat, message_id) for _, d in row]
            declare = next((d for d in datas if d.startswith("inc_declare:")), None)
            fixed = next((d for d in datas if d.startswith("inc_fixed:")), None)
            if declare is not None:
                self._seen.add((chat, message_id))
                self._incident_plans.append((self._ticks + 2, declare, chat, message_id, 0))
            elif fixed is not None:
                self._seen.add((chat, message_id))
                number = int(fixed.split(":")[1])
                self._incident_plans += [
                    (self._ticks + 8, "update", chat, message_id, number),
                    (self._ticks + 25, fixed, chat, message_id, number),
                ]
        due = [p for p in self._incident_plans if p[0] <= self._ticks]
        self._incident_plans = [p for p in self._incident_plans if p[0] > self._ticks]
        for _, what, chat_id, message_id, number in due:
            if what == "update":
                self._fake.user_message(
                    chat_id,
                    lead,
                    f'/incident update {number} identified "We found the cause, a faulty '
                    'payment release, and are rolling it back now."',
                )
            else:
                self._fake.click(chat_id, message_id, lead, what)

    def _notice(self, chat: int, message: dict[str, object]) -> None:
        message_id = int(str(message["message_id"]))
        if (chat, message_id) in self._seen:
            return
        rows = self._fake.buttons(chat, message_id)
        if not any(data.startswith("claim:") for row in rows for _, data in row):
            return
        self._seen.add((chat, message_id))
        if self._rng.random() < self._share:
            self._plans.append((0, chat, message_id, self._rng.choice(self._members)))

    def _act(self, step: int, chat: int, message_id: int, member: TgUser) -> None:
        data = {b: d for row in self._fake.buttons(chat, message_id) for b, d in row}
        if step == 0 and "Claim" in data:
            self._fake.click(chat, message_id, member, data["Claim"])
        elif step == 1:
            card = next((m for m in self._fake.sent(chat) if m["message_id"] == message_id), {})
            praise = str(card.get("text", "")).startswith("💚")
            text = self._rng.choice(THANKS if praise else REPLIES)
            ref = re.search(r"\b[A-Z][A-Z0-9]{0,5}-?\d+\b", str(card.get("text", "")))
            if ref is not None:  # X refuses a post identical to an earlier one
                text = f"{text} ({ref.group(0)})"
            self._fake.user_message(chat, member, text, reply_to_message_id=message_id)
        elif step == 2 and "Resolve" in data:
            self._fake.click(chat, message_id, member, data["Resolve"])
            return
        else:
            return
        self._plans.append((step + 1, chat, message_id, member))
