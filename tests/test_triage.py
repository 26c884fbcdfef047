"""The classifier carebot runs (rules + learned model) and the operator's tuning commands.

Every command is driven through ``bot.cli.main`` as an operator would type it, against a
copy of the shipped config.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.classifier import RulesFile
from bot.cli import main
from bot.config import load_config
from bot.domain import TRIAGE_PREFIX, Category, Mention, Platform
from bot.errors import ConfigError
from bot.evaluation import read_labelled, score
from bot.model import LinearModel, ModelError, features, tokens
from bot.staff import render_card
from bot.training import base_examples, builtin_model_path, train
from bot.triage import TriageClassifier
from handlers import HandlerContext, plan_for
from tests.conftest import ConfigDir

REPO = Path(__file__).resolve().parents[1]
HELDOUT = REPO / "bench" / "data" / "heldout.csv"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args, environ={})
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add_rule(cfg: ConfigDir, rule: dict[str, Any], **classifier: Any) -> None:
    data = cfg.read("rules.yaml")
    data["rules"] = [*data.get("rules", []), rule]
    if classifier:
        data["classifier"] = {**data.get("classifier", {}), **classifier}
    cfg.write("rules.yaml", data)


def classifier_for(cfg: ConfigDir) -> TriageClassifier:
    config = load_config(cfg.path, {})
    return TriageClassifier(config.rules, config.model)


# --------------------------------------------------------------------- the shipped parts


def test_the_builtin_examples_are_varied_and_kept_apart_from_the_heldout_set() -> None:
    examples = base_examples()
    counts = Counter(e.label for e in examples)
    assert min(counts.values()) >= 150, counts
    assert set(counts) == set(Category)
    texts = [e.text.casefold() for e in examples]
    assert len(set(texts)) == len(texts)  # no example twice
    heldout = {e.text.casefold() for e in read_labelled(HELDOUT)}
    assert not heldout & set(texts)  # the benchmark's held-out examples are never trained on


def test_the_builtin_model_is_trained_from_the_shipped_examples_only() -> None:
    shipped = json.loads(builtin_model_path().read_text(encoding="utf-8"))
    again = train(base_examples())
    assert shipped["info"]["examples_digest"] == again["info"]["examples_digest"]
    assert shipped["vocabulary"] == again["vocabulary"]  # deterministic: same features
    np.testing.assert_allclose(shipped["idf"], again["idf"], atol=1e-6)
    np.testing.assert_allclose(shipped["coef"], again["coef"], atol=1e-5)
    np.testing.assert_allclose(shipped["intercept"], again["intercept"], atol=1e-5)


def test_fast_scoring_matches_scikit_learn() -> None:
    """LinearModel.logits's per-token arithmetic equals a plain logistic regression.

    The vectors are built the obvious way: count * idf, scaled to 1 / sqrt(sum count * idf**2).
    """
    from sklearn.linear_model import LogisticRegression

    examples = base_examples()[::6]  # a smaller model is enough to compare the arithmetic
    data = train(examples)
    vocabulary = data["vocabulary"]
    index = {feature: i for i, feature in enumerate(vocabulary)}
    idf = np.asarray(data["idf"])

    def vector(text: str) -> Any:
        out = np.zeros(len(vocabulary))
        squared = 0.0
        for feature, count in Counter(features(text)).items():
            if feature in index:
                i = index[feature]
                out[i] = count * idf[i]
                squared += count * idf[i] ** 2
        return out / np.sqrt(squared) if squared else out

    labels = [e.label.value for e in examples]
    reference = LogisticRegression(C=8.0, max_iter=5000).fit(
        np.array([vector(e.text) for e in examples]), labels
    )
    ours = LinearModel(data, "test")
    probe = [e.text for e in read_labelled(HELDOUT)] + ["", "🙂", "!!!", "a", "no no no good good"]
    expected = reference.predict_proba(np.array([vector(t) for t in probe]))
    order = [list(reference.classes_).index(c.value) for c in ours.classes]
    for text, want in zip(probe, expected, strict=True):
        got = ours.probabilities(ours.logits(text))
        np.testing.assert_allclose(got, want[order], atol=1e-4, err_msg=text)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("@acme my parcel never arrived and nobody answers the phone", Category.COMPLAINT),
        ("@acme why have I been charged twice this month??", Category.COMPLAINT),
        ("@acme do you ship to Norway?", Category.QUESTION),
        ("@acme what time does the Leeds store open on Sunday", Category.QUESTION),
        ("@acme the new app is brilliant, thank you!", Category.PRAISE),
        ("shoutout to Maria at the Bristol store, so helpful 🙌", Category.PRAISE),
        ("Check out my channel!!! subscribe plz http://bit.ly/xx", Category.OTHER),
        ("Amazing video 😍 visit www.free-beats.example for free beats", Category.OTHER),
        ("BREAKING: parliament passes the budget vote", Category.OTHER),
    ],
)
def test_the_shipped_classifier_on_clear_mentions(
    config_copy: ConfigDir, text: str, category: Category
) -> None:
    verdict = classifier_for(config_copy).classify(text)
    assert verdict.category is category, verdict


# --------------------------------------------------------------------- rules with a model


def test_a_rule_added_in_rules_yaml_changes_the_verdict_and_explain_names_it(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "Our zorblax arrived today, trying it tonight"
    args = ["classify", "--config", str(config_copy.path), "--explain", text]
    code, before, _ = run_cli(args, capsys)
    assert code == 0
    assert not before.startswith("complaint ")
    add_rule(
        config_copy,
        {"name": "zorblax-recall", "keywords": ["zorblax"], "weights": {"complaint": 6.0}},
    )
    code, after, _ = run_cli(args, capsys)
    assert code == 0
    assert after.startswith("complaint (confidence ")
    assert "rule weights added: complaint +6.00" in after
    assert "rule 'zorblax-recall': 'zorblax' → complaint +6.0" in after
    assert "strongest model features for (+) and against (-) complaint:" in after


def test_a_forcing_rule_decides_on_its_own(config_copy: ConfigDir) -> None:
    add_rule(config_copy, {"name": "press", "phrases": ["#press"], "force": "other"})
    verdict = classifier_for(config_copy).classify("@acme my order never came, refund now #press")
    assert verdict.category is Category.OTHER
    assert verdict.confidence == 1.0
    assert verdict.reasons[0] == "rule 'press': '#press' → forces other"


def test_an_unsure_verdict_goes_to_the_fallback_and_is_marked_for_triage(
    config_copy: ConfigDir,
) -> None:
    text = "@acme the new app is brilliant, thank you!"
    config_copy.write("rules.yaml", {**config_copy.read("rules.yaml"), "rules": []})  # model alone
    sure = classifier_for(config_copy).classify(text)
    assert (sure.category, sure.needs_triage) == (Category.PRAISE, False)
    config_copy.update("rules.yaml", classifier={"threshold": 0.9999, "fallback": "complaint"})
    unsure = classifier_for(config_copy).classify(text)
    assert unsure.category is Category.COMPLAINT
    assert unsure.needs_triage
    assert unsure.reasons[0] == TRIAGE_PREFIX + "below the threshold, sent to complaint"
    assert unsure.confidence == sure.confidence  # the model's own confidence is kept


def test_the_margin_catches_a_close_call(config_copy: ConfigDir) -> None:
    config_copy.write(
        "rules.yaml", {"rules": [], "classifier": {"threshold": 0.0, "margin": 0.9999}}
    )
    verdict = classifier_for(config_copy).classify("@acme do you ship to Norway?")
    assert verdict.category is Category.QUESTION  # the default fallback
    assert verdict.needs_triage
    assert verdict.reasons[0] == TRIAGE_PREFIX + "too close to call"


def test_the_staff_card_says_needs_triage() -> None:
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    ticket = {
        "id": 7,
        "category": "question",
        "priority": 3,
        "policy": "standard",
        "customer_handle": "ana",
        "platform": "x",
        "confidence": 0.41,
        "reasons": [TRIAGE_PREFIX + "too close to call", "model: praise 0.41, then other 0.39"],
        "created_at": now,
        "first_response_at": None,
        "state": "open",
        "claimed_by": None,
        "snoozed_until": None,
    }
    card = render_card(ticket, {"text": "hmm <b>ok</b>", "url": None}, now, "CB")
    lines = card.html.splitlines()
    assert lines[1] == "⚠️ <b>Needs triage</b>: too close to call; check the category"
    settled = render_card(
        {**ticket, "reasons": ticket["reasons"][1:]}, {"text": "ok", "url": None}, now, "CB"
    )
    assert "Needs triage" not in settled.html


def test_model_none_keeps_the_rules_alone(config_copy: ConfigDir) -> None:
    config_copy.update("rules.yaml", classifier={"model": "none"})
    config = load_config(config_copy.path, {})
    assert config.model is None
    verdict = TriageClassifier(config.rules, None).classify("@acme hello there")
    assert verdict.category is Category.OTHER
    assert verdict.reasons == ("no rule matched",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the model file"),
        (b"{not json", "not a JSON model file"),
        (b'{"format": "something-else"}', "not a carebot model"),
    ],
)
def test_a_bad_model_file_is_a_config_error_on_its_key(
    config_copy: ConfigDir, content: bytes | None, message: str
) -> None:
    if content is not None:
        (config_copy.path / "mine.json").write_bytes(content)
    config_copy.update("rules.yaml", classifier={"model": "mine.json"})
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy.path, {})
    [problem] = caught.value.problems
    text = str(problem)
    lines = (config_copy.path / "rules.yaml").read_text(encoding="utf-8").splitlines()
    line = next(i for i, s in enumerate(lines, 1) if s.strip().startswith("model: mine.json"))
    assert text.startswith(f"{config_copy.path / 'rules.yaml'}:{line}: classifier.model: ")
    assert message in text


def test_classifier_settings_are_validated(config_copy: ConfigDir) -> None:
    config_copy.update("rules.yaml", classifier={"threshold": 1.5, "fallback": "spam"})
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy.path, {})
    keys = sorted(p.key for p in caught.value.problems)
    assert keys == ["classifier.fallback", "classifier.threshold"]


# --------------------------------------------------------------------- carebot eval


SHORT = {"c": "complaint", "q": "question", "p": "praise", "o": "other"}


def test_eval_arithmetic() -> None:
    # actual:    c c c q q p p o
    # predicted: c c q q c p o o
    actual = [Category(SHORT[x]) for x in ["c", "c", "c", "q", "q", "p", "p", "o"]]
    predicted = [Category(SHORT[x]) for x in ["c", "c", "q", "q", "c", "p", "o", "o"]]
    report = score(actual, predicted)
    c, q, p, o = (report.per_class[k] for k in ("complaint", "question", "praise", "other"))
    assert (c.precision, c.recall) == (2 / 3, 2 / 3)
    assert (q.precision, q.recall) == (1 / 2, 1 / 2)
    assert (p.precision, p.recall) == (1.0, 1 / 2)
    assert (o.precision, o.recall) == (1 / 2, 1.0)
    assert p.f1 == pytest.approx(2 / 3)
    assert o.f1 == pytest.approx(2 / 3)
    assert report.macro_f1 == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 2 / 3) / 4)
    assert report.accuracy == 5 / 8
    assert report.confusion["complaint"] == {
        "complaint": 2,
        "question": 1,
        "praise": 0,
        "other": 0,
    }
    assert report.confusion["question"]["complaint"] == 1


def test_eval_command_on_a_hand_made_file(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rules alone, each word forcing one category, so every prediction is known.
    config_copy.write(
        "rules.yaml",
        {
            "classifier": {"model": "none"},
            "rules": [
                {"name": "c", "keywords": ["broken"], "force": "complaint"},
                {"name": "q", "keywords": ["when"], "force": "question"},
                {"name": "p", "keywords": ["lovely"], "force": "praise"},
            ],
        },
    )
    labelled = tmp_path / "hand.csv"
    rows = [
        ("broken again", "complaint"),  # → complaint ✓
        ("when is it broken", "complaint"),  # → complaint ✓ (complaint rule is first)
        ("when do you open", "complaint"),  # → question ✗
        ("when do you open?", "question"),  # → question ✓
        ("lovely day", "praise"),  # → praise ✓
        ("nice one", "praise"),  # → other ✗
        ("buy followers", "other"),  # → other ✓
    ]
    with labelled.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label", "source"])
        writer.writerows([(t, label, "hand") for t, label in rows])
    code, out, _ = run_cli(
        ["eval", "--config", str(config_copy.path), "--json", str(labelled)], capsys
    )
    assert code == 0
    result = json.loads(out)
    assert result["total"] == 7
    assert result["accuracy"] == round(5 / 7, 4)
    per = result["per_class"]
    assert per["complaint"] == {
        "precision": 1.0,
        "recall": round(2 / 3, 4),
        "f1": 0.8,
        "support": 3,
    }
    assert per["question"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": round(2 / 3, 4),
        "support": 1,
    }
    assert per["praise"] == {"precision": 1.0, "recall": 0.5, "f1": round(2 / 3, 4), "support": 2}
    assert per["other"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 4), "support": 1}
    assert result["macro_f1"] == round((0.8 + 2 / 3 * 3) / 4, 4)
    assert result["confusion"]["complaint"] == {
        "complaint": 2,
        "question": 1,
        "praise": 0,
        "other": 0,
    }
    code, table, _ = run_cli(["eval", "--config", str(config_copy.path), str(labelled)], capsys)
    assert code == 0
    assert "macro" in table
    assert "confusion (rows: actual, columns: predicted)" in table


def test_eval_reports_every_bad_row_with_its_line(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,praise\n,question\nhello,spam\n", encoding="utf-8")
    code, _, err = run_cli(["eval", "--config", str(config_copy.path), str(bad)], capsys)
    assert code == 2
    assert f"{bad}:3: text: empty" in err
    assert f"{bad}:4: label: 'spam' is not one of complaint, question, praise, other" in err
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("words,category\nhi,other\n", encoding="utf-8")
    code, _, err = run_cli(["eval", "--config", str(config_copy.path), str(headerless)], capsys)
    assert code == 2
    assert f"{headerless}:1: the header must name the columns text and label" in err


# --------------------------------------------------------------------- carebot train


def _write_labelled(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


# Made-up words the built-in examples never contain: only training can teach them.
TRAINING = [
    *((f"the quibbit {w} again", "complaint") for w in ("failed", "stalled", "jammed", "froze")),
    *((f"can the flonk {w}", "question") for w in ("ship", "fold", "charge", "float")),
    *((f"the snorvel is {w}", "praise") for w in ("grand", "superb", "lovely", "ace")),
    *((f"zintar {w} promo", "other") for w in ("mega", "ultra", "giga", "hyper")),
]


def test_train_then_classify_round_trip(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = tmp_path / "ours.csv"
    _write_labelled(labelled, TRAINING)
    config_copy.update("rules.yaml", classifier={"model": "models/ours.json"})
    config_copy.write("rules.yaml", {**config_copy.read("rules.yaml"), "rules": []})
    code, out, _ = run_cli(["train", "--config", str(config_copy.path), str(labelled)], capsys)
    assert code == 0
    target = config_copy.path / "models" / "ours.json"
    assert out.startswith(
        f"wrote {target}: 16 examples (complaint 4, question 4, praise 4, other 4)"
    )
    assert "to use it" not in out  # the config already points there
    for text, expected in [
        ("my quibbit jammed", "complaint"),
        ("can the flonk fly", "question"),
        ("snorvel superb", "praise"),
        ("zintar giga", "other"),
    ]:
        code, out, _ = run_cli(["classify", "--config", str(config_copy.path), text], capsys)
        assert code == 0
        assert out.startswith(f"{expected} "), (text, out)
    code, out, _ = run_cli(
        ["classify", "--config", str(config_copy.path), "--explain", "my quibbit jammed"], capsys
    )
    assert f"model: {target}" in out
    features_shown = out.split("strongest model features for (+) and against (-) complaint:\n")[1]
    assert features_shown.splitlines()[0].endswith("word 'quibbit'")  # the word it learned


def test_train_with_base_keeps_the_builtin_knowledge(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = tmp_path / "ours.csv"
    _write_labelled(labelled, TRAINING)
    out_path = config_copy.path / "models" / "with-base.json"
    code, out, _ = run_cli(
        [
            "train",
            "--config",
            str(config_copy.path),
            "--base",
            "--out",
            str(out_path),
            str(labelled),
        ],
        capsys,
    )
    assert code == 0
    data = json.loads(out_path.read_text(encoding="utf-8"))
    assert data["info"]["examples"] == len(base_examples()) + len(TRAINING)
    # The hint names the file as rules.yaml must: relative to the config directory.
    assert f"to use it, set classifier.model: models/with-base.json in {config_copy.path}" in out
    config_copy.update("rules.yaml", classifier={"model": "models/with-base.json"})
    config_copy.write("rules.yaml", {**config_copy.read("rules.yaml"), "rules": []})
    classifier = classifier_for(config_copy)
    assert classifier.classify("the quibbit jammed again").category is Category.COMPLAINT
    assert classifier.classify("@acme do you ship to Norway?").category is Category.QUESTION


def test_train_needs_a_destination_and_valid_data(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = tmp_path / "ours.csv"
    _write_labelled(labelled, TRAINING)
    code, _, err = run_cli(["train", "--config", str(config_copy.path), str(labelled)], capsys)
    assert code == 2
    assert "say where to write the model: --out PATH, or set classifier.model" in err
    one_sided = tmp_path / "one.csv"
    _write_labelled(one_sided, [("a b c", "praise"), ("d e f", "praise")])
    code, _, err = run_cli(
        [
            "train",
            "--config",
            str(config_copy.path),
            "--out",
            str(tmp_path / "m.json"),
            str(one_sided),
        ],
        capsys,
    )
    assert code == 2
    assert "every category needs at least 2 examples" in err
    blocked = tmp_path / "a-directory"
    blocked.mkdir()
    code, _, err = run_cli(
        ["train", "--config", str(config_copy.path), "--out", str(blocked), str(labelled)], capsys
    )
    assert code == 2
    assert f"carebot train: cannot write {blocked}: " in err
    assert not (tmp_path / "a-directory.tmp").exists()  # nothing half-written is left


# --------------------------------------------------------------------- carebot replay


def _mentions_file(path: Path, texts: list[str]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for i, text in enumerate(texts, start=1):
            record = {
                "platform": "x",
                "id": f"m{i}",
                "author": {"id": f"u{i}", "handle": f"user{i}"},
                "text": text,
                "created_at": f"2026-11-20T10:{i:02d}:00Z",
            }
            handle.write(json.dumps(record) + "\n")


REPLAYED = [
    "@acme my parcel never arrived and nobody answers the phone",  # complaint either way
    "@acme the pineapple pizza was lovely, thank you!",  # praise → complaint
    "@acme do you ship to Norway?",  # question either way
    "Check out my channel!!! subscribe plz http://bit.ly/xx",  # other either way
    "@acme is the pineapple one vegan?",  # question → complaint
    "@acme the new app is brilliant, thank you!",  # praise either way
]


def test_replay_against_lists_exactly_the_changed_decisions(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = ConfigDir(tmp_path / "other")
    import shutil

    shutil.copytree(config_copy.path, other.path)
    add_rule(other, {"name": "pineapple-recall", "keywords": ["pineapple"], "force": "complaint"})
    mentions = tmp_path / "mentions.jsonl"
    _mentions_file(mentions, REPLAYED)
    args = [
        "replay",
        "--config",
        str(config_copy.path),
        str(mentions),
        "--against",
        str(other.path),
    ]
    code, out, _ = run_cli([*args, "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    changed = result["changed"]
    assert [c["id"] for c in changed] == ["m2", "m5"]
    assert [c["line"] for c in changed] == [2, 5]
    assert changed[0]["a"]["category"] == "praise"
    assert changed[0]["b"]["category"] == "complaint"
    assert changed[0]["b"]["ack"] == "complaint"
    assert changed[0]["b"]["policy"] == "urgent"
    assert changed[1]["a"]["category"] == "question"
    first, second = result["config"], result["against"]
    assert first["mentions"] == second["mentions"] == 6
    assert first["categories"] == {"complaint": 1, "other": 1, "praise": 2, "question": 2}
    assert second["categories"] == {"complaint": 3, "other": 1, "praise": 1, "question": 1}
    assert first["acks"] == 5  # every mention but the spam
    assert first["actions"] == {"ignored": 1, "ticket": 5}
    code, text, _ = run_cli(args, capsys)
    assert code == 0
    assert "2 decision(s) differ:" in text
    assert "line 2 (m2): @acme the pineapple pizza was lovely, thank you!" in text


def test_replay_simulates_screening_and_the_hourly_ack_cap(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_copy.update(
        "carebot.yaml", screening={"max_acks_per_author_per_hour": 2, "blocked_authors": ["troll"]}
    )
    mentions = tmp_path / "m.jsonl"
    lines = [
        {
            "text": f"@acme my order {n} never arrived",
            "author": {"id": "7", "handle": "ana"},
            "created_at": f"2026-11-20T10:0{n}:00Z",
            "id": str(n),
        }
        for n in range(4)
    ]
    lines.append({"text": "@acme you are useless", "author": {"id": "9", "handle": "troll"}})
    lines.append({"text": "@acme hi", "author": {"id": "8", "handle": "b", "is_bot": True}})
    mentions.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    code, out, _ = run_cli(
        ["replay", "--config", str(config_copy.path), "--json", str(mentions)], capsys
    )
    assert code == 0
    summary = json.loads(out)["config"]
    assert summary["actions"] == {"capped": 2, "screened": 2, "ticket": 2}
    assert summary["acks"] == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", ":2: not JSON"),
        ('{"id": "x"}', ":2: text: missing"),
        ('{"text": "hi", "platform": "myspace"}', ":2: platform: 'myspace' is not one of"),
        ('{"text": "hi", "created_at": "yesterday"}', ":2: created_at: 'yesterday' is not an ISO"),
        ('["text"]', ":2: a JSON object is required"),
    ],
)
def test_replay_names_the_bad_line(
    config_copy: ConfigDir,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    line: str,
    message: str,
) -> None:
    mentions = tmp_path / "m.jsonl"
    mentions.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    code, out, err = run_cli(["replay", "--config", str(config_copy.path), str(mentions)], capsys)
    assert code == 2
    assert f"{mentions}{message}" in err
    assert out == ""


def test_replayed_spam_is_never_acknowledged(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spam = [
        "Check out my channel!!! subscribe plz http://bit.ly/xx",
        "Great video!! please check my channel too, I make covers 🎸",
        "EARN $500 A DAY FROM HOME click here www.easy-cash.example",
        "follow for follow? f4f #followback",
        "sub4sub anyone? I sub back instantly",
    ]
    mentions = tmp_path / "spam.jsonl"
    _mentions_file(mentions, spam)
    code, out, _ = run_cli(
        ["replay", "--config", str(config_copy.path), "--json", str(mentions)], capsys
    )
    assert code == 0
    summary = json.loads(out)["config"]
    assert summary["categories"] == {"other": 5}
    assert summary["acks"] == 0
    assert summary["tickets"] == 0


def test_rules_file_defaults_to_the_builtin_model() -> None:
    assert RulesFile(rules=[]).classifier.model == "builtin"


def test_typographic_apostrophes_reach_the_model_as_plain_ones() -> None:
    for apostrophe in ("\u2019", "\u2018", "\u02bc", "\u2032", "\u00b4"):
        assert tokens(f"it doesn{apostrophe}t work") == ["it", "doesn't", "work"]
    assert tokens("https://t.co/x and https alone") == ["_url_", "and", "https", "alone"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ["other", "praise", "question", "complaint"]}, "in that order"),
        ({"intercept": [0.0, float("nan"), 0.0, 0.0]}, "non-finite numbers"),
        ({"features_version": 0}, "train it again"),
    ],
)
def test_a_model_file_that_would_give_wrong_verdicts_is_refused(
    change: dict[str, Any], message: str
) -> None:
    data = train(base_examples()[::20])
    with pytest.raises(ModelError, match=message):
        LinearModel({**data, **change}, "mine.json")


def test_complaints_are_urgent_only_when_clear(config_copy: ConfigDir) -> None:
    config = load_config(config_copy.path, {})
    classifier = TriageClassifier(config.rules, config.model)
    ctx = HandlerContext(escalation=config.escalation)
    complaints = [e for e in read_labelled(HELDOUT) if e.label is Category.COMPLAINT]
    priorities = Counter()
    for example in complaints:
        verdict = classifier.classify(example.text)
        if verdict.category is Category.COMPLAINT:
            mention = Mention(Platform.X, "1", "2", "ana", example.text, datetime.now(UTC))
            priorities[plan_for(verdict, mention, ctx).priority] += 1
    share = priorities[1] / sum(priorities.values())
    assert 0.03 <= share <= 0.35, priorities  # the clearest few page the leads, not most
    config_copy.update(
        "escalation.yaml",
        routes={"complaint": {"default": "standard", "urgent": "urgent", "urgent_from": 0.5}},
    )
    config = load_config(config_copy.path, {})
    ctx = HandlerContext(escalation=config.escalation)
    sure = classifier.classify("@acme my parcel never arrived and nobody answers the phone")
    mention = Mention(Platform.X, "1", "2", "ana", "x", datetime.now(UTC))
    assert plan_for(sure, mention, ctx).priority == 1
    assert plan_for(sure, mention, ctx).policy == "urgent"


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_replay_links_threads_as_the_service_does(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ana = {"id": "7", "handle": "ana"}
    records = [
        {"id": "m1", "author": ana, "text": "@acme my order never arrived", "our_replies": ["a1"]},
        # Ana answers our acknowledgement, then her own follow-up: one ticket, no new ack.
        {"id": "m2", "author": ana, "text": "@acme still nothing today", "in_reply_to_id": "a1"},
        {"id": "m3", "author": ana, "text": "@acme hello??", "in_reply_to_id": "m2"},
        {"id": "m4", "author": ana, "text": "@acme and the refund?", "thread_id": "m1"},
        # Someone else in Ana's thread is a customer of their own.
        {
            "id": "m5",
            "author": {"id": "8"},
            "text": "@acme mine never came either",
            "thread_id": "m1",
        },
        # Our own post, and an empty one, are stored and replayed like the service did.
        {"id": "m6", "author": {"id": "1"}, "text": "@ana sorry to hear that", "ours": True},
        {"id": "m7", "author": {"id": "9"}, "text": ""},
    ]
    for i, record in enumerate(records):
        record["created_at"] = f"2026-11-20T10:0{i}:00Z"
    mentions = tmp_path / "threads.jsonl"
    _write_jsonl(mentions, records)
    code, out, _ = run_cli(
        ["replay", "--config", str(config_copy.path), "--json", str(mentions)], capsys
    )
    assert code == 0
    summary = json.loads(out)["config"]
    assert summary["actions"] == {"follow-up": 3, "ignored": 1, "screened": 1, "ticket": 2}
    assert summary["tickets"] == 2
    assert summary["acks"] == 2


def test_replay_capped_author_without_a_ticket_gets_one_without_an_ack(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_copy.update("carebot.yaml", screening={"max_acks_per_author_per_hour": 1})
    ana = {"id": "7", "handle": "ana"}
    mentions = tmp_path / "m.jsonl"
    _write_jsonl(
        mentions,
        [
            # A webhook source without reply_url: a ticket, but nowhere to send an ack.
            {
                "platform": "webhook",
                "id": "w1",
                "author": ana,
                "text": "@acme my card was charged twice",
                "created_at": "2026-11-20T10:00:00Z",
            },
            {
                "platform": "webhook",
                "id": "w2",
                "author": ana,
                "text": "@acme the app keeps crashing",
                "created_at": "2026-11-20T10:01:00Z",
                "reply_url": "https://example.test/r",
            },
            {
                "platform": "webhook",
                "id": "w3",
                "author": ana,
                "text": "@acme and the refund never came",
                "created_at": "2026-11-20T10:02:00Z",
                "reply_url": "https://example.test/r",
            },
        ],
    )
    code, out, _ = run_cli(
        ["replay", "--config", str(config_copy.path), "--json", str(mentions)], capsys
    )
    assert code == 0
    summary = json.loads(out)["config"]
    assert summary["actions"] == {"capped": 1, "ticket": 2}
    assert summary["acks"] == 1  # w2 only: w1 had no reply_url, w3 is past the cap


def test_export_refuses_a_missing_database_and_a_bad_destination(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    env = {"CAREBOT_DATABASE_URL": f"sqlite+aiosqlite:///{missing}"}
    code = main(["export-mentions", "--config", str(config_copy.path)], environ=env)
    err = capsys.readouterr().err
    assert code == 3
    assert f"cannot read the database: no file {missing}" in err
    assert not missing.exists()  # reading never creates an empty database
    code = main(
        ["export-labels", "--config", str(config_copy.path), "--since", "soon"], environ=env
    )
    assert code == 2
    assert "--since:" in capsys.readouterr().err
