"""A simulated support team for the sandbox: claims, answers and resolves some tickets.

It acts only through the fake Telegram server (button clicks and replies to cards), so what
you watch in ``carebot run`` is the real staff-chat path: PTB receives the updates, the desk
applies them, the outbox relays replies to the customer on the fake X.
"""

from __future__ import annotations

import asyncio
import random
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
    ) -> None:
        self._fake = fake
        self._chats = list(chats)
        self._members = list(members)
        self._rng = rng
        self._share = share
        self._seen: set[int] = set()
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
        if not self._members:
            return
        for chat in self._chats:
            for message in self._fake.sent(chat):
                self._notice(chat, message)
        plans, self._plans = self._plans, []
        for step, chat, message_id, member in plans:
            self._act(step, chat, message_id, member)

    def _notice(self, chat: int, message: dict[str, object]) -> None:
        message_id = int(str(message["message_id"]))
        if message_id in self._seen:
            return
        rows = self._fake.buttons(chat, message_id)
        if not any(data.startswith("claim:") for row in rows for _, data in row):
            return
        self._seen.add(message_id)
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
            self._fake.user_message(chat, member, text, reply_to_message_id=message_id)
        elif step == 2 and "Resolve" in data:
            self._fake.click(chat, message_id, member, data["Resolve"])
            return
        else:
            return
        self._plans.append((step + 1, chat, message_id, member))
