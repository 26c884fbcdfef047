"""Text length rules of the platforms: X weighs characters, and every link costs 23."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

X_MAX_WEIGHTED: Final = 280
X_URL_WEIGHT: Final = 23

# Bare domains are links when they end in a TLD X recognises; this is a small, common subset
# (twitter-text knows them all), enough to keep customer-care texts link-free.
_TLDS: Final = (
    "com|net|org|info|biz|io|co|ai|app|dev|me|ly|tv|gg|shop|store|help|support|online|site"
    "|xyz|uk|us|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|ie|pt|ca|au|nz|jp|in|br|mx"
)
URL_RE: Final = re.compile(
    r"(?<![\w@./-])(?:https?://[^\s<>\"']+|www\.[^\s<>\"']+"
    rf"|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:{_TLDS})(?![\w-])(?:/[^\s<>\"']*)?)",
    re.IGNORECASE,
)
URL_TRAILING: Final = ".,:;!?'\")]}"


def _weigh_plain(text: str) -> int:
    """1 per code point in X's light ranges, 2 for any other."""
    total = 0
    for char in text:
        code = ord(char)
        light = (
            code <= 0x10FF
            or 0x2000 <= code <= 0x200D
            or 0x2010 <= code <= 0x201F
            or 0x2032 <= code <= 0x2037
        )
        total += 1 if light else 2
    return total


def _links(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in URL_RE.finditer(text):
        url = match.group(0).rstrip(URL_TRAILING)
        if url and url.lower() not in {"http://", "https://"}:
            spans.append((match.start(), match.start() + len(url)))
    return spans


def x_weighted_length(text: str) -> int:
    """The length X counts for a post (twitter-text v3 weighting, NFC, every link as 23).

    X counts a whole emoji sequence as 2 where this counts each code point, so the result is
    never below X's count: a text that passes here passes on X.
    """
    normalized = unicodedata.normalize("NFC", text)
    total, position = 0, 0
    for start, end in _links(normalized):
        total += _weigh_plain(normalized[position:start]) + X_URL_WEIGHT
        position = end
    return total + _weigh_plain(normalized[position:])


def contains_url(text: str) -> bool:
    """Whether ``text`` holds something a platform would turn into a link."""
    return bool(_links(unicodedata.normalize("NFC", text)))


def storable(text: str) -> bool:
    """Whether both databases can store ``text``: valid UTF-8 (no lone surrogate), no NUL."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
