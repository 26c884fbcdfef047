"""Customer-facing templates (``config/templates.yaml``): validation and rendering."""

from __future__ import annotations

import string
import zlib
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from bot.domain import Platform
from bot.textlimits import X_MAX_WEIGHTED, contains_url, x_weighted_length

PLACEHOLDERS: Final = frozenset({"handle", "ref", "brand"})
INCIDENT_PLACEHOLDERS: Final = PLACEHOLDERS | {"title", "status"}
NOTE_PLACEHOLDERS: Final = PLACEHOLDERS | {"note"}
DEFAULT_KEY: Final = "default"
TITLE_MAX: Final = 50  # an incident's title, as customers read it
STATUS_MAX: Final = 120  # an incident's public status text
NOTE_MAX: Final = 200  # a public resolution note
# Worst cases used to prove at load time that every rendering fits the platform's limit.
_WORST: Final = {
    "handle": "@" + "W" * 15,
    "ref": "CB-99999999",
    "brand": "",
    "title": "W" * TITLE_MAX,
    "status": "W" * STATUS_MAX,
    "note": "W" * NOTE_MAX,
}
MAX_ACK_WEIGHTED: Final = X_MAX_WEIGHTED - 60


def _fields(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:  # unbalanced braces
        raise ValueError(f"bad placeholder syntax in {text!r}: {exc}") from exc


def _check_text(
    text: str, known: frozenset[str] = PLACEHOLDERS, limit: int = MAX_ACK_WEIGHTED
) -> str:
    """One customer-facing text: known placeholders, carries {ref}, link-free, fits X."""
    if not text.strip():
        raise ValueError("empty text")
    names = _fields(text)
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}} in {text!r} "
            f"(known: {', '.join('{' + p + '}' for p in sorted(known))})"
        )
    if "ref" not in names:
        raise ValueError(
            f"{text!r} lacks {{ref}}: every acknowledgement carries the ticket reference, "
            "which keeps it unique (X refuses duplicate posts)"
        )
    if contains_url(text):
        raise ValueError(f"{text!r} contains a link; acknowledgements are link-free")
    worst = x_weighted_length(text.format(**_WORST))
    if worst > limit:
        raise ValueError(
            f"{text!r} can reach {worst} characters as X counts them; keep it under {limit} "
            f"(X allows {X_MAX_WEIGHTED}"
            + (", and the brand name needs room)" if limit < X_MAX_WEIGHTED else ")")
        )
    return text


AckText = Annotated[str, AfterValidator(_check_text)]
# Longer placeholders, so the whole of X's limit; the brand's share is checked with the config.
IncidentText = Annotated[
    str, AfterValidator(lambda t: _check_text(t, INCIDENT_PLACEHOLDERS, X_MAX_WEIGHTED))
]
NoteText = Annotated[
    str, AfterValidator(lambda t: _check_text(t, NOTE_PLACEHOLDERS, X_MAX_WEIGHTED))
]
AckPlatform = Literal["default", "x", "telegram", "mastodon", "webhook"]
IncidentTexts = dict[AckPlatform, Annotated[list[IncidentText], Field(min_length=1)]]


def _defaults(*texts: str) -> Callable[[], dict[AckPlatform, list[str]]]:
    return lambda: {"default": list(texts)}


class IncidentTemplates(BaseModel):
    """``incidents``: what customers linked to an incident are told ({title}, {status})."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ack: IncidentTexts = Field(
        default_factory=_defaults(
            "Sorry, {handle}: we know about this ({title}) and are working on it. "
            "{status} Your reference is {ref}."
        )
    )
    update: IncidentTexts = Field(
        default_factory=_defaults("Update on {title}, {handle}: {status} ({ref})")
    )
    fixed: IncidentTexts = Field(
        default_factory=_defaults(
            "Good news, {handle}: {title} is fixed. If you still have trouble, "
            "reply here and we'll pick it up ({ref})."
        )
    )


def pick(per_platform: Mapping[Any, list[str]], platform: Platform, variant_key: str) -> str:
    """One text for ``platform`` (else ``default``), chosen by a stable hash of the key.

    Raises:
        KeyError: neither the platform nor ``default`` has texts.
    """
    texts = per_platform.get(platform.value) or per_platform.get(DEFAULT_KEY)
    if not texts:
        raise KeyError(f"no text for {platform.value}")
    return texts[zlib.crc32(variant_key.encode()) % len(texts)]


def render_message(
    per_platform: Mapping[Any, list[str]],
    platform: Platform,
    *,
    variant_key: str,
    handle: str,
    **values: str,
) -> str:
    """Render a text with its placeholders; ``handle`` gains its @."""
    text = pick(per_platform, platform, variant_key)
    return text.format(handle=f"@{handle}" if handle else "", **values).strip()


class TemplatesFile(BaseModel):
    """``templates.yaml``: for each template set, texts per platform (``default`` for any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    acks: dict[str, dict[AckPlatform, Annotated[list[AckText], Field(min_length=1)]]] = Field(
        default_factory=dict
    )
    incidents: IncidentTemplates = Field(default_factory=IncidentTemplates)
    resolution: dict[AckPlatform, Annotated[list[NoteText], Field(min_length=1)]] = Field(
        default_factory=_defaults("{note} ({ref})")
    )

    @field_validator("acks")
    @classmethod
    def _no_empty_sets(
        cls, acks: dict[str, dict[AckPlatform, list[str]]]
    ) -> dict[str, dict[AckPlatform, list[str]]]:
        for set_name, per_platform in acks.items():
            if not per_platform:
                raise ValueError(f"template set {set_name!r} has no texts")
        return acks

    def texts_for(self, set_name: str, platform: Platform) -> list[str]:
        """The texts of ``set_name`` for ``platform`` (falling back to ``default``).

        Raises:
            KeyError: the set, or both its platform and default lists, are missing.
        """
        per_platform = {str(key): texts for key, texts in self.acks[set_name].items()}
        texts = per_platform.get(platform.value) or per_platform.get(DEFAULT_KEY)
        if not texts:
            raise KeyError(f"template set {set_name!r} has no text for {platform.value}")
        return texts


def worst_case(text: str, *, brand: str, ref_prefix: str) -> int:
    """The most characters (as X counts them) ``text`` can reach with this brand and prefix."""
    return x_weighted_length(
        text.format(**{**_WORST, "ref": f"{ref_prefix}99999999", "brand": brand})
    )


def render_ack(
    templates: TemplatesFile,
    set_name: str,
    platform: Platform,
    *,
    handle: str,
    ref: str,
    brand: str,
    variant_key: str,
) -> str:
    """Render one acknowledgement.

    The variant is picked by a stable hash of ``variant_key`` (the mention's id), so customers
    in a storm do not all receive the same sentence, and a re-render gives the same text.
    """
    texts = templates.texts_for(set_name, platform)
    text = texts[zlib.crc32(variant_key.encode()) % len(texts)]
    return text.format(handle=f"@{handle}" if handle else "", ref=ref, brand=brand).strip()
