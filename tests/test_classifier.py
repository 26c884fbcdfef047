"""Tests for the rules engine (bot/classifier.py) and the shipped config/rules.yaml."""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.classifier import Classifier, RulesClassifier, RulesFile, RuleSpec
from bot.domain import Category, Verdict

RULES_YAML = Path(__file__).resolve().parents[1] / "config" / "rules.yaml"


def make(rules: list[dict[str, Any]], **extra: Any) -> RulesClassifier:
    return RulesClassifier(RulesFile.model_validate({"rules": rules, **extra}))


# A small rule set with one rule of each kind, used by most tests below.
SMALL: list[dict[str, Any]] = [
    {
        "name": "broken-product",
        "keywords": ["not working", "doesn't work", "broken"],
        "weights": {"complaint": 2.0},
    },
    {"name": "refund", "phrases": ["refund"], "weights": {"complaint": 1.5}},
    {"name": "question-mark", "regex": r"\?", "weights": {"question": 1.0}},
    {"name": "how-do-i", "keywords": ["how do i", "how can i"], "weights": {"question": 1.0}},
    {"name": "thanks", "keywords": ["thanks", "thank you"], "weights": {"praise": 1.0}},
    {"name": "love", "keywords": ["love", "amazing"], "weights": {"praise": 1.5}},
    {"name": "hearts", "emoji": ["😍", "❤️"], "weights": {"praise": 1.5}},
    {"name": "spam", "keywords": ["check out my channel"], "weights": {"other": 3.0}},
]


@pytest.fixture
def small() -> RulesClassifier:
    return make(SMALL)


@pytest.fixture(scope="module")
def shipped_rules() -> RulesFile:
    with RULES_YAML.open(encoding="utf-8") as f:
        return RulesFile.model_validate(yaml.safe_load(f))


@pytest.fixture(scope="module")
def shipped(shipped_rules: RulesFile) -> RulesClassifier:
    return RulesClassifier(shipped_rules)


def fired(verdict: Verdict) -> set[str]:
    """Names of the rules that fired, read back from the reasons."""
    return {m.group(1) for r in verdict.reasons if (m := re.match(r"rule '([^']+)'", r))}


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("My kettle is broken, second one this month", Category.COMPLAINT),
        ("How do I reset my password", Category.QUESTION),
        ("Thanks, the new app is amazing", Category.PRAISE),
        ("check out my channel for daily vlogs", Category.OTHER),
    ],
)
def test_clear_examples(small: RulesClassifier, text: str, category: Category) -> None:
    verdict = small.classify(text)
    assert verdict.category is category
    assert 0.0 < verdict.confidence <= 1.0


def test_satisfies_the_classifier_protocol(small: RulesClassifier) -> None:
    classifier: Classifier = small
    assert isinstance(classifier.classify("broken"), Verdict)


def test_complaint_phrased_as_question_is_complaint(small: RulesClassifier) -> None:
    # complaint 2.0 against question 1.0 + 1.0: a tie, and complaint wins ties.
    verdict = small.classify("How do I get this fixed, it's broken?")
    assert verdict.scores["complaint"] == verdict.scores["question"] == 2.0
    assert verdict.category is Category.COMPLAINT
    assert verdict.confidence == 0.0  # a tie broken by the fixed order is a coin toss


def test_tie_order_is_complaint_question_praise_other() -> None:
    clf = make(
        [
            {"name": "q", "keywords": ["hello"], "weights": {"question": 1.0}},
            {"name": "p", "keywords": ["hello"], "weights": {"praise": 1.0}},
            {"name": "o", "keywords": ["hello"], "weights": {"other": 1.0}},
        ]
    )
    assert clf.classify("hello").category is Category.QUESTION


def test_nothing_matched_is_other_with_a_reason(small: RulesClassifier) -> None:
    verdict = small.classify("the weather is nice today")
    assert verdict.category is Category.OTHER
    assert verdict.reasons == ("no rule matched",)
    assert verdict.confidence == 0.5
    assert verdict.scores == {"complaint": 0.0, "question": 0.0, "praise": 0.0, "other": 0.0}


def test_empty_text_matches_nothing(small: RulesClassifier) -> None:
    assert small.classify("   ").reasons == ("no rule matched",)


def test_below_min_score_is_other_with_lower_confidence() -> None:
    clf = make([{"name": "weak", "regex": r"\?", "weights": {"question": 0.5}}])
    verdict = clf.classify("hm?")
    assert verdict.category is Category.OTHER
    assert verdict.scores["question"] == 0.5
    assert verdict.confidence == pytest.approx(0.25)  # 0.5 * (1 - 0.5 / 1.0)
    assert verdict.reasons == ("rule 'weak': '?' → question +0.5",)


def test_min_score_is_configurable() -> None:
    rules = [{"name": "thanks", "keywords": ["thanks"], "weights": {"praise": 1.0}}]
    assert make(rules).classify("thanks").category is Category.PRAISE
    assert make(rules, min_score=1.5).classify("thanks").category is Category.OTHER


def test_scores_hold_every_category(small: RulesClassifier) -> None:
    verdict = small.classify("love it, but the lid is broken")
    assert verdict.scores == {"complaint": 2.0, "question": 0.0, "praise": 1.5, "other": 0.0}
    assert verdict.category is Category.COMPLAINT


def test_each_rule_fires_once(small: RulesClassifier) -> None:
    verdict = small.classify("broken, broken, BROKEN and not working")
    assert verdict.scores["complaint"] == 2.0
    assert verdict.reasons == ("rule 'broken-product': 'broken' → complaint +2.0",)


# ---------------------------------------------------------------------------- reasons


def test_reasons_name_the_rule_and_the_matched_text(small: RulesClassifier) -> None:
    verdict = small.classify("The scanner is NOT WORKING again")
    assert verdict.reasons == ("rule 'broken-product': 'not working' → complaint +2.0",)


def test_reasons_show_the_first_match_in_the_text(small: RulesClassifier) -> None:
    verdict = small.classify("not working and broken")
    assert verdict.reasons == ("rule 'broken-product': 'not working' → complaint +2.0",)
    verdict = small.classify("broken and not working")
    assert verdict.reasons == ("rule 'broken-product': 'broken' → complaint +2.0",)
    verdict = small.classify("Amazing, love it")
    assert verdict.reasons == ("rule 'love': 'amazing' → praise +1.5",)


def test_reasons_are_ordered_by_contribution_to_the_winner(small: RulesClassifier) -> None:
    verdict = small.classify("How do I get a refund? It is broken.")
    assert verdict.category is Category.COMPLAINT
    assert verdict.reasons == (
        "rule 'broken-product': 'broken' → complaint +2.0",
        "rule 'refund': 'refund' → complaint +1.5",
        "rule 'question-mark': '?' → question +1.0",
        "rule 'how-do-i': 'how do i' → question +1.0",
    )


def test_reasons_list_every_weight_of_a_rule_winner_first() -> None:
    clf = make(
        [
            {"name": "thanks", "keywords": ["thanks"], "weights": {"praise": 1.0}},
            {
                "name": "sarcasm",
                "keywords": ["thanks for nothing"],
                "weights": {"praise": -1.5, "complaint": 2.0},
            },
        ]
    )
    verdict = clf.classify("Thanks for nothing")
    assert verdict.category is Category.COMPLAINT
    assert verdict.reasons == (
        "rule 'sarcasm': 'thanks for nothing' → complaint +2.0, praise -1.5",
        "rule 'thanks': 'thanks' → praise +1.0",
    )


def test_regex_reasons_keep_the_original_case_and_long_matches_are_shortened() -> None:
    clf = make([{"name": "shouting", "regex": r"(?-i:[A-Z ]{50,})", "weights": {"complaint": 1}}])
    verdict = clf.classify("WHY IS NOBODY ANSWERING THE PHONE AT YOUR HEAD OFFICE")
    (reason,) = verdict.reasons
    assert reason.startswith("rule 'shouting': 'WHY IS NOBODY ANSWERING THE")
    assert "…' → complaint +1.0" in reason
    assert clf.classify("why is nobody answering the phone at your head office").reasons == (
        "no rule matched",
    )


# ------------------------------------------------------------------------- confidence


def test_confidence_grows_with_agreeing_evidence() -> None:
    clf = make(
        [
            {"name": "a", "keywords": ["broken"], "weights": {"complaint": 1.0}},
            {"name": "b", "keywords": ["refund"], "weights": {"complaint": 2.0}},
            {"name": "c", "keywords": ["worst"], "weights": {"complaint": 2.0}},
            {"name": "d", "keywords": ["thanks"], "weights": {"praise": 1.0}},
        ]
    )
    weak = clf.classify("broken").confidence
    strong = clf.classify("worst ever, broken, I want a refund").confidence
    contested = clf.classify("broken, thanks").confidence
    assert weak == pytest.approx(1 - math.exp(-0.5))  # one rule at min_score: about 0.39
    assert strong == pytest.approx(1 - math.exp(-2.5))  # 5.0 against nothing: about 0.92
    assert contested == 0.0
    assert contested < weak < 0.5 < strong <= 1.0


# ---------------------------------------------------------------------- rule changes


def test_adding_a_rule_changes_the_verdict() -> None:
    before = make(SMALL).classify("My order arrived damaged")
    assert before.category is Category.OTHER
    damaged = {"name": "damaged", "keywords": ["damaged"], "weights": {"complaint": 1.5}}
    after = make([*SMALL, damaged]).classify("My order arrived damaged")
    assert after.category is Category.COMPLAINT
    assert after.reasons == ("rule 'damaged': 'damaged' → complaint +1.5",)


def test_negative_weights_argue_against_a_category() -> None:
    rules: list[dict[str, Any]] = [
        {"name": "great", "keywords": ["great"], "weights": {"praise": 1.5}},
        {"name": "late", "keywords": ["late"], "weights": {"complaint": 1.0}},
    ]
    text = "Great, late again"
    assert make(rules).classify(text).category is Category.PRAISE
    sarcasm = {
        "name": "sarcasm",
        "regex": r"\bgreat\b\W+(?:\w+\W+){0,2}late\b",
        "weights": {"praise": -1.5, "complaint": 0.5},
    }
    verdict = make([*rules, sarcasm]).classify(text)
    assert verdict.category is Category.COMPLAINT
    assert verdict.scores["praise"] == 0.0
    assert verdict.reasons[-1] == "rule 'great': 'great' → praise +1.5"


def test_only_negative_scores_are_other() -> None:
    clf = make([{"name": "not-praise", "keywords": ["meh"], "weights": {"praise": -1.0}}])
    verdict = clf.classify("meh")
    assert verdict.category is Category.OTHER
    assert verdict.scores["praise"] == -1.0
    assert verdict.confidence == 0.5


# --------------------------------------------------------------------------- matchers


def test_keywords_match_whole_words_only(small: RulesClassifier) -> None:
    assert small.classify("Happy thanksgiving!").reasons == ("no rule matched",)
    assert small.classify("thanks!").category is Category.PRAISE
    assert small.classify("(Thanks)").category is Category.PRAISE


def test_a_wildcard_keyword_matches_the_rest_of_a_word() -> None:
    clf = make([{"name": "thank", "keywords": ["thank*"], "weights": {"praise": 1.0}}])
    assert clf.classify("Happy Thanksgiving").reasons == (
        "rule 'thank': 'thanksgiving' → praise +1.0",
    )
    assert clf.classify("so thankful").category is Category.PRAISE
    assert clf.classify("unthankful").reasons == ("no rule matched",)


def test_a_leading_wildcard_keyword() -> None:
    clf = make([{"name": "less", "keywords": ["*less"], "weights": {"complaint": 1.0}}])
    assert clf.classify("totally useless").reasons == ("rule 'less': 'useless' → complaint +1.0",)
    assert clf.classify("less is more").category is Category.COMPLAINT
    assert clf.classify("lessons learned").category is Category.OTHER


def test_multi_word_keywords_match_across_any_whitespace(small: RulesClassifier) -> None:
    verdict = small.classify("It is not\n\t  working")
    assert verdict.reasons == ("rule 'broken-product': 'not working' → complaint +2.0",)
    assert small.classify("nothing working").category is Category.OTHER


@pytest.mark.parametrize("apostrophe", ["'", "\u2019", "\u2018", "\u02bc", "\u2032", "\u00b4"])
def test_apostrophes_are_normalised(small: RulesClassifier, apostrophe: str) -> None:
    verdict = small.classify(f"The charger doesn{apostrophe}t work")
    assert verdict.reasons == ("rule 'broken-product': 'doesn't work' → complaint +2.0",)


def test_keywords_with_a_curly_apostrophe_match_straight_ones() -> None:
    clf = make([{"name": "cant", "keywords": ["can\u2019t log in"], "weights": {"complaint": 2}}])
    assert clf.classify("I can't log in").category is Category.COMPLAINT


def test_phrases_match_inside_words_and_normalise_whitespace() -> None:
    clf = make([{"name": "refund", "phrases": ["REFUND  me"], "weights": {"complaint": 1.0}}])
    assert clf.classify("please refund\nme now").reasons == (
        "rule 'refund': 'refund me' → complaint +1.0",
    )
    assert clf.classify("nonrefundable items").category is Category.OTHER
    clf = make([{"name": "refund", "phrases": ["refund"], "weights": {"complaint": 1.0}}])
    assert clf.classify("Still not refunded").category is Category.COMPLAINT


def test_emoji_matcher(small: RulesClassifier) -> None:
    assert small.classify("new look 😍").reasons == ("rule 'hearts': '😍' → praise +1.5",)
    # The heart is configured with its variation selector; it matches with or without.
    assert small.classify("❤ it").category is Category.PRAISE
    assert small.classify("❤\ufe0f it").category is Category.PRAISE


def test_emoji_with_a_skin_tone_matches() -> None:
    clf = make([{"name": "thumbs-down", "emoji": ["👎"], "weights": {"complaint": 1.5}}])
    assert clf.classify("the update 👎🏽").category is Category.COMPLAINT
    assert clf.classify("the update 👍").category is Category.OTHER


def test_regex_is_case_insensitive() -> None:
    clf = make([{"name": "order", "regex": r"\border #?\d{4,}", "weights": {"question": 1.0}}])
    assert clf.classify("Status of ORDER #12345").reasons == (
        "rule 'order': 'ORDER #12345' → question +1.0",
    )


def test_regex_rules_work_on_text_with_and_without_non_ascii() -> None:
    clf = make([{"name": "late", "regex": r"\blate again\b", "weights": {"complaint": 1.0}}])
    assert clf.classify("LATE again").category is Category.COMPLAINT
    assert clf.classify("Late again 😡").category is Category.COMPLAINT
    assert clf.classify("Café late again").category is Category.COMPLAINT
    assert clf.classify("not late").category is Category.OTHER


# ------------------------------------------------------------------------- validation


def spec_errors(data: dict[str, Any]) -> list[Any]:
    with pytest.raises(ValidationError) as exc_info:
        RulesFile.model_validate(data)
    return list(exc_info.value.errors())


def test_invalid_regex_is_reported_on_the_regex_key() -> None:
    rule = {"name": "bad", "regex": "abc[def", "weights": {"complaint": 1.0}}
    (error,) = spec_errors({"rules": [rule]})
    assert error["loc"] == ("rules", 0, "regex")
    assert error["msg"] == "Value error, invalid regex: unterminated character set at position 3"


def test_regex_that_matches_everything_is_rejected() -> None:
    (error,) = spec_errors({"rules": [{"name": "x", "regex": "a*", "weights": {"other": 1}}]})
    assert error["loc"] == ("rules", 0, "regex")
    assert "matches the empty string" in error["msg"]


def test_two_matchers_on_one_rule() -> None:
    ok = {"name": "ok", "phrases": ["c"], "weights": {"other": 1.0}}
    rule = {"name": "x", "keywords": ["a"], "regex": "b", "weights": {"other": 1.0}}
    (error,) = spec_errors({"rules": [ok, rule]})
    assert error["loc"] == ("rules", 1)
    assert "exactly one matcher" in error["msg"]
    assert "found keywords, regex" in error["msg"]


def test_no_matcher() -> None:
    (error,) = spec_errors({"rules": [{"name": "x", "weights": {"other": 1.0}}]})
    assert error["loc"] == ("rules", 0)
    assert "exactly one matcher" in error["msg"]
    assert "found none" in error["msg"]


def test_duplicate_rule_names() -> None:
    rule = {"name": "thanks", "keywords": ["thanks"], "weights": {"praise": 1.0}}
    (error,) = spec_errors({"rules": [rule, {**rule, "keywords": ["cheers"]}]})
    assert error["loc"] == ("rules",)
    assert "duplicate rule name 'thanks'" in error["msg"]


def test_unknown_keys_are_errors() -> None:
    rule = {"name": "x", "keyword": ["typo"], "weights": {"praise": 1.0}}
    errors = spec_errors({"rules": [rule]})
    assert {"type": "extra_forbidden", "loc": ("rules", 0, "keyword")} in [
        {"type": e["type"], "loc": e["loc"]} for e in errors
    ]
    (error,) = spec_errors({"min_scor": 2, "rules": []})
    assert (error["type"], error["loc"]) == ("extra_forbidden", ("min_scor",))


@pytest.mark.parametrize(
    ("rule", "loc", "message"),
    [
        ({"name": " ", "keywords": ["a"]}, ("name",), "rule name must not be empty"),
        ({"name": "x", "keywords": []}, ("keywords",), "keywords must list at least one"),
        ({"name": "x", "keywords": ["ok", " "]}, ("keywords",), "keywords[1] is empty"),
        ({"name": "x", "keywords": ["a*b"]}, ("keywords",), "'*' is allowed only at"),
        ({"name": "x", "keywords": ["*"]}, ("keywords",), "nothing but wildcards"),
        ({"name": "x", "phrases": []}, ("phrases",), "phrases must list at least one"),
        ({"name": "x", "emoji": [":("]}, ("emoji",), "use phrases for emoticons"),
        ({"name": "x", "emoji": ["😀 😁"]}, ("emoji",), "list each emoji apart"),
        ({"name": "x", "keywords": ["a"], "weights": {}}, (), "needs weights, force, or both"),
        ({"name": "x", "keywords": ["a"], "weights": {"praise": 0}}, ("weights",), "all zero"),
        (
            {"name": "x", "keywords": ["a"], "weights": {"praise": math.inf}},
            ("weights",),
            "finite",
        ),
    ],
)
def test_rule_field_errors(rule: dict[str, Any], loc: tuple[str, ...], message: str) -> None:
    rule = {"weights": {"complaint": 1.0}, **rule}
    errors = spec_errors({"rules": [rule]})
    assert [e["loc"] for e in errors] == [("rules", 0, *loc)]
    assert message in errors[0]["msg"]


def test_unknown_category_in_weights() -> None:
    rule = {"name": "x", "keywords": ["a"], "weights": {"compliant": 1.0}}
    (error,) = spec_errors({"rules": [rule]})
    assert error["loc"] == ("rules", 0, "weights", "compliant", "[key]")


def test_min_score_must_be_positive() -> None:
    (error,) = spec_errors({"min_score": 0, "rules": []})
    assert error["loc"] == ("min_score",)
    assert "greater than 0" in error["msg"]


def test_models_are_frozen() -> None:
    spec = RuleSpec.model_validate({"name": "x", "phrases": ["a"], "weights": {"other": 1}})
    with pytest.raises(ValidationError):
        spec.name = "y"  # type: ignore[misc]


def test_empty_rule_list_classifies_everything_as_other() -> None:
    assert make([]).classify("broken!").reasons == ("no rule matched",)


# ------------------------------------------------------------------- shipped rules


def test_shipped_rules_load(shipped_rules: RulesFile) -> None:
    assert shipped_rules.min_score == 1.0
    assert len(shipped_rules.rules) >= 30
    assert all(rule.description for rule in shipped_rules.rules)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # complaints
        ("@AcmeCare my new blender stopped working after two days", Category.COMPLAINT),
        ("Been on hold for 45 minutes, this is ridiculous", Category.COMPLAINT),
        ("@AcmeShop you charged me twice for the same order", Category.COMPLAINT),
        ("Delivery was cancelled again and nobody told me 😡", Category.COMPLAINT),
        ("The app doesn\u2019t work since the last update", Category.COMPLAINT),
        ("Worst customer service I have ever had. Never again.", Category.COMPLAINT),
        # complaints phrased as questions
        ("@AcmeBank why was I charged twice?", Category.COMPLAINT),
        ("where is my order?? been 3 weeks", Category.COMPLAINT),
        ("Why is my internet down AGAIN?", Category.COMPLAINT),
        # sarcasm
        ("great, late again", Category.COMPLAINT),
        ("Thanks for nothing @AcmeAir", Category.COMPLAINT),
        ("Love waiting on hold all afternoon", Category.COMPLAINT),
        # questions
        ("@AcmeCare how do I change the email on my account?", Category.QUESTION),
        ("Does anyone know when the Leeds store reopens?", Category.QUESTION),
        ("is the shop open on sunday", Category.QUESTION),
        ("@AcmeShop do you ship to Canada?", Category.QUESTION),
        ("Any update on the new colours?", Category.QUESTION),
        # praise
        ("Thank you so much @AcmeCare, the team was amazing 😍", Category.PRAISE),
        ("Shout out to Priya at the Camden store, great service!", Category.PRAISE),
        ("Love my new headphones ❤️", Category.PRAISE),
        ("Thanks for sorting out my refund so quickly!", Category.PRAISE),
        ("kudos to the delivery guy 👏", Category.PRAISE),
        # other
        ("check out my channel and subscribe for daily unboxings", Category.OTHER),
        ("FREE FOLLOWERS!!! dm for promo, link in bio", Category.OTHER),
        ("Earn bitcoin from home, click the link", Category.OTHER),
        ("https://example.com/deal", Category.OTHER),
        (
            "Love it!! check out my page https://spam.example/a https://spam.example/b",
            Category.OTHER,
        ),
        ("RT @someone: new phones are out today", Category.OTHER),
        ("Happy Thanksgiving everyone", Category.OTHER),
        ("lol same", Category.OTHER),
    ],
)
def test_shipped_rules_classify_hand_written_examples(
    shipped: RulesClassifier, text: str, category: Category
) -> None:
    verdict = shipped.classify(text)
    assert verdict.category is category, verdict.reasons


def test_shipped_rules_explain_themselves(shipped: RulesClassifier) -> None:
    verdict = shipped.classify("My parcel never arrived and nobody answers the phone")
    assert verdict.category is Category.COMPLAINT
    assert set(verdict.reasons) == {
        "rule 'order-problem': 'never arrived' → complaint +2.0",
        "rule 'no-response': 'nobody answers' → complaint +2.0",
    }


# ------------------------------------------------- the fast paths agree with a naive engine

_APOSTROPHES = str.maketrans(
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u2032": "'", "\u00b4": "'"}
)


def _plain(text: str) -> str:
    text = text.translate(_APOSTROPHES).replace("\ufe0f", "").replace("\ufe0e", "")
    text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


class NaiveEngine:
    """Which rules fire, by trying every term of every rule the obvious way."""

    def __init__(self, rules: RulesFile) -> None:
        # Each rule becomes (name, regex, case-fold the text first?, literal terms).
        self.rules: list[tuple[str, re.Pattern[str] | None, bool, list[str]]] = []
        for rule in rules.rules:
            if rule.keywords is not None:
                body = "|".join(
                    (r"\w*" if k.startswith("*") else "")
                    + re.escape(_plain(k).strip("*"))
                    + (r"\w*" if k.endswith("*") else "")
                    for k in rule.keywords
                )
                pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)
                self.rules.append((rule.name, pattern, False, []))
            elif rule.phrases is not None:
                self.rules.append(
                    (rule.name, None, True, [_plain(p).lower() for p in rule.phrases])
                )
            elif rule.emoji is not None:
                self.rules.append((rule.name, None, False, [_plain(e) for e in rule.emoji]))
            else:
                assert rule.regex is not None
                self.rules.append((rule.name, re.compile(rule.regex, re.IGNORECASE), False, []))

    def fired(self, text: str) -> set[str]:
        norm = _plain(text)
        out: set[str] = set()
        for name, pattern, fold, terms in self.rules:
            if pattern is not None:
                hit = pattern.search(norm) is not None
            else:
                haystack = norm.lower() if fold else norm
                hit = any(term in haystack for term in terms)
            if hit:
                out.add(name)
        return out


@pytest.fixture(scope="module")
def naive(shipped_rules: RulesFile) -> NaiveEngine:
    return NaiveEngine(shipped_rules)


def _vocabulary() -> list[str]:
    with RULES_YAML.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    words: list[str] = []
    for rule in data["rules"]:
        for key in ("keywords", "phrases", "emoji"):
            words.extend(rule.get(key) or [])
    words += ["my", "order", "3", "weeks", "http://x.io/a", "@brand", "#fail", "rt", "???"]
    return sorted(set(words))


_texts = st.lists(
    st.one_of(
        st.sampled_from(_vocabulary()),
        st.text(
            alphabet="abcdefghijklmnopqrstuvwxyz'\u2019?!.,:;()#@ 0123456789😀❤\ufe0f"
            "\uff57\uff21_-\u00b4",
            max_size=6,
        ),
    ),
    max_size=12,
).flatmap(
    lambda parts: st.sampled_from([" ", "", ", ", "\n", "! "]).flatmap(
        lambda sep: st.sampled_from([str.lower, str.upper, str.title, str.capitalize]).map(
            lambda case: case(sep.join(parts))
        )
    )
)


@settings(max_examples=300, deadline=None)
@given(text=_texts)
def test_shipped_rules_fire_exactly_as_a_naive_engine_says(
    naive: NaiveEngine, shipped: RulesClassifier, text: str
) -> None:
    verdict = shipped.classify(text)
    expected = naive.fired(text)
    assert fired(verdict) == expected
    if not expected:
        assert verdict.reasons == ("no rule matched",)
    assert 0.0 <= verdict.confidence <= 1.0


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?x) \b(?:foo|bar\ baz)\b",
        r"(?:ab)+c|de?f",
        r"x(?:yz|)w",
        r"(?i:HELLO)\s+(world)",
        r"(?-i:Shout)",
        r"(?=.*refund)(?=.*late)",
        r"(a)(?(1)b|c)d",
        r"[\u017f]tay",
        r"\x41BC",
        r"\bORDER\b",
        r"[A-Z]{2}\d",
        r"[^a-z ]+x",
        r"(?:hello|wor[l-z]d)\W+\w",
    ],
)
@settings(max_examples=60, deadline=None)
@given(
    text=st.text(
        alphabet="abcdefwxyzABCDEFWXYZ HELLOWORLDSHOUTrefundlate \u017f\u017ftay\u212a",
        max_size=30,
    )
)
def test_regex_prefilters_never_hide_a_match(pattern: str, text: str) -> None:
    rules = RulesFile.model_validate(
        {"rules": [{"name": "r", "regex": pattern, "weights": {"complaint": 1.0}}]}
    )
    assert fired(RulesClassifier(rules).classify(text)) == NaiveEngine(rules).fired(text)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (r"(?:ab)+c|de?f", "xx df xx"),
        (r"x(?:yz|)w", "a xw b"),
        (r"(?-i:Shout)", "please Shout"),
        (r"(a)(?(1)b|c)d", "abd"),
        (r"[\u017f]tay", "STAY"),
        (r"\x41BC", "xabcx"),
        (r"colou?r", "color"),
        (r"(?:very\s)*good", "so good"),
        (r"\bORDER\b", "my order"),
        (r"[A-Z]{2}\d{3}", "ref ab123"),
        (r"[^a-z ]x", "yes 9X"),
        (r"(?i:Refund)", "REFUND"),
    ],
)
def test_regex_rules_fire_however_they_are_written(pattern: str, text: str) -> None:
    clf = make([{"name": "r", "regex": pattern, "weights": {"complaint": 1.0}}])
    assert clf.classify(text).category is Category.COMPLAINT


def test_full_width_and_styled_letters_match_like_plain_ones() -> None:
    classifier = make([{"name": "spam", "phrases": ["www.", "free"], "weights": {"other": 2.0}}])
    full_width = "\uff48\uff54\uff54\uff50://\uff57\uff57\uff57.example.com"
    bold = "\U0001d41f\U0001d42b\U0001d41e\U0001d41e"  # "free" in mathematical bold
    verdict = classifier.classify(f"{full_width} {bold} stuff")
    assert verdict.category is Category.OTHER
    assert fired(verdict) == {"spam"}


@pytest.mark.parametrize(
    ("keyword", "text", "fires"),
    [
        ("not working", "it is not working!", True),
        ("not working", "it is not workingg", False),
        ("not working", "snot working", False),
        ("not working", "x_not working", False),
        ("isn't working", "it isn't working", True),
        ("really?", "really? ok", True),
        ("really?", "really?ok", False),  # the boundary applies after punctuation too
        ("come on", "come on", True),
        ("come on", "come, on", False),
    ],
)
def test_multi_word_keywords_need_word_boundaries(keyword: str, text: str, fires: bool) -> None:
    rules = RulesFile.model_validate(
        {"rules": [{"name": "k", "keywords": [keyword], "weights": {"complaint": 1.0}}]}
    )
    assert bool(fired(RulesClassifier(rules).classify(text))) is fires
    assert bool(NaiveEngine(rules).fired(text)) is fires
