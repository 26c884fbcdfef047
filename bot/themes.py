"""Themes in complaints: the words they share, and when sharing is a surge (pure functions).

A surge: on one platform, at least ``threshold`` different customers used a word or a
two-word phrase within the window, and it is ``min_ratio`` times as common among the window's
complaints as in the day before (with less history than that, in at least ``min_share`` of
them). Words are compared after NFKC and lower-casing, without handles, links or stopwords.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Final

SAMPLES: Final = 3
STOPWORDS: Final = frozenset(
    """
    a about above after again against all almost also am among an and another any anyone
    anything are aren't around as at away be because been before being below between both
    but by came can can't cannot come could couldn't did didn't do does doesn't doing don't
    done during each either else even ever every everyone everything few for from get gets
    getting got had hadn't has hasn't have haven't having he her here hers herself him
    himself his how i i'd i'll i'm i've if in into is isn't it it's its itself just keep
    know last let let's like made make many may me might more most much must my myself need
    never no nor not now of off on once one only or other our ours ourselves out over own
    please really same says said see seems she should shouldn't since so some someone
    something still such than thank thanks that that's the their theirs them themselves then
    there there's these they they're this those though through to today too under until up
    upon us very via was wasn't way we we're we've were weren't what what's when where which
    while who whom why will with won't would wouldn't yet you you'd you'll you're you've your
    yours yourself hey hello hi guys lol omg pls plz ok okay yes yeah
    """.split()  # noqa: SIM905 — a list this long reads best as words
)
_HANDLE = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_WORD = re.compile(r"[^\W\d_][\w'-]*")
QUOTES = str.maketrans(  # typographic quotes, as phones type them
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2019": "'",
        "\u2018": "'",
    }
)


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning: lower-cased, no handles, links or stopwords."""
    t = unicodedata.normalize("NFKC", text).translate(QUOTES).lower()
    t = _URL.sub(" ", _HANDLE.sub(" ", t))
    words = (w.strip("'-") for w in _WORD.findall(t))
    return [w for w in words if len(w) >= 3 and w not in STOPWORDS]


def candidate_terms(text: str, skip: frozenset[str] = frozenset()) -> set[str]:
    """Words and two-word phrases a theme can be made of (``skip``: e.g. the brand's name)."""
    words = [w for w in content_words(text) if w not in skip]
    terms = set(words)
    terms.update(f"{a} {b}" for a, b in itertools.pairwise(words) if a != b)
    return terms


def term_words(term: str) -> tuple[str, ...]:
    """A term or phrase as the words it matches (stopwords are not part of a match)."""
    return tuple(content_words(term))


@lru_cache(maxsize=256)
def _sequences(terms: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(seq for seq in (term_words(t) for t in terms) if seq)


def matches(words: Sequence[str], terms: tuple[str, ...]) -> bool:
    """Whether the content words of a text contain one of ``terms`` (phrases in order)."""
    present = set(words)
    for seq in _sequences(terms):
        if seq[0] not in present:
            continue
        n = len(seq)
        if n == 1 or any(tuple(words[i : i + n]) == seq for i in range(len(words) - n + 1)):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Complaint:
    """A complaint as the surge check reads it."""

    platform: str
    author: str
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Theme:
    """Complaints on one platform sharing a term far more often than usual."""

    platform: str
    key: str  # the term they share (what an incident declared from it matches)
    terms: tuple[str, ...]  # the theme's top terms, the key first
    customers: int  # different customers who wrote it within the window
    samples: tuple[str, ...]  # the newest texts


def find_themes(
    window: Sequence[Complaint],
    history: Sequence[Complaint],
    *,
    threshold: int,
    min_ratio: float,
    min_share: float,
    skip: frozenset[str] = frozenset(),
) -> list[Theme]:
    """The themes in ``window`` (pure; ``history``: the complaints before it, for "usual").

    A term is a theme's when at least ``threshold`` different customers used it in the window
    and it is ``min_ratio`` times as common among the window's complaints as in ``history``;
    with less history than the window holds, it must instead be in ``min_share`` of them.
    Terms whose complaints mostly overlap are one theme.
    """
    themes: list[Theme] = []
    for platform in sorted({c.platform for c in window}):
        mine = [c for c in window if c.platform == platform]
        past = [c for c in history if c.platform == platform]
        themes += _platform_themes(
            platform,
            mine,
            past,
            threshold=threshold,
            min_ratio=min_ratio,
            min_share=min_share,
            skip=skip,
        )
    return themes


def _platform_themes(
    platform: str,
    window: Sequence[Complaint],
    history: Sequence[Complaint],
    *,
    threshold: int,
    min_ratio: float,
    min_share: float,
    skip: frozenset[str],
) -> list[Theme]:
    if len(window) < threshold:
        return []
    docs = [candidate_terms(c.text, skip) for c in window]
    authors: dict[str, set[str]] = {}
    members: dict[str, set[int]] = {}
    for i, (c, terms) in enumerate(zip(window, docs, strict=True)):
        for t in terms:
            authors.setdefault(t, set()).add(c.author)
            members.setdefault(t, set()).add(i)
    wide = {t for t, who in authors.items() if len(who) >= threshold}
    if not wide:
        return []
    usual: dict[str, int] = dict.fromkeys(wide, 0)
    for c in history:
        for t in candidate_terms(c.text, skip) & wide:
            usual[t] += 1
    enough_history = len(history) >= len(window)
    ratios: dict[str, float] = {}
    for t in wide:
        share = len(members[t]) / len(window)
        if enough_history:
            ratio = share / max(usual[t] / len(history), 1 / len(history))
            if ratio >= min_ratio:
                ratios[t] = ratio
        elif share >= min_share:
            ratios[t] = share / min_share
    themes: list[Theme] = []
    left = sorted(ratios, key=lambda t: (-len(authors[t]), -ratios[t], t))
    while left:
        seed = members[left[0]]
        group = [t for t in left if len(members[t] & seed) >= 0.5 * len(members[t])]
        left = [t for t in left if t not in group]
        # the key: the most telling single word (a phrase only when no word stands out)
        words = [t for t in group if " " not in t] or group
        key = max(words, key=lambda t: (ratios[t], len(authors[t]), len(t)))
        top = (key, *sorted((t for t in group if t != key), key=lambda t: -len(members[t])))
        newest = sorted(members[key], key=lambda i: window[i].at, reverse=True)[:SAMPLES]
        themes.append(
            Theme(
                platform,
                key,
                top[:6],
                len(authors[key]),
                tuple(window[i].text for i in newest),
            )
        )
    return themes
