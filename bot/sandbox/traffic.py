"""Realistic, seedable mention traffic (complaints, questions, praise, noise) for the X fake."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bot.domain import Category

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from bot.sandbox.x_fake import FakeX

DEFAULT_BOT_AUTHORS: Final[tuple[str, ...]] = (
    "dealz_bot",
    "promoblast_bot",
    "couponfeed_bot",
    "trendwatch_bot",
    "autoreply_9000",
    "newsdigest_bot",
    "giveaway_bot",
)
"""Handles of automated accounts; about 3% of samples come from one of them."""

CATEGORY_WEIGHTS: Final[tuple[tuple[Category, float], ...]] = (
    (Category.COMPLAINT, 0.35),
    (Category.QUESTION, 0.25),
    (Category.PRAISE, 0.20),
    (Category.OTHER, 0.20),
)
"""The intended mix of categories."""

BOT_SHARE: Final = 0.03
"""The share of samples authored by one of the bot authors."""

MAX_HANDLE: Final = 15


@dataclass(frozen=True, slots=True)
class SampleMention:
    """One generated mention and what a perfect classifier would call it."""

    author: str
    text: str
    intended: Category
    is_bot: bool


@dataclass(frozen=True, slots=True)
class _Product:
    problems: tuple[str, ...]  # "my <product> <problem>"
    habits: tuple[str, ...]  # "why does my <product> keep <habit>?"
    states: tuple[str, ...]  # "how is my <product> STILL <state>?"
    fixes: tuple[str, ...]  # "my <product> <fix>" (praise)


_PRODUCTS: Final[dict[str, _Product]] = {
    "app": _Product(
        problems=(
            "keeps crashing",
            "won't let me log in",
            "is stuck on the loading screen",
            "logged me out and forgot my settings",
            "shows a blank page after the update",
            "drains my battery in an hour",
        ),
        habits=("crashing", "logging me out", "freezing on the payment screen"),
        states=("broken", "crashing on startup", "showing the wrong balance"),
        fixes=("works perfectly after the update", "is so much faster now"),
    ),
    "order": _Product(
        problems=(
            "hasn't arrived",
            "is late",
            "arrived damaged",
            "is missing an item",
            "was cancelled without any notice",
            "says delivered but it's not here",
        ),
        habits=("getting delayed", "changing its delivery date"),
        states=("not here", "stuck in processing", "marked as shipped with no tracking"),
        fixes=("showed up a day early", "arrived perfectly packed"),
    ),
    "delivery": _Product(
        problems=(
            "was left at the wrong address",
            "is three days late",
            "never showed up",
            "got rescheduled twice",
            "was thrown over the fence",
        ),
        habits=("getting rescheduled", "going to my neighbour"),
        states=("missing", "not here", "out for delivery since yesterday"),
        fixes=("came right on time", "was handled super carefully"),
    ),
    "card": _Product(
        problems=(
            "got declined at checkout",
            "was charged twice",
            "stopped working abroad",
            "was blocked for no reason",
            "never arrived in the post",
        ),
        habits=("getting declined", "getting blocked"),
        states=("blocked", "not working", "not activated"),
        fixes=("was replaced overnight", "works everywhere now"),
    ),
    "subscription": _Product(
        problems=(
            "renewed without asking me",
            "can't be cancelled online",
            "charged me the old price",
            "disappeared from my account",
            "got downgraded for no reason",
        ),
        habits=("renewing itself", "charging me more every month"),
        states=("active after I cancelled it", "charging me"),
        fixes=("was sorted in one chat", "got refunded without any fuss"),
    ),
    "router": _Product(
        problems=(
            "keeps dropping the connection",
            "blinks red all day",
            "is slower than dial-up",
            "won't connect after the firmware update",
            "reboots every evening",
        ),
        habits=("dropping the wifi", "rebooting itself"),
        states=("offline", "blinking red", "this slow"),
        fixes=("has been rock solid since the swap", "finally reaches the bedroom"),
    ),
    "account": _Product(
        problems=(
            "got locked",
            "won't accept my password",
            "shows someone else's address",
            "lost all my loyalty points",
        ),
        habits=("locking me out", "asking for a new code"),
        states=("locked", "showing the wrong name"),
        fixes=("was unlocked in minutes", "got all my points back"),
    ),
    "refund": _Product(
        problems=(
            "still hasn't come through",
            "was only partial",
            "got rejected without a reason",
            "went to a card I closed",
        ),
        habits=("getting delayed", "bouncing back"),
        states=("pending", "missing", "not on my statement"),
        fixes=("landed in two days", "came through before I even asked"),
    ),
}
_PRODUCT_NAMES: Final = tuple(_PRODUCTS)
_REFERENCED: Final = frozenset(("order", "delivery", "refund"))

_DURATIONS: Final = (
    "since Monday",
    "since last week",
    "all morning",
    "for two weeks",
    "since the update",
    "for days now",
)
_REPEATS: Final = (" again", " again", " for the third time this month", " AGAIN")
_POLITE_GREETINGS: Final = ("Hi {brand},", "Hello {brand} team,", "Hey there,", "Good morning,")
_POLITE_ASKS: Final = (
    "Could you please take a look?",
    "Would appreciate any help.",
    "Can someone help me out?",
    "Thanks in advance.",
    "Could you DM me?",
    "What are my options?",
)
_ANNOYED_TAILS: Final = (
    "Not impressed.",
    "This is getting old.",
    "Fix it please.",
    "Come on {brand}.",
    "Still waiting for an answer.",
    "Sort it out.",
)
_FURIOUS_OPENERS: Final = (
    "Unbelievable.",
    "Absolutely done with {brand}.",
    "WORST service ever.",
    "Are you kidding me?",
    "I'm furious.",
)
_FURIOUS_TAILS: Final = (
    "Nobody answers the phone.",
    "I want a refund NOW.",
    "Cancelling everything.",
    "Never again.",
    "Three calls and nobody can help.",
)
_SARCASTIC: Final = (
    "great, my {product} {problem} again. thanks {brand}",
    "love how my {product} {problem}. stellar work {brand}",
    "oh wonderful, my {product} {problem}. exactly what I needed today",
    "10/10 experience, my {product} {problem}. would not recommend",
    "wow {brand}, my {product} {problem}, been like that {duration}. truly impressive",
)
_QUESTION_COMPLAINTS: Final = (
    "why was I charged twice?",
    "why was I charged twice for one order?",
    "why does my {product} keep {habit}?",
    "how is my {product} STILL {state}?",
    "why is nobody answering about my {product}?",
    "is anyone going to fix my {product} or not?",
    "when exactly do I get my money back for the {product}?",
)
_QUESTIONS: Final = (
    "does the {product} work with {thing}?",
    "how do I {task}?",
    "is there a way to {task}?",
    "what are your opening hours on {day}?",
    "do you ship to {place}?",
    "when will the {item} be back in stock?",
    "can I change the delivery address on an order that already shipped?",
    "is there a student discount on the subscription?",
    "does {brand} offer {offer}?",
    "where can I find {document}?",
)
_QUESTION_OPENERS: Final = ("Hi {brand}, ", "Hey, ", "", "", "Quick question: ", "Hello! ")
_QUESTION_TAILS: Final = ("", "", " Thanks!", " Cheers.", " Thank you in advance.")
_THINGS: Final = (
    "Android 15",
    "iOS",
    "Apple Pay",
    "Google Pay",
    "mesh wifi",
    "a business account",
)
_TASKS: Final = (
    "update my card details",
    "pause my subscription",
    "reset the router",
    "change my username in the app",
    "track my order",
    "download my invoices",
    "add a second card",
    "switch to annual billing",
    "return an item",
    "turn on two-factor login",
)
_DAYS: Final = ("Sunday", "public holidays", "Christmas Eve", "Saturday", "Easter Monday")
_PLACES: Final = ("Canada", "Ireland", "the Canary Islands", "Norway", "PO boxes", "Iceland")
_ITEMS: Final = ("black router", "travel card", "family plan", "gift card", "mini router")
_OFFERS: Final = ("gift wrapping", "next-day delivery", "a free trial", "price matching")
_DOCUMENTS: Final = ("my invoices", "the router manual", "your privacy policy", "my order history")
_PRAISE: Final = (
    "Huge thanks to {brand}, my {product} {fix}",
    "shoutout to {agent} from {brand} support, {service}",
    "{brand} never disappoints",
    "have to say it, my {product} {fix}. well done {brand}",
    "the {brand} team {service}. thank you!",
    "props to {brand} for {good_thing}",
    "honestly impressed: {agent} {service}",
)
_AGENTS: Final = ("Sam", "Priya", "Tom", "Aisha", "Luis", "Mei", "Jonas", "Fatima")
_SERVICE: Final = (
    "fixed my issue in five minutes",
    "was super patient with me",
    "went above and beyond",
    "sorted everything on the first call",
    "replied within minutes",
)
_GOOD_THINGS: Final = (
    "the easy returns",
    "the new app update",
    "actually answering on a Sunday",
    "the refund landing in a day",
    "keeping me posted the whole time",
)
_SPAM: Final = (
    "{coin} is about to 100x, get in before it's too late! DM me",
    "Follow me for daily giveaways, link in bio",
    "Earn $500 a day from home, no experience needed. DM for info",
    "Check my profile for 50% off {brand} gift cards",
    "free followers, just follow back and retweet",
    "{coin} airdrop is live, claim yours before midnight",
    "follow me and I'll follow back, promise",
)
_COINS: Final = ("$MOONCAT", "$PEPEX", "$GLD2", "$ROCKETZ", "$FLOKIMAX")
_CHAT: Final = (
    "anyone else watching the match tonight?",
    "lol {brand} ads are everywhere today",
    "me and my sister arguing whether {brand} or {rival} is better",
    "good morning everyone, coffee first",
    "that {brand} jingle is stuck in my head",
    "the {brand} van parked on my street again, I feel famous",
    "who else is working from a cafe today",
)
_NEWS: Final = (
    "{brand} opens a new store in {city}, reports say",
    "{brand} shares up {percent}% after quarterly results",
    "Reading about {brand}'s plan to expand into {place_name}",
    "{brand} announces a partnership with {rival}",
    "Interesting thread on how {brand} handles customer support at scale",
)
_RIVALS: Final = ("Globex", "Initech", "Umbrella Retail", "Hooli")
_CITIES: Final = ("Leeds", "Lyon", "Porto", "Rotterdam", "Austin", "Gdansk", "Cork")
_REGIONS: Final = ("Scandinavia", "South America", "the Baltics", "Japan")
_EMOJI: Final[dict[str, tuple[str, ...]]] = {
    "polite": ("\U0001f64f", "\U0001f642"),
    "annoyed": ("\U0001f612", "\U0001f644"),
    "furious": ("\U0001f621", "\U0001f92c", "\U0001f624"),
    "sarcastic": ("\U0001f643", "\U0001f644", "\U0001f44f"),
    "question": ("\U0001f914",),
    "praise": ("\u2764\ufe0f", "\U0001f389", "\U0001f44f", "\U0001f64c"),
    "spam": ("\U0001f680", "\U0001f525", "\U0001f381", "\U0001f4b0"),
    "chat": ("\U0001f602", "\u2600\ufe0f", "\u2615"),
}
_FIRST_NAMES: Final = (
    "anna", "ben", "carla", "dev", "emma", "felix", "gina", "hugo", "ines", "jack", "kira",
    "liam", "maria", "nina", "omar", "paula", "quinn", "rosa", "sam", "tariq", "uma", "vik",
    "wendy", "xavi", "yara", "zoe", "noah", "leah", "mateo", "sofia", "arjun", "chloe",
)  # fmt: skip
_SURNAMES: Final = (
    "smith", "garcia", "nguyen", "kowalski", "murphy", "rossi", "khan", "silva", "berg",
    "okafor", "tanaka", "dubois", "novak", "jensen", "lopez", "walsh",
)  # fmt: skip
_WORDS: Final = (
    "pixel", "coffee", "rainy", "lazy", "cosmic", "urban", "quiet", "tiny", "retro", "salty",
    "sunny", "wild", "nerd", "panda", "fox", "otter", "cactus", "biker", "chef", "gamer",
)  # fmt: skip


class TrafficGenerator:
    """Draws varied, plausible mentions from phrase pieces; deterministic for a seeded ``rng``.

    The mix is about 35% complaints (polite to furious, sarcastic, or phrased as questions),
    25% questions, 20% praise and 20% other (spam, chit-chat, news); about 3% of all samples are
    authored by one of ``bot_authors``, with text drawn from the same mix.
    """

    def __init__(
        self,
        *,
        rng: random.Random,
        brand: str = "Acme",
        bot_authors: Sequence[str] = DEFAULT_BOT_AUTHORS,
    ) -> None:
        self._rng = rng
        self._brand = brand
        self._bot_authors = tuple(bot_authors)
        self._bot_lookup = frozenset(author.lower() for author in self._bot_authors)

    @property
    def rng(self) -> random.Random:
        """The random source (also used by :func:`run_traffic` for its intervals)."""
        return self._rng

    def sample(self, category: Category | None = None) -> SampleMention:
        """Draw one mention.

        Args:
            category: Draw from this category only (default: the usual mix).

        Returns:
            The mention with its intended category and whether a bot wrote it.
        """
        rng = self._rng
        categories = [category for category, _ in CATEGORY_WEIGHTS]
        weights = [weight for _, weight in CATEGORY_WEIGHTS]
        intended = category or rng.choices(categories, weights)[0]
        builders: dict[Category, Callable[[], str]] = {
            Category.COMPLAINT: self._complaint,
            Category.QUESTION: self._question,
            Category.PRAISE: self._praise,
            Category.OTHER: self._other,
        }
        text = " ".join(builders[intended]().split())
        is_bot = category is None and bool(self._bot_authors) and rng.random() < BOT_SHARE
        author = rng.choice(self._bot_authors) if is_bot else self._handle()
        return SampleMention(author=author, text=text, intended=intended, is_bot=is_bot)

    def samples(self, n: int) -> list[SampleMention]:
        """Draw ``n`` mentions.

        Args:
            n: How many.

        Returns:
            The mentions, in drawing order.
        """
        return [self.sample() for _ in range(n)]

    # -- pieces ----------------------------------------------------------------------------

    def _fill(self, template: str, product: str | None = None) -> str:
        rng = self._rng
        name = product or rng.choice(_PRODUCT_NAMES)
        spec = _PRODUCTS[name]
        values = {
            "brand": self._brand,
            "product": self._product_phrase(name),
            "problem": rng.choice(spec.problems),
            "habit": rng.choice(spec.habits),
            "state": rng.choice(spec.states),
            "fix": rng.choice(spec.fixes),
            "duration": rng.choice(_DURATIONS),
            "thing": rng.choice(_THINGS),
            "task": rng.choice(_TASKS),
            "day": rng.choice(_DAYS),
            "place": rng.choice(_PLACES),
            "item": rng.choice(_ITEMS),
            "offer": rng.choice(_OFFERS),
            "document": rng.choice(_DOCUMENTS),
            "agent": rng.choice(_AGENTS),
            "service": rng.choice(_SERVICE),
            "good_thing": rng.choice(_GOOD_THINGS),
            "coin": rng.choice(_COINS),
            "rival": rng.choice(_RIVALS),
            "city": rng.choice(_CITIES),
            "place_name": rng.choice(_REGIONS),
            "percent": str(rng.randint(2, 14)),
        }
        return template.format(**values)

    def _product_phrase(self, name: str) -> str:
        if name in _REFERENCED and self._rng.random() < 0.3:
            return f"{name} #{self._rng.choice('ABCKRX')}{self._rng.randint(10000, 99999)}"
        return name

    def _emoji(self, mood: str, chance: float) -> str:
        if self._rng.random() >= chance:
            return ""
        return " " + self._rng.choice(_EMOJI[mood])

    def _complaint(self) -> str:
        rng = self._rng
        tone = rng.choices(
            ("polite", "annoyed", "furious", "sarcastic", "question"), (22, 28, 18, 14, 18)
        )[0]
        if tone == "sarcastic":
            return self._fill(rng.choice(_SARCASTIC)) + self._emoji("sarcastic", 0.6)
        if tone == "question":
            text = self._fill(rng.choice(_QUESTION_COMPLAINTS))
            opener = self._fill(rng.choice(("{brand} ", "", "", "Seriously, ", "Hey {brand}, ")))
            return opener + text + self._emoji("annoyed", 0.3)
        core = self._fill("my {product} {problem}")
        if rng.random() < 0.2:
            core += rng.choice(_REPEATS)
        elif rng.random() < 0.35:
            core += f". Been like this {rng.choice(_DURATIONS)}"
        if tone == "polite":
            greeting = self._fill(rng.choice(_POLITE_GREETINGS))
            ask = self._fill(rng.choice(_POLITE_ASKS))
            return f"{greeting} {core}. {ask}{self._emoji('polite', 0.3)}"
        if tone == "annoyed":
            tail = self._fill(rng.choice(_ANNOYED_TAILS))
            text = f"{core[0].upper()}{core[1:]}. {tail}{self._emoji('annoyed', 0.4)}"
            return text.lower() if rng.random() < 0.2 else text
        opener = self._fill(rng.choice(_FURIOUS_OPENERS))
        tail = self._fill(rng.choice(_FURIOUS_TAILS))
        text = f"{opener} {core}{rng.choice(('!!!', '!!', '.', '?!'))} {tail}"
        text = text.upper() if rng.random() < 0.3 else text
        return text + self._emoji("furious", 0.6)

    def _question(self) -> str:
        rng = self._rng
        opener = self._fill(rng.choice(_QUESTION_OPENERS))
        body = self._fill(rng.choice(_QUESTIONS))
        if not opener or opener.endswith(": "):
            body = body[0].upper() + body[1:] if rng.random() < 0.6 else body
        tail = rng.choice(_QUESTION_TAILS)
        return f"{opener}{body}{tail}{self._emoji('question', 0.15)}"

    def _praise(self) -> str:
        text = self._fill(self._rng.choice(_PRAISE))
        return text + self._emoji("praise", 0.6)

    def _other(self) -> str:
        rng = self._rng
        kind = rng.choices(("spam", "chat", "news"), (45, 35, 20))[0]
        if kind == "spam":
            return self._fill(rng.choice(_SPAM)) + self._emoji("spam", 0.7)
        if kind == "chat":
            return self._fill(rng.choice(_CHAT)) + self._emoji("chat", 0.4)
        return self._fill(rng.choice(_NEWS))

    @property
    def brand(self) -> str:
        """The brand the customers write to."""
        return self._brand

    def handle(self) -> str:
        """A fresh, plausible customer handle."""
        return self._handle()

    def _handle(self) -> str:
        rng = self._rng
        first, surname, word = rng.choice(_FIRST_NAMES), rng.choice(_SURNAMES), rng.choice(_WORDS)
        pattern = rng.randrange(7)
        if pattern == 0:
            handle = f"{first}{rng.randint(1, 9999)}"
        elif pattern == 1:
            handle = f"{first}_{surname}"
        elif pattern == 2:
            handle = f"{first.capitalize()}{surname.capitalize()}"
        elif pattern == 3:
            handle = f"{word}{rng.choice(_WORDS)}{rng.randint(0, 99)}"
        elif pattern == 4:
            handle = f"the_real_{first}"
        elif pattern == 5:
            handle = f"{first}{surname[0]}_{rng.randint(70, 99)}"
        else:
            handle = f"{word}_{first}"
        handle = handle[:MAX_HANDLE]
        if handle.lower() in self._bot_lookup:
            handle = f"{first}_{rng.randint(100, 999)}"
        return handle


OUTAGE_THEME: Final = "checkout"
_OUTAGE_TEXTS: Final = (
    "{brand} checkout is broken, card payment fails every single time",
    "is your checkout down? been trying to pay for 20 minutes",
    "checkout keeps spinning and then errors out. Fix it please",
    "can't get through checkout, it just says something went wrong",
    "{brand} your checkout page won't load, I'm trying to give you money!!",
    "the checkout has been failing all morning, what is going on",
    "checkout error again. Third time today {emoji}",
    "why does checkout reject my card? it works everywhere else",
    "stuck at checkout with a full basket, nothing happens when I press pay",
    "Seriously {brand}, checkout is dead. Basket full, can't pay",
)


def outage_complaint(rng: random.Random, brand: str) -> str:
    """A complaint about the sandbox's outage (the checkout), phrased many ways."""
    text = rng.choice(_OUTAGE_TEXTS).format(brand=brand, emoji=rng.choice(("😡", "🙄", "😤", "")))
    return " ".join(text.split())


async def run_outage(
    inject: Callable[[SampleMention], str],
    gen: TrafficGenerator,
    *,
    after: float,
    complaints: int,
    over: float,
    stop: asyncio.Event,
) -> int:
    """After ``after`` seconds, ``complaints`` customers complain about one outage over ``over``.

    Returns:
        How many were injected (fewer when ``stop`` is set first).
    """
    wait = after
    injected = 0
    while injected < complaints and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await stop.wait()
        if not stop.is_set():
            sample = SampleMention(
                author=gen.handle(),
                text=outage_complaint(gen.rng, gen.brand),
                intended=Category.COMPLAINT,
                is_bot=False,
            )
            inject(sample)
            injected += 1
            wait = over / complaints
    return injected


async def run_traffic(
    fake: FakeX,
    gen: TrafficGenerator,
    *,
    rate_per_minute: float,
    stop: asyncio.Event,
    first_after: float = 0.5,
    on_inject: Callable[[str, SampleMention], None] | None = None,
    inject: Callable[[SampleMention], str] | None = None,
) -> int:
    """Inject generated mentions into ``fake`` as a Poisson process until ``stop`` is set.

    Args:
        fake: The fake X to inject into.
        gen: Where mentions come from (its ``rng`` also draws the intervals).
        rate_per_minute: Mean arrival rate.
        stop: Set it to end the run; the function returns promptly.
        first_after: Seconds before the first mention.
        on_inject: Called with the new post id and its sample after each injection.
        inject: Post a sample somewhere else than ``fake`` (another platform's fake).

    Returns:
        How many mentions were injected.

    Raises:
        ValueError: When the rate is not positive or ``first_after`` is negative.
    """
    if rate_per_minute <= 0:
        raise ValueError(f"rate_per_minute must be > 0, got {rate_per_minute}")
    if first_after < 0:
        raise ValueError(f"first_after must be >= 0, got {first_after}")
    injected = 0
    wait = first_after
    while not stop.is_set():
        try:
            async with asyncio.timeout(wait):
                await stop.wait()
        except TimeoutError:
            # The first one is a complaint, so a newcomer sees the whole loop at once.
            sample = gen.sample(Category.COMPLAINT if injected == 0 else None)
            if inject is not None:
                tweet_id = inject(sample)
            else:
                tweet_id = fake.inject_mention(author=sample.author, text=sample.text)
            injected += 1
            if on_inject is not None:
                on_inject(tweet_id, sample)
            wait = gen.rng.expovariate(rate_per_minute / 60.0)
    return injected
