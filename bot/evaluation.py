"""Labelled data (``text,label`` CSV files) and the arithmetic of ``carebot eval``."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.domain import Category

__all__ = ["LabelledError", "Report", "read_labelled", "score"]

LABELS: tuple[str, ...] = tuple(c.value for c in Category)


class LabelledError(Exception):
    """A labelled file that cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text, and the line of the file it came from."""

    text: str
    label: Category
    line: int


def read_labelled(path: Path) -> list[Example]:
    """Read a UTF-8 CSV file with a header holding ``text`` and ``label`` columns.

    Other columns are ignored. Every bad row is reported, not just the first.

    Raises:
        LabelledError: the file cannot be read, lacks the columns, has an unknown label
            or an empty text, or has no rows.
    """
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise LabelledError(f"{path}: cannot read: {exc.strerror}") from exc
    problems: list[str] = []
    examples: list[Example] = []
    with handle:
        reader = csv.DictReader(handle)
        try:
            fields = reader.fieldnames or []
            missing = [name for name in ("text", "label") if name not in fields]
            if missing:
                raise LabelledError(
                    f"{path}:1: the header must name the columns text and label "
                    f"(missing: {', '.join(missing)}; found: {', '.join(fields) or 'nothing'})"
                )
            for row in reader:
                line = reader.line_num
                text = (row.get("text") or "").strip()
                label = (row.get("label") or "").strip().lower()
                if not text:
                    problems.append(f"{path}:{line}: text: empty")
                    continue
                if label not in LABELS:
                    problems.append(
                        f"{path}:{line}: label: {label!r} is not one of {', '.join(LABELS)}"
                    )
                    continue
                examples.append(Example(text, Category(label), line))
        except UnicodeDecodeError as exc:
            raise LabelledError(f"{path}: not UTF-8 text ({exc.reason})") from exc
        except csv.Error as exc:
            raise LabelledError(f"{path}:{reader.line_num}: bad CSV: {exc}") from exc
    if problems:
        shown = problems[:20]
        more = len(problems) - len(shown)
        raise LabelledError(
            "\n".join(shown) + (f"\n… and {more} more problem(s)" if more > 0 else "")
        )
    if not examples:
        raise LabelledError(f"{path}: no labelled rows")
    return examples


@dataclass(frozen=True, slots=True)
class ClassScore:
    """Precision, recall and F1 of one category, and how many rows carry it."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class Report:
    """The result of an evaluation: per category, macro averages, confusion matrix.

    ``confusion[actual][predicted]`` counts rows; a category with no rows and no
    predictions scores 0 and is left out of the macro average.
    """

    per_class: dict[str, ClassScore]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    accuracy: float
    total: int
    confusion: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, Any]:
        """The report as plain data (for ``--json``)."""
        return {
            "total": self.total,
            "accuracy": round(self.accuracy, 4),
            "macro_precision": round(self.macro_precision, 4),
            "macro_recall": round(self.macro_recall, 4),
            "macro_f1": round(self.macro_f1, 4),
            "per_class": {
                label: {
                    "precision": round(s.precision, 4),
                    "recall": round(s.recall, 4),
                    "f1": round(s.f1, 4),
                    "support": s.support,
                }
                for label, s in self.per_class.items()
            },
            "confusion": self.confusion,
        }

    def table(self) -> str:
        """The report as a terminal table."""
        lines = [f"{'':<11}{'precision':>10}{'recall':>10}{'f1':>10}{'rows':>8}"]
        for label, s in self.per_class.items():
            lines.append(
                f"{label:<11}{s.precision:>10.3f}{s.recall:>10.3f}{s.f1:>10.3f}{s.support:>8}"
            )
        lines.append(
            f"{'macro':<11}{self.macro_precision:>10.3f}{self.macro_recall:>10.3f}"
            f"{self.macro_f1:>10.3f}{self.total:>8}"
        )
        lines.append(f"accuracy {self.accuracy:.3f}")
        lines.append("")
        lines.append("confusion (rows: actual, columns: predicted)")
        lines.append(f"{'':<11}" + "".join(f"{label:>11}" for label in LABELS))
        for actual in LABELS:
            lines.append(
                f"{actual:<11}" + "".join(f"{self.confusion[actual][p]:>11}" for p in LABELS)
            )
        return "\n".join(lines)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def score(actual: Sequence[Category], predicted: Iterable[Category]) -> Report:
    """Compare predictions with labels.

    Raises:
        ValueError: the two sequences differ in length, or are empty.
    """
    predicted = list(predicted)
    if len(predicted) != len(actual):
        raise ValueError(f"{len(actual)} labels but {len(predicted)} predictions")
    if not actual:
        raise ValueError("nothing to score")
    confusion = {a: dict.fromkeys(LABELS, 0) for a in LABELS}
    for a, p in zip(actual, predicted, strict=True):
        confusion[a.value][p.value] += 1
    per_class: dict[str, ClassScore] = {}
    for label in LABELS:
        tp = confusion[label][label]
        support = sum(confusion[label].values())
        predicted_n = sum(confusion[a][label] for a in LABELS)
        precision = _ratio(tp, predicted_n)
        recall = _ratio(tp, support)
        f1 = _ratio(2 * tp, support + predicted_n)
        per_class[label] = ClassScore(precision, recall, f1, support)
    present = [
        s
        for label, s in per_class.items()
        if s.support or any(row[label] for row in confusion.values())
    ]
    n = len(present)
    correct = sum(confusion[label][label] for label in LABELS)
    return Report(
        per_class=per_class,
        macro_precision=sum(s.precision for s in present) / n,
        macro_recall=sum(s.recall for s in present) / n,
        macro_f1=sum(s.f1 for s in present) / n,
        accuracy=correct / len(actual),
        total=len(actual),
        confusion=confusion,
    )
