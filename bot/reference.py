"""``carebot config-reference``: every ``carebot.yaml`` key, its default and its meaning.

Keys and defaults come from the pydantic models (so the reference cannot miss a key or show a
stale default); meanings come from the comments above each key in the config directory's
``carebot.yaml`` (the shipped file documents every key), with their "Default: …" sentence left
out. The README's configuration table is this output (a test keeps them equal).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bot.config import CarebotFile
from bot.durations import format_duration

KeyPath = tuple[str, ...]
_KEY_LINE: Final = re.compile(r"^( *)([A-Za-z_][A-Za-z0-9_]*):")
# "Default: 10s." up to the end of its sentence (a value may hold dots: file names, URLs)
_DEFAULT_SENTENCE: Final = re.compile(r"\s*Defaults?: (.*?)(?:\.(?=\s+[A-Z])|\.?$)", re.S)


def leaves(model: type[BaseModel], prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, FieldInfo]]:
    """Every leaf key of ``model`` (nested sections followed), in declaration order."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaves(annotation, (*prefix, name))
        else:
            yield (*prefix, name), field


def comments(text: str) -> dict[KeyPath, str]:
    """The comment block directly above each key of a commented YAML file, by key path."""
    found: dict[KeyPath, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            pending = []
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending:
            found[tuple(k for _, k in stack)] = " ".join(pending)
        pending = []
    return found


def _plain(value: Any) -> Any:  # noqa: PLR0911 — one return per kind of value
    """A default as YAML would hold it."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_of(field: FieldInfo) -> str:
    """The field's default, written as in ``carebot.yaml``."""
    value = field.get_default(call_default_factory=True)
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def stated_default(comment: str) -> str | None:
    """The value a comment's "Default: …" sentence states, if it has one."""
    match = _DEFAULT_SENTENCE.search(comment)
    return match.group(1).strip() if match else None


def rows(config_text: str) -> list[tuple[str, str, str]]:
    """(key, default, meaning) for every key of ``carebot.yaml``."""
    meanings = comments(config_text)
    out = []
    for path, field in leaves(CarebotFile):
        meaning = _DEFAULT_SENTENCE.sub("", meanings.get(path, "")).strip()
        out.append((".".join(path), default_of(field), meaning))
    return out


def render(config_dir: Path) -> str:
    """The reference as a Markdown table."""
    text = (config_dir / "carebot.yaml").read_text(encoding="utf-8")
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in rows(text):
        cell = meaning.replace("|", "\\|")
        lines.append(f"| `{key}` | `{default}` | {cell} |")
    return "\n".join(lines) + "\n"
