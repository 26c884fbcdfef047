"""Classifier benchmark: accuracy on labelled mentions, and classifications per second.

    python bench/classify.py                # ../shared/data/mentions-dev.csv, shipped config
    python bench/classify.py --quick        # a quarter of the rows, a shorter speed run
    python bench/classify.py --data FILE.csv --config DIR

Accuracy is measured on the data file (columns text,label[,source]) and on the project's
own held-out examples (bench/data/heldout.csv, never trained on). The spam figure is the
recall of `other` on rows whose source starts with "ytspam" (YouTube comment spam).
Speed is one process, one thread, classifying the data file's texts in a loop (the
texts are varied, so the per-word cache is as warm as in a service that has run a while).

The last line holds the figures as key=value pairs, to compare runs across commits.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.classifier import RulesClassifier  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.domain import Category  # noqa: E402
from bot.evaluation import score  # noqa: E402
from bot.triage import TriageClassifier  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mentions-dev.csv"
HELDOUT = ROOT / "bench" / "data" / "heldout.csv"


def read(path: Path) -> list[tuple[str, Category, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [
            (row["text"], Category(row["label"]), row.get("source") or "")
            for row in csv.DictReader(handle)
        ]


def rate(classify, texts: list[str], seconds: float) -> float:
    for text in texts[:200]:  # warm-up
        classify(text)
    done = 0
    start = time.perf_counter()
    while True:
        for text in texts:
            classify(text)
        done += len(texts)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--config", type=Path, default=ROOT / "config")
    parser.add_argument(
        "--quick", action="store_true", help="a quarter of the rows, 1 s speed runs"
    )
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data}: not found (the shared data sits beside the checkout)")
    config = load_config(args.config, os.environ)
    classifier = TriageClassifier(config.rules, config.model)
    rows = read(args.data)
    if args.quick:
        rows = rows[::4]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; one thread"
    )
    print(
        f"config: {args.config} (model: {config.model.source if config.model else 'none'}, "
        f"{len(config.rules.rules)} rules)"
    )
    start = time.perf_counter()
    verdicts = [classifier.classify(text) for text, _, _ in rows]
    print(f"classified {len(rows)} rows in {time.perf_counter() - start:.2f} s\n")
    predicted = [v.category for v in verdicts]
    report = score([label for _, label, _ in rows], predicted)
    print(f"{args.data.name}:")
    print(report.table())
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    for (_, label, source), p in zip(rows, predicted, strict=True):
        key = source.split(":", 1)[0] or "-"
        by_source[key]["rows"] += 1
        by_source[key]["right"] += p is label
    print(
        "\naccuracy by source: "
        + ", ".join(
            f"{s} {c['right'] / c['rows']:.3f} ({c['rows']})" for s, c in sorted(by_source.items())
        )
    )
    spam = [
        p for (_, _, source), p in zip(rows, predicted, strict=True) if source.startswith("ytspam")
    ]
    spam_recall = sum(p is Category.OTHER for p in spam) / len(spam) if spam else float("nan")
    triage = sum(v.needs_triage for v in verdicts) / len(verdicts)
    print(
        f"recall of other on spam: {spam_recall:.3f} ({len(spam)} rows); "
        f"sent to triage: {triage:.1%}"
    )
    held = read(HELDOUT)
    held_report = score(
        [label for _, label, _ in held], [classifier.classify(t).category for t, _, _ in held]
    )
    print(
        f"\nheld-out project examples ({HELDOUT.name}, {len(held)} rows): "
        f"macro-F1 {held_report.macro_f1:.3f} ("
        + ", ".join(f"{k} {v.f1:.3f}" for k, v in held_report.per_class.items())
        + ")"
    )
    texts = [text for text, _, _ in rows]
    seconds = 1.0 if args.quick else 3.0
    per_s = rate(classifier.classify, texts, seconds)
    rules_only = RulesClassifier(config.rules)
    rules_per_s = rate(rules_only.classify, texts, seconds / 2)
    model_per_s = rate(config.model.logits, texts, seconds / 2) if config.model else float("nan")
    print(
        f"\nspeed: {per_s:,.0f} classifications/s (rules alone {rules_per_s:,.0f}/s, "
        f"model alone {model_per_s:,.0f}/s)"
    )
    complaint_f1 = report.per_class["complaint"].f1
    print(
        f"macro_f1={report.macro_f1:.3f} complaint_f1={complaint_f1:.3f} "
        f"spam_other_recall={spam_recall:.3f} heldout_macro_f1={held_report.macro_f1:.3f} "
        f"triage_share={triage:.3f} per_s={per_s:.0f} rows={len(rows)}"
    )


if __name__ == "__main__":
    main()
