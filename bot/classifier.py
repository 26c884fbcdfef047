"""Rules engine: classifies mentions with the operator-editable rules in ``config/rules.yaml``."""

from __future__ import annotations

import importlib
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from bot.domain import Category, Verdict
from bot.model import BUILTIN_MODEL

__all__ = ["Classifier", "Fired", "RuleSpec", "RulesClassifier", "RulesFile"]

# Tie-break order, highest priority first: a complaint phrased as a question is a complaint.
_ORDER: tuple[Category, ...] = (
    Category.COMPLAINT,
    Category.QUESTION,
    Category.PRAISE,
    Category.OTHER,
)
_INDEX: dict[Category, int] = {category: i for i, category in enumerate(_ORDER)}
_KEYS: tuple[str, ...] = tuple(category.value for category in _ORDER)  # Verdict.scores keys
_MATCHERS: tuple[str, ...] = ("keywords", "phrases", "regex", "emoji")

# Every matcher sees the text after this normalisation: typographic apostrophes and
# look-alikes become "'", emoji variation selectors are dropped (so "❤️" and "❤" are the
# same), and runs of whitespace collapse to one space.
_NORMALISE = str.maketrans(
    {
        "\u2019": "'",  # right single quotation mark, the usual typographic apostrophe
        "\u2018": "'",  # left single quotation mark
        "\u02bc": "'",  # modifier letter apostrophe
        "\u2032": "'",  # prime
        "\u00b4": "'",  # acute accent
        "\ufe0f": None,  # variation selector-16 (emoji presentation)
        "\ufe0e": None,  # variation selector-15 (text presentation)
    }
)
_TOKEN = re.compile(r"\w+")
_KEYWORD_WORD = re.compile(r"\*?\w+\*?")
_REASON_MAX = 40  # matched text longer than this is shortened in reasons
_MAX_GATES = 3  # prefilters per regex rule
_Search = Callable[[str], "re.Match[str] | None"]
_Gate = tuple[str, ...]  # a prefilter: the text must contain one of these strings


def _import(name: str) -> ModuleType | None:
    """Import a CPython-internal module, or return None where it does not exist."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# The regex parser behind ``re`` (CPython >= 3.11), used to find the literal text a regex
# needs so that it can be skipped cheaply; without it every regex rule simply always runs.
_SRE_PARSER = _import("re._parser")
_SRE: Any = _import("re._constants")
if _SRE is None:
    _SRE_PARSER = None
_REPEATS: tuple[object, ...] = (
    (_SRE.MAX_REPEAT, _SRE.MIN_REPEAT, _SRE.POSSESSIVE_REPEAT) if _SRE is not None else ()
)
_NOTHING_MATCHED_CONFIDENCE = 0.5


def _normalise(text: str) -> str:
    """Return ``text`` as every matcher sees it (apostrophes, variation selectors, spaces).

    Non-ASCII text is first brought to Unicode's compatibility form (NFKC), so full-width
    and styled letters (U+FF57, U+1D41F) match like plain ones.
    """
    if not text.isascii():  # every character _NORMALISE maps is outside ASCII
        text = unicodedata.normalize("NFKC", text.translate(_NORMALISE))
    return " ".join(text.split())


def _clean_terms(terms: list[str], field: str) -> list[str]:
    """Normalise a list of terms and reject an empty list or an empty term.

    Raises:
        ValueError: the list is empty or one of its terms is blank.
    """
    if not terms:
        raise ValueError(f"{field} must list at least one entry")
    cleaned: list[str] = []
    for i, term in enumerate(terms):
        norm = _normalise(term)
        if not norm:
            raise ValueError(f"{field}[{i}] is empty")
        cleaned.append(norm)
    return cleaned


class RuleSpec(BaseModel):
    """One rule of ``config/rules.yaml``: one matcher and the weights it adds when it fires.

    Exactly one matcher must be given:

    - ``keywords``: whole words or multi-word terms, case-insensitive, at word boundaries
      (``thanks`` does not match "thanksgiving"). A ``*`` at the start or end of a keyword
      matches any run of word characters (``thank*`` matches "thanks" and "thankful").
    - ``phrases``: case-insensitive substrings (``refund`` matches "refunded").
    - ``regex``: a Python regular expression, compiled with ``re.IGNORECASE``.
    - ``emoji``: literal emoji (use ``phrases`` for ASCII emoticons such as ``:(``).

    All matchers see the text with typographic apostrophes (U+2019 and look-alikes) turned
    into ``'``, so "doesn't" matches however the apostrophe was typed; emoji variation
    selectors are removed and whitespace runs collapse to one space. Keywords, phrases and
    emoji are normalised the same way.

    ``weights`` maps categories to the amount added to their score when the rule fires; a
    negative weight argues against a category. ``force`` names a category that the mention
    gets whenever the rule fires, whatever the scores say (the first forcing rule in file
    order wins). A rule needs ``weights``, ``force``, or both.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    keywords: list[str] | None = None
    phrases: list[str] | None = None
    regex: str | None = None
    emoji: list[str] | None = None
    weights: dict[Category, float] = {}
    force: Category | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        name = value.strip()
        if not name:
            raise ValueError("rule name must not be empty")
        return name

    @field_validator("keywords")
    @classmethod
    def _check_keywords(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        keywords = _clean_terms(value, "keywords")
        for keyword in keywords:
            core = keyword.removeprefix("*").removesuffix("*")
            if not core.strip():
                raise ValueError(f"keyword {keyword!r} has nothing but wildcards")
            if "*" in core or core != core.strip():
                raise ValueError(
                    f"keyword {keyword!r}: '*' is allowed only at the start or end, next to a word"
                )
        return keywords

    @field_validator("phrases")
    @classmethod
    def _check_phrases(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return _clean_terms(value, "phrases")

    @field_validator("regex")
    @classmethod
    def _check_regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value:
            raise ValueError("regex must not be empty")
        try:
            pattern = re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from exc
        if pattern.fullmatch("") is not None:
            raise ValueError("regex matches the empty string, so it would fire on every mention")
        if unicodedata.normalize("NFKC", value) != value:
            raise ValueError(
                "the regex holds characters that mentions never contain after normalisation "
                "(full-width or styled letters, ligatures, '…'): write them plainly, e.g. "
                f"{unicodedata.normalize('NFKC', value)!r}"
            )
        return value

    @field_validator("emoji")
    @classmethod
    def _check_emoji(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        emoji = _clean_terms(value, "emoji")
        for item in emoji:
            if " " in item:
                raise ValueError(f"emoji {item!r} contains whitespace; list each emoji apart")
            if item.isascii():
                raise ValueError(
                    f"emoji {item!r} is plain ASCII; use phrases for emoticons such as ':('"
                )
        return emoji

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: dict[Category, float]) -> dict[Category, float]:
        for category, weight in value.items():
            if not math.isfinite(weight):
                raise ValueError(f"weight for {category.value!r} must be a finite number")
        if value and all(weight == 0 for weight in value.values()):
            raise ValueError("weights are all zero, so the rule would have no effect")
        return value

    @model_validator(mode="after")
    def _check_one_matcher(self) -> RuleSpec:
        given = [field for field in _MATCHERS if getattr(self, field) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                "a rule needs exactly one matcher (keywords, phrases, regex or emoji); "
                f"found {found}"
            )
        if not self.weights and self.force is None:
            raise ValueError("a rule needs weights, force, or both; it has neither")
        return self


class ClassifierSpec(BaseModel):
    """The ``classifier`` section of ``config/rules.yaml``: the model and unsure verdicts.

    ``model``: ``builtin`` (the model that ships with carebot), ``none`` (the rules alone
    decide, with ``min_score``), or the path of a model file written by ``carebot train``,
    relative to the config directory. ``threshold``: a verdict whose top probability is
    below it is unsure. ``margin``: a verdict whose top two probabilities are closer than
    this is unsure. ``fallback``: the category an unsure mention gets; its ticket is
    marked "needs triage". Verdicts forced by a rule are never unsure.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = BUILTIN_MODEL
    threshold: float = 0.35
    margin: float = 0.02
    fallback: Category = Category.QUESTION

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model must be builtin, none, or the path of a model file")
        return value.strip()

    @field_validator("threshold", "margin")
    @classmethod
    def _check_probability(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise ValueError("must be a probability from 0 up to (not including) 1")
        return value


class RulesFile(BaseModel):
    """The whole of ``config/rules.yaml``.

    ``classifier``: the learned model and what happens to unsure verdicts. ``min_score``
    (rules alone, ``classifier.model: none``): the top category's score must reach it,
    otherwise the verdict is ``other``. ``rules``: applied in order; each fires at most
    once per mention. With a model, a rule's weights are added to the model's scores
    (log-odds) for the categories, and a forcing rule decides on its own.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    classifier: ClassifierSpec = ClassifierSpec()
    min_score: float = 1.0
    rules: list[RuleSpec]

    @field_validator("min_score")
    @classmethod
    def _check_min_score(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError("min_score must be a number greater than 0")
        return value

    @field_validator("rules")
    @classmethod
    def _check_unique_names(cls, value: list[RuleSpec]) -> list[RuleSpec]:
        seen: dict[str, int] = {}
        for i, rule in enumerate(value):
            if rule.name in seen:
                raise ValueError(
                    f"duplicate rule name {rule.name!r} (rules {seen[rule.name]} and {i})"
                )
            seen[rule.name] = i
        return value


class Classifier(Protocol):
    """Decides what a mention is; rules today, a learned model may sit behind it later."""

    def classify(self, text: str) -> Verdict:
        """Classify one mention's text."""


def _alternation(terms: list[str], wrap: Callable[[str], str]) -> str:
    """Return one regex alternation of ``terms``, longest first, each escaped by ``wrap``."""
    unique = sorted({term.lower() for term in terms}, key=lambda t: (-len(t), t))
    return "|".join(wrap(term) for term in unique)


def _keyword_regex(keyword: str) -> str:
    """Return the regex body for one lower-cased keyword (``*`` is a word-character run)."""
    head = r"\w*" if keyword.startswith("*") else ""
    tail = r"\w*" if keyword.endswith("*") else ""
    return head + re.escape(keyword.strip("*")) + tail


def _keyword_trigger(keyword: str) -> str | None:
    """Return a word that any text matching ``keyword`` holds as a whole token, if any.

    The longest such word is chosen, as long words are the rarer ones.
    """
    words = [w for w in _KEYWORD_WORD.findall(keyword) if "*" not in w]
    return max(words, key=len) if words else None


def _strength(strings: frozenset[str]) -> tuple[int, int]:
    """Rank a set of required strings: longer shortest string first, then fewer strings."""
    return min(len(s) for s in strings), -len(strings)


def _sequence_requirements(sequence: Any) -> list[frozenset[str]]:
    """Return what every match of a parsed regex sequence must contain.

    Each set in the list holds strings of which every match contains at least one; see
    :func:`_regex_gates`.
    """
    required: list[frozenset[str]] = []
    run: list[str] = []
    for op, arg in sequence:
        if op is _SRE.LITERAL and arg < 128:
            run.append(chr(arg).lower())
            continue
        if run:
            required.append(frozenset(["".join(run)]))
            run = []
        if op is _SRE.SUBPATTERN:
            required.extend(_sequence_requirements(arg[3]))
        elif op is _SRE.ATOMIC_GROUP:
            required.extend(_sequence_requirements(arg))
        elif op in _REPEATS and arg[0] >= 1:
            required.extend(_sequence_requirements(arg[2]))
        elif op is _SRE.BRANCH:
            union: set[str] = set()
            for branch in arg[1]:
                options = _sequence_requirements(branch)
                if not options:  # this branch needs nothing, so neither does the whole
                    break
                strongest: frozenset[str] = max(options, key=_strength)
                union.update(strongest)
            else:
                required.append(frozenset(union))
        # Anything else (classes, anchors, lookarounds, optional parts) requires nothing.
    if run:
        required.append(frozenset(["".join(run)]))
    return required


def _regex_gates(pattern: str) -> tuple[_Gate, ...]:
    """Return cheap prefilters for a regex rule, run on the lower-cased ASCII-only text.

    Each gate searches for one of a set of literal strings that every match of ``pattern``
    must contain, found by walking the parsed pattern: a literal run in a sequence, one
    string from each branch of an alternation. If any gate finds nothing, the regex cannot
    match. Only ASCII literals are used and the gates only run on ASCII-only text, where
    case-insensitive matching is plain upper/lower case, so they never hide a match.
    Nothing is returned (the regex always runs) when nothing is required, and for a
    pattern anchored at the start of the text (``^...``), which fails faster than any
    prefilter could.
    """
    if _SRE_PARSER is None:
        return ()
    try:
        parsed = _SRE_PARSER.parse(pattern, re.IGNORECASE)
        if len(parsed) and parsed[0] == (_SRE.AT, _SRE.AT_BEGINNING):
            return ()
        required = _sequence_requirements(parsed)
    except (re.error, AttributeError, IndexError, TypeError, ValueError):
        return ()  # an unexpected parse tree: no shortcut, the regex always runs
    best = sorted(set(required), key=_strength, reverse=True)[:_MAX_GATES]
    best.sort(key=len)  # a single literal is the cheapest search: try those first
    return tuple(_gate(strings) for strings in best)


def _case_free(sequence: Any) -> bool:
    """Return whether a parsed regex mentions no upper-case or non-ASCII character.

    Such a regex, compiled without ``re.IGNORECASE`` and run on lower-cased ASCII text,
    matches exactly where the case-insensitive one matches the original text, and runs
    two to three times faster: Python's regex engine can then skip straight to the
    characters a match may start with. Scoped flags such as ``(?-i:...)`` and anything
    this walk does not know rule the shortcut out.
    """
    for op, arg in sequence:
        if op is _SRE.LITERAL or op is _SRE.NOT_LITERAL:
            if not _caseless_char(arg):
                return False
        elif op is _SRE.IN:
            if not all(_caseless_class_item(item_op, item) for item_op, item in arg):
                return False
        else:
            nested = _NESTED.get(op)
            parts = nested(arg) if nested is not None else None
            if parts is None or not all(_case_free(part) for part in parts):
                return False
    return True


def _caseless_char(code: int) -> bool:
    """Return whether a literal character is ASCII and has no upper-case form of its own."""
    return code < 128 and not chr(code).isupper()


def _caseless_class_item(op: object, item: Any) -> bool:
    """Return whether one item of a ``[...]`` class is free of upper-case and non-ASCII."""
    if op is _SRE.LITERAL:
        return _caseless_char(item)
    if op is _SRE.RANGE:
        low, high = item
        return high < 128 and not (low <= ord("Z") and high >= ord("A"))
    return op is _SRE.NEGATE or op is _SRE.CATEGORY


def _nested_ops() -> dict[object, Callable[[Any], list[Any] | None]]:
    """Map parsed-regex operations to the sequences nested in them (None: not case-free)."""
    if _SRE is None:
        return {}
    caseless: Callable[[Any], list[Any] | None] = lambda _: []  # noqa: E731
    return {
        _SRE.SUBPATTERN: lambda arg: None if arg[1] or arg[2] else [arg[3]],
        _SRE.BRANCH: lambda arg: list(arg[1]),
        _SRE.MAX_REPEAT: lambda arg: [arg[2]],
        _SRE.MIN_REPEAT: lambda arg: [arg[2]],
        _SRE.POSSESSIVE_REPEAT: lambda arg: [arg[2]],
        _SRE.ATOMIC_GROUP: lambda arg: [arg],
        _SRE.ASSERT: lambda arg: [arg[1]],
        _SRE.ASSERT_NOT: lambda arg: [arg[1]],
        _SRE.GROUPREF_EXISTS: lambda arg: [part for part in arg[1:] if part is not None],
        _SRE.AT: caseless,
        _SRE.ANY: caseless,
        _SRE.CATEGORY: caseless,
        _SRE.GROUPREF: caseless,
    }


_NESTED = _nested_ops()


def _lower_search(pattern: str) -> _Search | None:
    """Return a faster search for a case-free regex on lower-cased ASCII text, or None."""
    if _SRE_PARSER is None:
        return None
    try:
        if not _case_free(_SRE_PARSER.parse(pattern, re.IGNORECASE)):
            return None
    except (re.error, AttributeError, IndexError, TypeError, ValueError):
        return None
    return re.compile(pattern).search


def _gate(strings: frozenset[str]) -> _Gate:
    """Return the literal strings of a prefilter, longest first (the rarer ones)."""
    return tuple(sorted(strings, key=lambda t: (-len(t), t)))


class _CompiledRule:
    """A rule ready to run: its matchers, its prefilters and its pre-rendered reason parts.

    A keyword rule is split in two: ``words`` holds its one-word keywords, which match
    exactly when they are among the text's words (found with one dictionary look-up per
    word), and ``search`` the single alternation of its other keywords (multi-word, with
    punctuation or wildcards), which only runs when the text holds one of ``triggers``.
    A regex runs on the normalised text, on ASCII text only when its ``gates`` pass (see
    :func:`_regex_gates`) and then as ``lower_search`` if it has one (see
    :func:`_case_free`); the other matchers run on the lower-cased text.
    """

    __slots__ = (
        "contributions",
        "force",
        "gates",
        "index",
        "kind",
        "lower_search",
        "name",
        "prefix",
        "search",
        "suffixes",
        "terms",
        "triggers",
        "weights",
        "words",
    )

    def __init__(self, index: int, spec: RuleSpec) -> None:
        self.index = index
        self.name = spec.name
        self.prefix = f"rule {spec.name!r}: "
        self.kind = next(field for field in _MATCHERS if getattr(spec, field) is not None)
        self.words: frozenset[str] = frozenset()  # one-word keywords, matched as tokens
        self.terms: tuple[tuple[str, str], ...] = ()  # other literal keywords, with a word
        self.search: _Search | None = None
        self.triggers: frozenset[str] | None = None  # search needs one of these tokens
        self.gates: tuple[_Gate, ...] = ()  # search needs all to pass
        self.lower_search: _Search | None = None  # the regex for lower-cased ASCII text
        if spec.keywords is not None:
            keywords = {_normalise(k.lower()) for k in spec.keywords}
            self.words = frozenset(k for k in keywords if _TOKEN.fullmatch(k))
            rest = keywords - self.words
            # Literal terms with a whole word in them are found with str.find (see
            # _find_term), indexed by that word; the others (wildcards) by a regex.
            self.terms = tuple(
                (term, trigger)
                for term in sorted(rest)
                if "*" not in term and (trigger := _keyword_trigger(term)) is not None
            )
            others = sorted(rest - {term for term, _ in self.terms})
            if others:
                body = _alternation(others, _keyword_regex)
                self.search = re.compile(rf"(?<!\w)(?:{body})(?!\w)").search
                triggers = [_keyword_trigger(k) for k in others]
                if None not in triggers:
                    self.triggers = frozenset(t for t in triggers if t is not None)
        elif spec.phrases is not None:
            self.search = re.compile(_alternation(spec.phrases, re.escape)).search
        elif spec.emoji is not None:
            self.search = re.compile(_alternation(spec.emoji, re.escape)).search
        elif spec.regex is not None:
            self.search = re.compile(spec.regex, re.IGNORECASE).search
            self.gates = _regex_gates(spec.regex)
            self.lower_search = _lower_search(spec.regex)
        # weights[i] is the weight for _ORDER[i]; contributions lists only the non-zero ones.
        self.force = spec.force
        self.weights: tuple[float, ...] = tuple(spec.weights.get(c, 0.0) for c in _ORDER)
        self.contributions: tuple[tuple[int, float], ...] = tuple(
            (i, w) for i, w in enumerate(self.weights) if w != 0
        )
        # suffixes[i]: the reason's tail when _ORDER[i] wins (the winner's weight first).
        self.suffixes: tuple[str, ...] = tuple(
            self._suffix(spec.weights, winner, spec.force) for winner in _ORDER
        )

    @staticmethod
    def _suffix(weights: dict[Category, float], winner: Category, force: Category | None) -> str:
        ordered = sorted(
            ((c, w) for c, w in weights.items() if w != 0),
            key=lambda cw: (cw[0] != winner, _INDEX[cw[0]]),
        )
        parts = [f"forces {force.value}"] if force is not None else []
        parts += [f"{c.value} {w:+}" for c, w in ordered]
        return " → " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Fired:
    """What the rules found in one text.

    ``found`` maps each fired rule's index to the text it matched; ``scores`` holds the
    summed weights in the order complaint, question, praise, other; ``forced`` is the
    category of the first fired rule (in file order) that forces one.
    """

    found: dict[int, str]
    scores: list[float]
    forced: Category | None


class RulesClassifier:
    """Classifies mentions with a :class:`RulesFile`; everything is compiled up front.

    Scoring: every rule whose matcher finds something in the text fires once and adds its
    weights to the categories' scores. The category with the highest score wins if that
    score reaches ``min_score``; otherwise the verdict is ``other``. Ties go to the first
    of complaint, question, praise, other, so a complaint phrased as a question is a
    complaint. ``Verdict.scores`` holds all four categories' scores.

    Confidence, with ``top`` the winner's score, ``runner_up`` the best other score
    (floored at 0) and ``m`` = ``min_score``:

    - a category reached ``min_score``::

          confidence = (1 - exp(-top / (2 * m))) * (top - runner_up) / top

      The first factor saturates with the amount of evidence (one rule of weight ``m``
      gives 0.39, ``3 * m`` gives 0.78, ``6 * m`` gives 0.95); the second is the share of
      the winner's score that the runner-up does not contest (1 when nothing argues for
      another category, 0 for a tie broken by the fixed order).
    - nothing fired: ``other`` with confidence 0.5, meaning "nothing matched, no evidence
      either way"; the only reason is ``"no rule matched"``.
    - rules fired but no score reached ``min_score``: ``other`` with confidence
      ``0.5 * (1 - max(top, 0) / m)``, falling from 0.5 towards 0 as the best score nears
      the threshold.

    Reasons: one per fired rule, such as ``"rule 'broken-product': 'not working' →
    complaint +2.0"``, ordered by the rule's contribution to the winning category (largest
    first, rules arguing against it last, ties in file order). The quoted text is the
    rule's leftmost match, lower-cased for keywords, phrases and emoji and as written for
    a regex, shortened past 40 characters.

    Speed: patterns are compiled once, here. One-word keywords are looked up in a
    dictionary from each word of the text, the other keywords of a rule form one
    alternation that only runs when the text holds one of their words, and on ASCII text
    a regex is skipped when the literal text every match needs is absent, and runs
    without ``re.IGNORECASE`` on the lower-cased text when that gives the same matches.
    """

    def __init__(self, rules: RulesFile) -> None:
        self._min_score = rules.min_score
        self._rules: tuple[_CompiledRule, ...] = tuple(
            _CompiledRule(i, spec) for i, spec in enumerate(rules.rules)
        )
        # token -> (rules with that one-word keyword, (rule, search) pairs it triggers)
        words: dict[str, list[int]] = {}
        triggered: dict[str, list[tuple[int, _Search]]] = {}
        untriggered: list[tuple[int, _Search]] = []  # keyword terms with no whole word
        scan_phrases: list[tuple[int, _Search]] = []
        scan_emoji: list[tuple[int, _Search]] = []
        # (rule, search on norm, gates, search on low if the regex is case-free)
        scan_regex: list[tuple[int, _Search, tuple[_Gate, ...], _Search | None]] = []
        terms: dict[str, list[tuple[int, str]]] = {}
        for rule in self._rules:
            for word in rule.words:
                words.setdefault(word, []).append(rule.index)
            for term, trigger in rule.terms:
                terms.setdefault(trigger, []).append((rule.index, term))
            search = rule.search
            if search is None:
                continue
            if rule.triggers is not None:
                for token in rule.triggers:
                    triggered.setdefault(token, []).append((rule.index, search))
            elif rule.kind == "keywords":
                untriggered.append((rule.index, search))
            elif rule.kind == "phrases":
                scan_phrases.append((rule.index, search))
            elif rule.kind == "emoji":
                scan_emoji.append((rule.index, search))
            else:
                scan_regex.append((rule.index, search, rule.gates, rule.lower_search))
        # token -> (rules with that one-word keyword, (rule, search) pairs it triggers,
        #           (rule, term) pairs of literal keywords it is the trigger of)
        self._index: dict[
            str,
            tuple[tuple[int, ...], tuple[tuple[int, _Search], ...], tuple[tuple[int, str], ...]],
        ] = {
            token: (
                tuple(words.get(token, ())),
                tuple(triggered.get(token, ())),
                tuple(terms.get(token, ())),
            )
            for token in words.keys() | triggered.keys() | terms.keys()
        }
        self._index_words = frozenset(self._index)
        self._untriggered = tuple(untriggered)
        self._scan_phrases = tuple(scan_phrases)
        self._scan_emoji = tuple(scan_emoji)
        self._scan_regex = tuple(scan_regex)

    def classify(self, text: str) -> Verdict:
        """Classify one mention's text.

        Args:
            text: the mention as posted.

        Returns:
            The verdict, with every category's score and one reason per fired rule.
        """
        fired = self.fire(text)
        if not fired.found:
            return Verdict(
                category=Category.OTHER,
                confidence=_NOTHING_MATCHED_CONFIDENCE,
                reasons=("no rule matched",),
                scores=dict.fromkeys(_KEYS, 0.0),
            )
        scores = fired.scores
        if fired.forced is not None:
            return Verdict(
                category=fired.forced,
                confidence=1.0,
                reasons=self.reasons(fired, fired.forced),
                scores={key: round(score, 6) for key, score in zip(_KEYS, scores, strict=True)},
            )
        best = 0
        for i in (1, 2, 3):
            if scores[i] > scores[best]:
                best = i
        top = scores[best]
        min_score = self._min_score
        if top >= min_score:
            runner_up = max(0.0, *(s for i, s in enumerate(scores) if i != best))
            confidence = (1.0 - math.exp(-top / (2.0 * min_score))) * (top - runner_up) / top
        else:
            best = 3  # other
            confidence = 0.5 * (1.0 - max(top, 0.0) / min_score)
        return Verdict(
            category=_ORDER[best],
            confidence=min(1.0, max(0.0, confidence)),
            reasons=self.reasons(fired, _ORDER[best]),
            scores={key: round(score, 6) for key, score in zip(_KEYS, scores, strict=True)},
        )

    def fire(self, text: str) -> Fired:
        """Return the rules that fire on ``text``, their summed weights and any forcing."""
        norm = _normalise(text)
        found = self._find(norm, norm.lower())
        scores = [0.0, 0.0, 0.0, 0.0]
        forced: Category | None = None
        if found:
            rules = self._rules
            for i in sorted(found):  # file order, so sums are reproducible
                rule = rules[i]
                for k, weight in rule.contributions:
                    scores[k] += weight
                if forced is None:
                    forced = rule.force
        return Fired(found, scores, forced)

    def reasons(self, fired: Fired, winner: Category) -> tuple[str, ...]:
        """One reason per fired rule, largest contribution to ``winner`` first.

        A rule that forced the verdict comes first of all.
        """
        best = _INDEX[winner]
        rules = [self._rules[i] for i in sorted(fired.found)]
        rules.sort(key=lambda rule: (rule.force is not winner, -rule.weights[best]))
        return tuple(
            rule.prefix + _quote(fired.found[rule.index]) + rule.suffixes[best] for rule in rules
        )

    def _find(self, norm: str, low: str) -> dict[int, str]:
        """Return the index of every rule that fires on a text, with the text it matched.

        Args:
            norm: the normalised text (regexes run on it).
            low: ``norm`` lower-cased (keywords, phrases and emoji run on it).
        """
        found = self._find_keywords(low)
        for i, search in self._scan_phrases:
            if i not in found and (match := search(low)) is not None:
                found[i] = match[0]
        ascii_only = norm.isascii()
        if not ascii_only:  # emoji cannot be in ASCII text
            for i, search in self._scan_emoji:
                if (match := search(low)) is not None:
                    found[i] = match[0]
        for i, search, gates, lower_search in self._scan_regex:
            if not ascii_only:
                match = search(norm)
            elif gates and not _open(gates, low):
                continue
            elif lower_search is not None:
                match = lower_search(low)  # ASCII: lower-casing kept every position
            else:
                match = search(norm)
            if match is not None:
                found[i] = norm[match.start() : match.end()]
        return found

    def _find_keywords(self, low: str) -> dict[int, str]:
        """Return the keyword rules that fire on a lower-cased text, via the word index.

        Each rule keeps its leftmost match (the longer on a tie), whether a one-word
        keyword or another term. The text's words are intersected with the indexed words
        in one set operation; only the few words found are then looked at one by one.
        """
        index = self._index
        candidates: dict[int, _Search] = dict(self._untriggered)
        if not index and not candidates:
            return {}
        words = _TOKEN.findall(low)
        hits = self._index_words.intersection(words)
        found_words: dict[int, list[str]] = {}  # rule -> its one-word keywords found
        best: dict[int, tuple[int, int, str]] = {}  # rule -> (start, -length, text)
        for word in hits:
            rules, triggered, terms = index[word]
            for i in rules:
                found_words.setdefault(i, []).append(word)
            if triggered:
                candidates.update(triggered)
            for i, term in terms:
                start = _find_term(low, term)
                if start >= 0:
                    here = (start, -len(term), term)
                    if i not in best or here < best[i]:
                        best[i] = here
        for i, search in candidates.items():
            if (match := search(low)) is not None:
                here = (match.start(), -len(match[0]), match[0])
                if i not in best or here < best[i]:
                    best[i] = here
        first = {i: text for i, (_, _, text) in best.items()}
        for i, ws in found_words.items():
            word = ws[0] if len(ws) == 1 else min(ws, key=words.index)
            other = best.get(i)
            # A term of the same rule matched too: keep whichever starts first.
            if other is None or _word_start(word, low) < other[0]:
                first[i] = word
        return first


def _find_term(low: str, term: str) -> int:
    r"""Where ``term`` first occurs in ``low`` with no word character on either side, or -1.

    The same as searching ``(?<!\w)term(?!\w)``: ``\w`` is what ``str.isalnum`` or
    ``_`` accepts.
    """
    start = low.find(term)
    size = len(low)
    while start >= 0:
        end = start + len(term)
        before = low[start - 1] if start else " "
        after = low[end] if end < size else " "
        if not (before.isalnum() or before == "_" or after.isalnum() or after == "_"):
            return start
        start = low.find(term, start + 1)
    return -1


def _word_start(word: str, low: str) -> int:
    """Where ``word`` first occurs in ``low`` as a whole word (it does occur)."""
    match = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", low)
    return match.start() if match is not None else len(low)


def _open(gates: tuple[_Gate, ...], low: str) -> bool:
    """Return whether every prefilter of a regex rule finds its text in ``low``."""
    for strings in gates:
        for text in strings:  # str's own search beats a regex alternation by far
            if text in low:
                break
        else:
            return False
    return True


def _quote(found: str) -> str:
    """Return matched text quoted for a reason, shortened if long."""
    if len(found) > _REASON_MAX:
        found = found[: _REASON_MAX - 1] + "…"
    return f"'{found}'"
