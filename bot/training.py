"""Training a :class:`bot.model.LinearModel` with scikit-learn (``carebot train``).

Deterministic: the same examples give the same file, byte for byte (scikit-learn's lbfgs
solver has no randomness, the vocabulary is sorted, and numbers are written rounded).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bot.evaluation import Example, read_labelled
from bot.model import CLASSES, FEATURES_VERSION, FORMAT, digest, features

__all__ = ["BASE_EXAMPLES", "base_examples", "fit_vocabulary", "train", "vectorise", "write_model"]

BASE_EXAMPLES = "examples.csv"
# Chosen with the project's held-out examples (bench/classify.py); see the README.
C = 8.0
MIN_DF = 2
_DIGITS = 6


def base_examples() -> list[Example]:
    """The labelled examples that ship with carebot (``bot/data/examples.csv``)."""
    with resources.as_file(resources.files("bot").joinpath("data", BASE_EXAMPLES)) as path:
        return read_labelled(path)


def fit_vocabulary(texts: Sequence[str], min_df: int) -> tuple[list[str], Any]:
    """The features seen in at least ``min_df`` texts (sorted), and their smoothed idf."""
    from sklearn.feature_extraction.text import CountVectorizer  # noqa: PLC0415

    counter = CountVectorizer(analyzer=features, min_df=min(min_df, len(texts)))
    present = counter.fit_transform(texts) > 0
    df = np.asarray(present.sum(axis=0)).ravel()
    idf = np.log((1 + len(texts)) / (1 + df)) + 1.0  # scikit-learn's smooth idf
    return counter.get_feature_names_out().tolist(), idf


def vectorise(texts: Sequence[str], vocabulary: Sequence[str], idf: Any) -> Any:
    """The model's input, one row per text.

    Each feature's count times its idf, scaled by 1 / sqrt(sum of count * idf**2): unit
    length when no feature repeats. :meth:`bot.model.LinearModel.logits` computes the
    same, a token at a time.
    """
    from scipy.sparse import diags  # noqa: PLC0415
    from sklearn.feature_extraction.text import CountVectorizer  # noqa: PLC0415

    counts = CountVectorizer(analyzer=features, vocabulary=list(vocabulary)).transform(texts)
    counts = counts.astype(np.float64)
    squared = counts @ (idf * idf)
    scale = np.divide(1.0, np.sqrt(squared), out=np.zeros_like(squared), where=squared > 0)
    return diags(scale) @ counts @ diags(idf)


def train(examples: Sequence[Example], *, c: float = C, min_df: int = MIN_DF) -> dict[str, Any]:
    """Train a model on ``examples`` and return its file's contents.

    Raises:
        ValueError: a category has too few examples to learn from.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    counts = {c_.value: 0 for c_ in CLASSES}
    for example in examples:
        counts[example.label.value] += 1
    thin = [f"{label} ({n})" for label, n in counts.items() if n < 2]
    if thin:
        raise ValueError(
            "every category needs at least 2 examples to learn from; too few: " + ", ".join(thin)
        )
    texts = [e.text for e in examples]
    labels = [CLASSES.index(e.label) for e in examples]
    vocabulary, idf = fit_vocabulary(texts, min_df)
    model = LogisticRegression(C=c, max_iter=5000, solver="lbfgs")
    model.fit(vectorise(texts, vocabulary, idf), labels)
    order = [list(model.classes_).index(i) for i in range(len(CLASSES))]

    def rounded(values: Any) -> list[float]:
        return [round(float(v), _DIGITS) for v in values]

    import sklearn  # noqa: PLC0415

    return {
        "format": FORMAT,
        "features_version": FEATURES_VERSION,
        "classes": [c_.value for c_ in CLASSES],
        "info": {
            "examples": len(examples),
            "per_category": counts,
            "examples_digest": digest((e.text, e.label.value) for e in examples),
            "c": c,
            "min_df": min_df,
            "trainer": f"scikit-learn {sklearn.__version__} LogisticRegression(lbfgs)",
        },
        "vocabulary": vocabulary,
        "idf": rounded(idf),
        "coef": [rounded(model.coef_[k]) for k in order],
        "intercept": rounded(model.intercept_[k] for k in order),
    }


def write_model(data: dict[str, Any], path: Path) -> None:
    """Write a model file atomically: a reader never sees half a file, a failure leaves none.

    Raises:
        OSError: the file cannot be written there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def train_file(path: Path, *, base: bool) -> tuple[dict[str, Any], int]:
    """Train from a labelled CSV file, optionally with the built-in examples added.

    Returns the model data and the number of examples used.
    """
    examples = read_labelled(path)
    if base:
        examples = base_examples() + examples
    return train(examples), len(examples)


def builtin_model_path() -> Path:
    """Where the built-in model lives in a source checkout (``bot/data/model.json``)."""
    return Path(__file__).parent / "data" / "model.json"


def main() -> None:
    """Rebuild the built-in model from the built-in examples: ``python -m bot.training``."""
    data = train(base_examples())
    write_model(data, builtin_model_path())
    print(f"wrote {builtin_model_path()}: {data['info']['examples']} examples")  # noqa: T201


if __name__ == "__main__":
    main()
