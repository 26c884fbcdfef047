"""Config durations: ``90`` (seconds), ``"30s"``, ``"10m"``, ``"4h"``, ``"1h30m"``, ``"2d"``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, PlainSerializer

_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> timedelta:
    """Parse a config duration.

    Raises:
        ValueError: with an example of the accepted forms.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        # pydantic reports ValueError (not TypeError) as a validation error
        raise ValueError("expected a duration such as 30s, 10m, 4h or 1h30m, got a boolean")  # noqa: TRY004
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if text and pos == len(text):
            return timedelta(seconds=seconds)
    raise ValueError(f"expected a duration such as 30s, 10m, 4h or 1h30m, got {value!r}")


def format_duration(value: timedelta) -> str:
    """Render a duration the way an operator would write it (``1h30m``, ``45s``)."""
    total = value.total_seconds()
    if total and total < 1:
        return f"{round(total * 1000)}ms"
    parts = []
    rest = int(total)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]
