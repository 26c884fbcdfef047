"""Text length rules of the platforms (X weighs characters; URLs count as 23)."""

from __future__ import annotations

import re
from typing import Final

X_MAX_WEIGHTED: Final = 280
X_URL_WEIGHT: Final = 23
URL_RE: Final = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_LIGHT_RANGES: Final = ((0x0000, 0x10FF), (0x2000, 0x200D), (0x2010, 0x201F), (0x2032, 0x2037))


def _weight(ch: str) -> int:
    cp = ord(ch)
    return 1 if any(lo <= cp <= hi for lo, hi in _LIGHT_RANGES) else 2


def x_weighted_length(text: str) -> int:
    """Length of ``text`` as X counts it (twitter-text v3 weighting, URLs as 23)."""
    total, pos = 0, 0
    for match in URL_RE.finditer(text):
        total += sum(_weight(c) for c in text[pos : match.start()]) + X_URL_WEIGHT
        pos = match.end()
    return total + sum(_weight(c) for c in text[pos:])


def contains_url(text: str) -> bool:
    """Whether ``text`` holds something a platform would treat as a link."""
    return URL_RE.search(text) is not None
