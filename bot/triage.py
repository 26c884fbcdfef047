"""The classifier carebot runs: the operator's rules combined with the learned model.

How a verdict is reached (``config/rules.yaml``, section ``classifier``):

1. The rules run first. A fired rule that forces a category decides on its own
   (confidence 1.0).
2. With ``model: none`` the rules alone decide, as :class:`bot.classifier.RulesClassifier`
   describes.
3. Otherwise the model scores the text (log-odds per category), the fired rules' weights
   are added to those scores, and a softmax turns them into probabilities. The most
   probable category wins; its probability is the confidence.
4. An unsure verdict (top probability below ``threshold``, or the top two closer than
   ``margin``) gets the ``fallback`` category and is marked "needs triage", so a person
   looks at it instead of the bot guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import exp

from bot.classifier import Fired, RulesClassifier, RulesFile
from bot.domain import TRIAGE_PREFIX, Verdict
from bot.model import CLASSES, LinearModel

__all__ = ["Explanation", "TriageClassifier"]

_KEYS = tuple(c.value for c in CLASSES)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything behind one verdict, for ``carebot classify --explain``."""

    verdict: Verdict
    model: str | None  # where the model came from; None: rules alone
    model_probabilities: dict[str, float]  # the model alone, before the rules' weights
    rule_scores: dict[str, float]
    features: tuple[tuple[str, float], ...]  # model features for (+) and against (-) it


class TriageClassifier:
    """Rules and model together; see the module docstring.

    Args:
        rules: the validated ``rules.yaml``.
        model: the learned model, or None when ``classifier.model`` is ``none``.
    """

    def __init__(self, rules: RulesFile, model: LinearModel | None) -> None:
        self._rules = RulesClassifier(rules)
        self._model = model
        spec = rules.classifier
        self._threshold = spec.threshold
        self._margin = spec.margin
        self._fallback = spec.fallback

    @property
    def model(self) -> LinearModel | None:
        """The learned model in use (None: rules alone)."""
        return self._model

    def classify(self, text: str) -> Verdict:
        """Classify one mention's text."""
        if self._model is None:
            return self._rules.classify(text)
        fired = self._rules.fire(text)
        if fired.forced is not None:
            return self._forced(fired)
        return self._decide(fired, self._model.logits(text))

    def explain(self, text: str, limit: int = 6) -> Explanation:
        """Classify ``text`` and return the parts of the decision."""
        verdict = self.classify(text)
        fired = self._rules.fire(text)
        rule_scores = dict(zip(_KEYS, fired.scores, strict=True))
        if self._model is None:
            return Explanation(verdict, None, {}, rule_scores, ())
        probabilities = LinearModel.probabilities(self._model.logits(text))
        return Explanation(
            verdict,
            self._model.source,
            dict(zip(_KEYS, probabilities, strict=True)),
            rule_scores,
            self._model.explain(text, verdict.category, limit),
        )

    def _forced(self, fired: Fired) -> Verdict:
        assert fired.forced is not None  # noqa: S101 — the caller checked
        return Verdict(
            category=fired.forced,
            confidence=1.0,
            reasons=self._rules.reasons(fired, fired.forced),
            scores={key: 1.0 if key == fired.forced.value else 0.0 for key in _KEYS},
        )

    def _decide(self, fired: Fired, logits: tuple[float, float, float, float]) -> Verdict:
        a, b, c, d = logits
        if fired.found:
            ra, rb, rc, rd = fired.scores
            a, b, c, d = a + ra, b + rb, c + rc, d + rd
        high = max(a, b, c, d)  # the softmax, written out: this runs for every mention
        a, b, c, d = exp(a - high), exp(b - high), exp(c - high), exp(d - high)
        total = a + b + c + d
        p = (a / total, b / total, c / total, d / total)
        best = 0
        for i in (1, 2, 3):
            if p[i] > p[best]:
                best = i
        second = 1 if best == 0 else 0
        for i in (1, 2, 3):
            if i != best and p[i] > p[second]:
                second = i
        top, runner_up = p[best], p[second]
        category = CLASSES[best]
        summary = "model: %s %.2f, then %s %.2f" % (  # noqa: UP031 — the fastest formatting
            _KEYS[best],
            top,
            _KEYS[second],
            runner_up,
        )
        reasons = [summary, *self._rules.reasons(fired, category)] if fired.found else [summary]
        unsure = top < self._threshold or top - runner_up < self._margin
        if unsure:
            why = "below the threshold" if top < self._threshold else "too close to call"
            if category is not self._fallback:
                why += f", sent to {self._fallback.value}"
                category = self._fallback
            reasons.insert(0, TRIAGE_PREFIX + why)
        return Verdict(
            category=category,
            confidence=top,
            reasons=tuple(reasons),
            scores=dict(zip(_KEYS, p, strict=True)),
            needs_triage=unsure,
        )
