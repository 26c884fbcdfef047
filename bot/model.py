"""The learned model: text features, and a linear model's inference from a JSON file.

Training lives in :mod:`bot.training` (it needs scikit-learn); this module only reads a
model file and scores texts, quickly and without scikit-learn, so ``carebot run`` does not
import it.

Features (:func:`features`), the same at training and at run time:

- the text is normalised like the rules see it (NFKC, apostrophes), lower-cased, links
  become ``_url_``, ``@handles`` become ``_user_``, digit runs become ``0``, ``:)``-style
  emoticons become ``_smile_`` / ``_frown_``, and a letter repeated three times or more
  is kept twice ("sooooo" is "soo");
- tokens are words (with inner apostrophes) and single punctuation or emoji characters;
- ``w <token>``: each token; ``b <prev> <token>``: each pair of neighbours, starting from
  ``<s>``; ``c <gram>``: the 3- to 5-character grams of each word of two letters or more,
  padded with a space at each end (the word's start and end are part of the gram);
- ``l +`` / ``l ++`` / ``l -`` / ``l --``: a word of VADER's sentiment lexicon with a
  positive or negative valence (doubled at 2.0 or more), flipped to ``l ~+`` / ``l ~-``
  when one of the three tokens before it (punctuation and emoji count) negates ("not",
  "never", "don't"...);
- ``n <bucket>``: the number of words (1-3, 4-10, 11-25, 26 or more).

The model is multinomial logistic regression over those features: each text's vector
holds each feature's count times its inverse document frequency, scaled by
1 / sqrt(sum of count * idf**2) — unit length when no feature repeats (see
:func:`bot.training.vectorise`). The file holds the vocabulary, each feature's idf,
per-category coefficients and the intercepts. A feature's contribution is folded into one
row of five numbers, and each distinct word's own features are summed once and cached, so
scoring a text is one cache look-up per word, one look-up per neighbour pair and a few
additions, in plain Python.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np

from bot.domain import Category

__all__ = [
    "BUILTIN_MODEL",
    "FORMAT",
    "LinearModel",
    "ModelError",
    "Scores",
    "features",
    "tokens",
]

FORMAT: Final = "carebot-linear-model/1"
FEATURES_VERSION: Final = 3
BUILTIN_MODEL: Final = "builtin"
CLASSES: Final = (Category.COMPLAINT, Category.QUESTION, Category.PRAISE, Category.OTHER)

# One pass finds every token: links, @handles, emoticons, words, single other characters.
_TOKEN = re.compile(
    r"https?://\S+|www\.\S+|@\w+"
    r"|[:;=]'?-?[()\[\]dp*/\\|](?!\w)|[()]-?[:;=](?!\w)|<3|\^\^"
    r"|\w+(?:'\w+)*|[^\w\s']"
)
_SMILE = re.compile(r"[:;=]-?[)\]dp*]|\(-?[:;=]|<3|\^\^|xd")
_FROWN = re.compile(r"[:;=]'?-?[(\[/\\|]|\)-?[:;=]")
_DIGITS = re.compile(r"\d+")
_REPEAT = re.compile(r"(\w)\1{2,}")
_NORMALISE = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u02bc": "'",
        "\u2032": "'",
        "\u00b4": "'",
        "\ufe0f": None,
        "\ufe0e": None,
    }
)
_PLACEHOLDERS: Final = frozenset({"_url_", "_user_", "_smile_", "_frown_"})
_CHAR_MIN, _CHAR_MAX = 3, 5
_NEGATION_WINDOW = 3
_STRONG = 2.0
_CACHE_MAX = 200_000


class ModelError(Exception):
    """A model file that cannot be used; the message names the file and the problem."""


def _raw_tokens(text: str) -> list[str]:
    if not text.isascii():  # full-width and styled letters become plain ones first
        text = unicodedata.normalize("NFKC", text.translate(_NORMALISE))
    return _TOKEN.findall(text.lower())


def _normal(raw: str) -> str:
    """The normal form of one raw (lower-cased) token."""
    first = raw[0]
    normal = raw
    if "://" in raw or raw.startswith("www."):
        normal = "_url_"
    elif first == "@" and len(raw) > 1:
        normal = "_user_"
    elif len(raw) > 1 and not first.isalnum() and first != "_":
        if _SMILE.fullmatch(raw):
            normal = "_smile_"
        elif _FROWN.fullmatch(raw):
            normal = "_frown_"
    elif raw == "xd":
        normal = "_smile_"
    else:
        normal = _REPEAT.sub(r"\1\1", _DIGITS.sub("0", raw))
    return normal


def tokens(text: str) -> list[str]:
    """Return the normalised tokens of ``text`` (see the module docstring)."""
    return [_normal(raw) for raw in _raw_tokens(text)]


def _word_features(token: str) -> list[str]:
    """The features of one token on its own: the token and, for a word, its char grams."""
    out = ["w " + token]
    if len(token) >= 2 and token not in _PLACEHOLDERS and token.isalpha():
        padded = f" {token} "
        size = len(padded)
        for n in range(_CHAR_MIN, _CHAR_MAX + 1):
            out.extend("c " + padded[i : i + n] for i in range(size - n + 1))
    return out


@cache
def _lexicon() -> tuple[dict[str, float], frozenset[str]]:
    """VADER's word valences (single words only) and its negation words."""
    text = (
        resources.files("vaderSentiment")
        .joinpath("vader_lexicon.txt")
        .read_bytes()
        .decode("utf-8", errors="replace")
    )
    valences: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[0].isalpha():
            try:
                valences[parts[0]] = float(parts[1])
            except ValueError:
                continue
    from vaderSentiment.vaderSentiment import NEGATE  # noqa: PLC0415

    return valences, frozenset(NEGATE)


def _lexicon_feature(valence: float, negated: bool) -> str:
    if negated:
        return "l ~+" if valence > 0 else "l ~-"
    if valence > 0:
        return "l ++" if valence >= _STRONG else "l +"
    return "l --" if valence <= -_STRONG else "l -"


def _length_feature(count: int) -> str:
    if count <= 3:
        return "n 1-3"
    if count <= 10:
        return "n 4-10"
    if count <= 25:
        return "n 11-25"
    return "n 26+"


def features(text: str) -> list[str]:
    """Return the features of one text, as the model is trained on them (repeats kept).

    :meth:`LinearModel._indices` computes the same set, faster; a test keeps them equal.
    """
    valences, negate = _lexicon()
    out: list[str] = []
    prev = "<s>"
    last_negation = -_NEGATION_WINDOW - 1
    words = 0
    for position, token in enumerate(tokens(text)):
        out.extend(_word_features(token))
        out.append(f"b {prev} {token}")
        prev = token
        if token[0].isalnum():
            words += 1
        if token in negate:
            last_negation = position
            continue
        valence = valences.get(token)
        if valence is not None:
            out.append(_lexicon_feature(valence, position - last_negation <= _NEGATION_WINDOW))
    out.append(_length_feature(words))
    return out


@dataclass(frozen=True, slots=True)
class Scores:
    """A model's answer for one text: a probability per category, and why."""

    probabilities: dict[Category, float]
    logits: dict[Category, float]
    top_features: tuple[tuple[str, float], ...]  # (feature, weight for the category)


# A feature's row: idf squared, then its term in each class's score (idf * coefficient).
_Row = tuple[float, float, float, float, float]
# What a raw token contributes, worked out once: its normal form; the key prefix of the
# pair it starts ("b <token> "); its own features' summed row (five numbers); its
# lexicon feature's row when not negated and when negated; whether it negates; 1 for a word.
_TokenInfo = tuple[
    str, str, float, float, float, float, float, _Row | None, _Row | None, bool, int
]


class LinearModel:
    """A trained linear model, loaded from its JSON file; scores texts without scikit-learn.

    Args:
        data: the parsed model file.
        source: where it came from, for messages ("built-in model" or a path).

    Raises:
        ModelError: the data is not a model this version can use.
    """

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.source = source
        if data.get("format") != FORMAT:
            raise ModelError(
                f"{source}: not a carebot model (format {data.get('format')!r}, "
                f"expected {FORMAT!r})"
            )
        if data.get("features_version") != FEATURES_VERSION:
            raise ModelError(
                f"{source}: made for features version {data.get('features_version')!r}; "
                f"this carebot computes version {FEATURES_VERSION}: train it again"
            )
        try:
            classes = tuple(Category(c) for c in data["classes"])
            vocabulary: list[str] = [str(f) for f in data["vocabulary"]]
            idf = np.asarray(data["idf"], dtype=np.float64)
            coef = np.asarray(data["coef"], dtype=np.float64)
            intercept = np.asarray(data["intercept"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{source}: malformed model file ({exc})") from exc
        if classes != CLASSES:
            expected = ", ".join(c.value for c in CLASSES)
            raise ModelError(f"{source}: classes must be {expected}, in that order")
        n = len(vocabulary)
        if idf.shape != (n,) or coef.shape != (len(classes), n) or intercept.shape != (4,):
            raise ModelError(
                f"{source}: inconsistent shapes (vocabulary {n}, idf {idf.shape}, "
                f"coef {coef.shape}, intercept {intercept.shape})"
            )
        if len(set(vocabulary)) != n:
            raise ModelError(f"{source}: the vocabulary repeats a feature")
        if not (
            np.isfinite(idf).all() and np.isfinite(coef).all() and np.isfinite(intercept).all()
        ):
            raise ModelError(f"{source}: non-finite numbers in the model")
        self.classes = classes
        self.info: dict[str, Any] = dict(data.get("info") or {})
        # One row per feature: its idf squared (its share of the vector's squared length),
        # then its term in each class's score before scaling (idf * coefficient).
        table = np.column_stack([idf * idf, (coef * idf).T])
        self._rows: dict[str, _Row] = {
            f: (float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]))
            for f, r in zip(vocabulary, table, strict=True)
        }
        self._intercept = tuple(float(v) for v in intercept)
        self._tokens: dict[str, _TokenInfo] = {}
        # lexicon[(positive, negated)] = (row if weak, row if strong)
        self._lexicon: dict[tuple[bool, bool], tuple[_Row | None, _Row | None]] = {
            (positive, negated): (
                self._rows.get(_lexicon_feature(1.0 if positive else -1.0, negated)),
                self._rows.get(_lexicon_feature(_STRONG if positive else -_STRONG, negated)),
            )
            for positive in (True, False)
            for negated in (True, False)
        }

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        """Load a model file written by :func:`bot.training.train` (``carebot train``).

        Raises:
            ModelError: it cannot be read or is not a usable model.
        """
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the model file: {exc.strerror}") from exc
        return cls(_parse(raw, str(path)), str(path))

    @classmethod
    def builtin(cls) -> LinearModel:
        """The model that ships with carebot, trained on its own examples only."""
        return _builtin()

    def _token_info(self, raw: str) -> _TokenInfo:
        """Work out one raw token once (see :data:`_TokenInfo`), and cache it."""
        token = _normal(raw)
        rows = [r for f in _word_features(token) if (r := self._rows.get(f)) is not None]
        n, c0, c1, c2, c3 = (
            (math.fsum(column) for column in zip(*rows, strict=True)) if rows else (0.0,) * 5
        )
        valences, negate = _lexicon()
        valence = None if token in negate else valences.get(token)
        plain = negated = None
        if valence is not None:
            plain = self._lexicon[valence > 0, False][abs(valence) >= _STRONG]
            negated = self._lexicon[valence > 0, True][abs(valence) >= _STRONG]
        info: _TokenInfo = (
            token,
            "b " + token + " ",
            n,
            c0,
            c1,
            c2,
            c3,
            plain,
            negated,
            token in negate,
            int(token[0].isalnum()),
        )
        if len(self._tokens) >= _CACHE_MAX:
            self._tokens.clear()
        self._tokens[raw] = info
        return info

    def logits(self, text: str) -> tuple[float, float, float, float]:
        """Return the four class scores (log-odds before the softmax), in ``classes`` order.

        The same arithmetic as :func:`bot.training.vectorise` followed by the linear
        model, done per token: each distinct raw token's own features are summed once and
        cached, so a text costs one cache look-up per token, one per neighbour pair and a
        few additions.
        """
        rows = self._rows
        cache_ = self._tokens
        n = c0 = c1 = c2 = c3 = 0.0
        extra: list[_Row] = []  # pair and lexicon rows, summed after the loop
        pair = "b <s> "
        last_negation = -_NEGATION_WINDOW - 1
        words = 0
        for position, raw in enumerate(_raw_tokens(text)):
            info = cache_.get(raw)
            if info is None:
                info = self._token_info(raw)
            token, head, tn, t0, t1, t2, t3, plain, negated, negation, word = info
            n += tn
            c0 += t0
            c1 += t1
            c2 += t2
            c3 += t3
            row = rows.get(pair + token)
            pair = head
            if row is not None:
                extra.append(row)
            words += word
            if negation:
                last_negation = position
            elif plain is not None or negated is not None:
                row = negated if position - last_negation <= _NEGATION_WINDOW else plain
                if row is not None:
                    extra.append(row)
        row = rows.get(_length_feature(words))
        if row is not None:
            extra.append(row)
        for rn, r0, r1, r2, r3 in extra:
            n += rn
            c0 += r0
            c1 += r1
            c2 += r2
            c3 += r3
        b0, b1, b2, b3 = self._intercept
        if n <= 0.0:
            return b0, b1, b2, b3
        scale = 1.0 / math.sqrt(n)
        return c0 * scale + b0, c1 * scale + b1, c2 * scale + b2, c3 * scale + b3

    def explain(
        self, text: str, category: Category, limit: int = 5
    ) -> tuple[tuple[str, float], ...]:
        """Return the features of ``text`` that argue most for ``category``, strongest first.

        A feature's weight is its term in the category's score minus the mean of its terms
        in all four (the softmax only sees differences); negative weights argue against.
        The ones for and against are both listed, by how much they matter.
        """
        counts = Counter(f for f in features(text) if f in self._rows)
        if not counts:
            return ()
        scale = 1.0 / math.sqrt(sum(self._rows[f][0] * k for f, k in counts.items()))
        k = self.classes.index(category)
        ranked = []
        for feature, times in counts.items():
            terms = [v * times * scale for v in self._rows[feature][1:]]
            ranked.append((feature, terms[k] - sum(terms) / len(terms)))
        ranked.sort(key=lambda item: -abs(item[1]))
        return tuple(ranked[:limit])

    @staticmethod
    def probabilities(logits: Sequence[float]) -> list[float]:
        """Softmax of ``logits``."""
        high = max(logits)
        exps = [math.exp(v - high) for v in logits]
        total = sum(exps)
        return [e / total for e in exps]


def _parse(raw: bytes, source: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{source}: not a JSON model file ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{source}: not a carebot model (a JSON object was expected)")
    return data


@cache
def _builtin() -> LinearModel:
    raw = resources.files("bot").joinpath("data", "model.json").read_bytes()
    return LinearModel(_parse(raw, "built-in model"), "built-in model")


def digest(rows: Iterable[tuple[str, str]]) -> str:
    """A short fingerprint of labelled examples, recorded in a model's info."""
    h = hashlib.sha256()
    for text, label in rows:
        h.update(text.encode("utf-8", "surrogatepass") + b"\x00" + label.encode() + b"\x01")
    return h.hexdigest()[:16]
