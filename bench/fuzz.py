"""Fuzzing: hypothesis properties over everything customers and staff can send us.

Properties (each an input carebot takes from outside, and what must hold for any value):
  mention_text     the classifier (rules + model) and the acknowledgement renderer take
                   any text and handle: a verdict in the four categories, a confidence in
                   [0, 1], an ack that carries the ticket reference
  webhook_body     POST /ingest bodies, raw bytes or JSON shaped like a mention: either a
                   Mention whose every string the databases can store (UTF-8, no NUL, within
                   its column), or BadRequest naming the field; nothing else
  webhook_auth     signature headers: refused with a reason unless correctly signed
  callback_data    staff buttons' data: None, or an Action naming a real verb and ticket
  telegram_update  Telegram updates (JSON): refused with ValueError, or parsed by PTB

``tests/test_fuzz.py`` runs these with a few hundred examples each; this script runs the
long version and prints its count.

Usage: python bench/fuzz.py [--examples 100000] [--seed 0] [--only PROPERTY ...]
Ends with one line: examples=… failures=… per property.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.classifier import RulesFile  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.domain import Category, Platform  # noqa: E402
from bot.model import LinearModel  # noqa: E402
from bot.platforms.webhook import BadRequest, parse_mention, sign, verify  # noqa: E402
from bot.templates import render_ack  # noqa: E402
from bot.textlimits import storable  # noqa: E402
from bot.triage import TriageClassifier  # noqa: E402
from handlers.staff import Verb, parse_callback  # noqa: E402

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SECRET = "fuzz-secret-0123456789abcdef"
_config = load_config(REPO / "config", {}, with_model=False)
_rules: RulesFile = _config.rules
CLASSIFIER = TriageClassifier(_rules, LinearModel.builtin())
TEMPLATES = _config.templates

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=50),
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=20,
)
# texts as customers write them: any unicode, emoji, control characters, long runs
any_text = st.text(max_size=600) | st.text(
    alphabet=st.characters(codec="utf-8"), min_size=1, max_size=3000
)
mention_like = st.fixed_dictionaries(
    {
        "source": st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,39}", fullmatch=True), json_leaf),
        "external_id": st.one_of(st.text(max_size=70), json_leaf),
        "text": st.one_of(any_text, json_leaf),
        "author": st.one_of(
            st.fixed_dictionaries(
                {"id": st.one_of(st.text(max_size=70), json_leaf)},
                optional={
                    "handle": st.one_of(st.text(max_size=110), json_leaf),
                    "is_bot": st.one_of(st.booleans(), json_leaf),
                },
            ),
            json_value,
        ),
    },
    optional={
        "created_at": st.one_of(
            st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
            st.text(max_size=40),
            json_leaf,
        ),
        "thread_id": st.one_of(st.text(max_size=70), json_leaf),
        "in_reply_to_id": st.one_of(st.text(max_size=70), json_leaf),
        "reply_url": st.one_of(st.just("https://example.com/hook"), st.text(max_size=60)),
    },
)
update_like = st.fixed_dictionaries(
    {"update_id": st.one_of(st.integers(min_value=-(2**40), max_value=2**40), json_leaf)},
    optional={
        "message": st.one_of(
            json_value,
            st.fixed_dictionaries(
                {
                    "message_id": st.one_of(st.integers(), json_leaf),
                    "date": st.one_of(st.integers(min_value=0, max_value=2**31), json_leaf),
                    "chat": st.one_of(
                        st.fixed_dictionaries(
                            {"id": st.integers(), "type": st.sampled_from(["private", "group"])}
                        ),
                        json_value,
                    ),
                },
                optional={"text": any_text, "from": json_value},
            ),
        ),
        "callback_query": json_value,
    },
)


def check_mention_text(text: str, handle: str) -> None:
    verdict = CLASSIFIER.classify(text)
    assert verdict.category in set(Category)
    assert 0.0 <= verdict.confidence <= 1.0
    ack = render_ack(
        TEMPLATES,
        verdict.category.value if verdict.category is not Category.OTHER else "question",
        Platform.X,
        handle=handle,
        ref="CB-42",
        brand="Acme",
        variant_key=text,
    )
    assert "CB-42" in ack


def check_webhook_body(body: bytes) -> None:
    try:
        m = parse_mention(body, NOW)
    except BadRequest as exc:
        if not exc.field:  # a refusal names what is wrong
            raise AssertionError("BadRequest without a field") from exc
        return
    for value in (m.external_id, m.author_id, m.author_handle, m.text, m.thread_id):
        assert value is None or storable(value), repr(value)
    assert len(m.external_id) <= 64
    assert len(m.author_id) <= 64
    assert len(m.author_handle) <= 100
    assert m.created_at.tzinfo is not None


def check_webhook_auth(body: bytes, timestamp: str | None, signature: str | None) -> None:
    reason = verify(SECRET, timestamp, signature, body, NOW, timedelta(minutes=5))
    good = timestamp is not None and signature == sign(SECRET, timestamp, body)
    in_window = (
        timestamp is not None
        and re.fullmatch(r"[0-9]{1,12}", timestamp) is not None
        and abs(NOW.timestamp() - int(timestamp)) <= 300
    )
    assert (reason is None) == (good and in_window), (reason, good, in_window)


def check_callback_data(data: str) -> None:
    action = parse_callback(data)
    if action is not None:
        assert action.verb in set(Verb)
        assert action.ticket_id >= 0


def check_telegram_update(data: Any) -> None:
    from bot.platforms.telegram_staff import parse_update

    try:
        update = parse_update(data)
    except ValueError:
        return
    assert update.update_id == data["update_id"]


PROPERTIES: dict[str, tuple[Any, Callable[..., None]]] = {
    "mention_text": (st.tuples(any_text, st.text(max_size=40)), check_mention_text),
    "webhook_body": (
        st.one_of(
            st.binary(max_size=300),
            mention_like.map(lambda d: json.dumps(d).encode()),
            json_value.map(lambda d: json.dumps(d).encode()),
        ),
        check_webhook_body,
    ),
    "webhook_auth": (
        st.tuples(
            st.binary(max_size=100),
            st.one_of(
                st.none(),
                st.text(max_size=14),
                st.integers(0, 2**35).map(str),
                st.just(str(int(NOW.timestamp()))),
            ),
            st.one_of(st.none(), st.text(max_size=80)),
        ).map(
            lambda t: (
                (t[0], t[1], sign(SECRET, t[1], t[0])) if t[1] is not None and t[2] == "" else t
            )
        ),
        check_webhook_auth,
    ),
    "callback_data": (
        st.one_of(
            st.text(max_size=70),
            st.from_regex(r"(claim|resolve|escalate|snooze30|cat_[a-z]{2,9}):[0-9]{1,20}"),
        ),
        check_callback_data,
    ),
    "telegram_update": (st.one_of(update_like, json_value), check_telegram_update),
}


def run_property(name: str, examples: int, seed_value: int = 0) -> tuple[int, list[str]]:
    """Run one property for ``examples`` examples; return (count run, failures)."""
    strategy, check = PROPERTIES[name]
    count = 0
    failures: list[str] = []

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(strategy)
    def prop(value: Any) -> None:
        nonlocal count
        count += 1
        if isinstance(value, tuple):
            check(*value)
        else:
            check(value)

    try:
        prop()
    except Exception:  # noqa: BLE001 — reported with its shrunk example
        failures.append(traceback.format_exc(limit=6))
    return count, failures


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--examples", type=int, default=100_000, help="examples per property")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=list(PROPERTIES), action="append", help="these properties")
    args = ap.parse_args()
    total, failed = 0, 0
    figures = []
    for name in args.only or list(PROPERTIES):
        t0 = time.perf_counter()
        count, failures = run_property(name, args.examples, args.seed)
        total += count
        failed += len(failures)
        print(
            f"{name}: {count} examples in {time.perf_counter() - t0:.0f} s, "
            f"{len(failures)} failure(s)"
        )
        for f in failures:
            print(f)
        figures.append(f"{name}={count}")
    print(f"examples={total} failures={failed} " + " ".join(figures))


if __name__ == "__main__":
    main()
