"""The operator's tools: classify, eval, train, replay, export-labels/-mentions, report.

None of them sends anything or changes the database; ``train`` writes one model file.
Long runs show a progress bar on stderr when it is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

from bot.config import Config, config_dir, load_config, model_path
from bot.errors import ConfigError
from bot.evaluation import LabelledError, read_labelled, score
from bot.replay import Replayer, ReplayError, read_mentions
from bot.triage import TriageClassifier

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_INPUT: Final = 2
EXIT_STARTUP: Final = 3
_PROGRESS_FROM = 500  # rows; shorter runs finish before a bar would help

T = TypeVar("T")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the tuning commands on the ``carebot`` sub-command parser."""
    classify = sub.add_parser(
        "classify", parents=[common], help="classify a text with the configured rules and model"
    )
    classify.add_argument("text", help="the mention's text")
    classify.add_argument(
        "--explain",
        action="store_true",
        help="show the probabilities, the rules that fired and the strongest model features",
    )
    ev = sub.add_parser(
        "eval", parents=[common], help="measure the classifier on a labelled CSV (text,label)"
    )
    ev.add_argument("file", type=Path, help="CSV file with a header naming text and label")
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    tr = sub.add_parser(
        "train", parents=[common], help="train a model from a labelled CSV (text,label)"
    )
    tr.add_argument("file", type=Path, help="CSV file with a header naming text and label")
    tr.add_argument(
        "--base", action="store_true", help="add carebot's built-in examples to the file's"
    )
    tr.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="where to write the model (default: classifier.model in rules.yaml)",
    )
    rp = sub.add_parser(
        "replay",
        parents=[common],
        help="show what the config would do with past mentions (JSON Lines); sends nothing",
    )
    rp.add_argument("file", type=Path, help="mentions, one JSON object per line")
    rp.add_argument(
        "--against",
        metavar="DIR",
        help="a second config directory: list every mention whose decision differs",
    )
    rp.add_argument("--json", action="store_true", help="print the result as JSON")
    for name, what in (
        ("export-labels", "staff's category corrections as CSV (text,label), to train on"),
        ("export-mentions", "stored mentions as JSON Lines, to replay"),
    ):
        ex = sub.add_parser(name, parents=[common], help=what)
        ex.add_argument("--out", type=Path, metavar="FILE", help="write here (default: stdout)")
        ex.add_argument(
            "--since", metavar="DURATION", help="only the last DURATION, such as 7d or 12h"
        )
    report = sub.add_parser(
        "report",
        parents=[common],
        help="support figures for a period: volume, ack latency, first response, SLA, "
        "reopens, complaint terms (reads the database, writes nothing)",
    )
    report.add_argument(
        "--since",
        metavar="WHEN",
        help="start: a duration back from now (7d, 24h, 90m) or an ISO date or time, UTC "
        "(default: 7d)",
    )
    report.add_argument(
        "--until",
        metavar="WHEN",
        help="end, in the same forms; a date means the end of that day (default: now)",
    )
    report.add_argument(
        "--png", type=Path, metavar="FILE", help="also write a chart of volume by category"
    )
    report.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(  # noqa: PLR0911 — one return per command
    args: argparse.Namespace, config: Config, environ: Mapping[str, str]
) -> int:
    """Run one tuning command; return the exit code.

    ``environ`` is the environment the command was given (``--against`` loads with it too).
    """
    try:
        if args.command == "classify":
            return _classify(config, args.text, args.explain)
        if args.command == "eval":
            return _eval(config, args.file, args.json)
        if args.command == "train":
            return _train(config, args.file, args.base, args.out)
        if args.command == "replay":
            return _replay(config, args.file, args.against, args.json, environ)
        if args.command == "report":
            from bot.report import run as report  # noqa: PLC0415 — loaded only for it

            return report(config, args)
        return _export(config, args.command, args.out, args.since)
    except (LabelledError, ReplayError) as exc:
        sys.stderr.write(f"carebot {args.command}: {exc}\n")
        return EXIT_INPUT


def _progress(items: Iterable[T], total: int | None, label: str) -> Iterator[T]:
    """Iterate with a progress bar on stderr (only on a terminal, and for long runs)."""
    if total is not None and total < _PROGRESS_FROM:
        yield from items
        return
    from tqdm import tqdm  # noqa: PLC0415

    yield from tqdm(items, total=total, desc=label, unit=" rows", disable=None, file=sys.stderr)


def _classify(config: Config, text: str, explain: bool) -> int:
    classifier = TriageClassifier(config.rules, config.model)
    out = sys.stdout
    if not explain:
        verdict = classifier.classify(text)
        triage = " · needs triage" if verdict.needs_triage else ""
        out.write(f"{verdict.category.value} (confidence {verdict.confidence:.2f}){triage}\n")
        return EXIT_OK
    e = classifier.explain(text)
    verdict = e.verdict
    triage = " · needs triage" if verdict.needs_triage else ""
    out.write(f"{verdict.category.value} (confidence {verdict.confidence:.2f}){triage}\n")
    if e.model is None:
        scores = ", ".join(f"{k} {v:+.2f}" for k, v in verdict.scores.items())
        out.write(f"rule scores: {scores} (min_score {config.rules.min_score}; no model)\n")
    else:
        spec = config.rules.classifier
        out.write(f"model: {e.model}\n")
        out.write(
            "  model alone: "
            + ", ".join(f"{k} {v:.2f}" for k, v in e.model_probabilities.items())
            + "\n"
        )
        if any(e.rule_scores.values()):
            out.write(
                "  rule weights added: "
                + ", ".join(f"{k} {v:+.2f}" for k, v in e.rule_scores.items() if v)
                + "\n"
            )
        out.write(
            "  final: "
            + ", ".join(f"{k} {v:.2f}" for k, v in verdict.scores.items())
            + f" (threshold {spec.threshold}, margin {spec.margin}, "
            f"fallback {spec.fallback.value})\n"
        )
    out.write("reasons:\n")
    for reason in verdict.reasons:
        out.write(f"  {reason}\n")
    if e.features:
        out.write(f"strongest model features for (+) and against (-) {verdict.category.value}:\n")
        for feature, weight in e.features:
            out.write(f"  {weight:+.3f}  {_feature_name(feature)}\n")
    return EXIT_OK


def _feature_name(feature: str) -> str:
    """A model feature in words: ``w refund`` is the word "refund", and so on."""
    kind, _, value = feature.partition(" ")
    names = {
        "w": "word",
        "b": "words",
        "c": "letters",
        "l": "sentiment",
        "n": "word count",
    }
    return f"{names.get(kind, kind)} {value!r}"


def _eval(config: Config, path: Path, as_json: bool) -> int:
    examples = read_labelled(path)
    classifier = TriageClassifier(config.rules, config.model)
    predicted = [
        classifier.classify(e.text).category
        for e in _progress(examples, len(examples), "classifying")
    ]
    report = score([e.label for e in examples], predicted)
    if as_json:
        sys.stdout.write(json.dumps({"file": str(path), **report.as_dict()}, indent=2) + "\n")
    else:
        sys.stdout.write(f"{path}: {report.total} rows\n\n{report.table()}\n")
    return EXIT_OK


def _train(config: Config, path: Path, base: bool, out: Path | None) -> int:
    from bot.training import train_file, write_model  # noqa: PLC0415

    target = out or model_path(config.rules, config.directory)
    if target is None:
        sys.stderr.write(
            "carebot train: say where to write the model: --out PATH, or set classifier.model "
            f"in {config.directory / 'rules.yaml'} to a file path (it is "
            f"{config.rules.classifier.model!r})\n"
        )
        return EXIT_INPUT
    sys.stderr.write(f"training on {path}{' and the built-in examples' if base else ''}…\n")
    try:
        data, used = train_file(path, base=base)
    except ValueError as exc:
        sys.stderr.write(f"carebot train: {path}: {exc}\n")
        return EXIT_INPUT
    try:
        write_model(data, target)
    except OSError as exc:
        sys.stderr.write(f"carebot train: cannot write {target}: {exc.strerror or exc}\n")
        return EXIT_INPUT
    sys.stdout.write(
        f"wrote {target}: {used} examples "
        f"({', '.join(f'{k} {v}' for k, v in data['info']['per_category'].items())}), "
        f"{len(data['vocabulary'])} features\n"
    )
    configured = model_path(config.rules, config.directory)
    if configured is None or configured.resolve() != target.resolve():
        sys.stdout.write(
            f"to use it, set classifier.model: {_as_setting(target, config.directory)} "
            f"in {config.directory / 'rules.yaml'}\n"
        )
    return EXIT_OK


def _as_setting(target: Path, directory: Path) -> str:
    """How ``classifier.model`` names ``target``: relative to the config directory if inside."""
    absolute = target.resolve()
    try:
        return str(absolute.relative_to(directory.resolve()))
    except ValueError:
        return str(absolute)


def _replay(
    config: Config,
    path: Path,
    against: str | None,
    as_json: bool,
    environ: Mapping[str, str],
) -> int:
    mentions = list(read_mentions(path))
    try:
        other = load_config(config_dir(against, environ), environ) if against else None
    except ConfigError as exc:
        sys.stderr.write(f"carebot replay: invalid configuration in {against}:\n")
        for problem in exc.problems:
            sys.stderr.write(f"  {problem}\n")
        return EXIT_CONFIG
    first = Replayer(config)
    second = Replayer(other) if other is not None else None
    # Replayed in time order, as they happened: the ack cap and threads depend on it.
    order = sorted(range(len(mentions)), key=lambda i: (mentions[i].mention.created_at, i))
    changed: list[dict[str, Any]] = []
    for i in _progress(order, len(order), "replaying"):
        item = mentions[i]
        m = item.mention
        a = first.decide(item)
        if second is None:
            continue
        b = second.decide(item)
        if a.key() != b.key():
            changed.append({"line": i + 1, "id": m.external_id, "text": m.text, "a": a, "b": b})
    changed.sort(key=lambda c: c["line"])
    if as_json:
        result: dict[str, Any] = {"file": str(path), "config": _summary(first, config)}
        if second is not None and other is not None:
            result["against"] = _summary(second, other)
            result["changed"] = [
                {**c, "a": c["a"].as_dict(), "b": c["b"].as_dict()} for c in changed
            ]
        sys.stdout.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK
    out = sys.stdout
    out.write(f"{path}: {len(mentions)} mentions\n")
    _write_summary(out, str(config.directory), first)
    if second is not None and other is not None:
        _write_summary(out, str(other.directory), second)
        out.write(f"\n{len(changed)} decision(s) differ:\n")
        for c in changed:
            text = " ".join(str(c["text"]).split())
            text = text if len(text) <= 70 else text[:69] + "…"
            out.write(f"  line {c['line']} ({c['id']}): {text}\n")
            out.write(f"      {c['a'].describe()}\n   →  {c['b'].describe()}\n")
    return EXIT_OK


def _grouped(counts: Counter[str], prefix: str) -> dict[str, int]:
    """The counts whose key starts with ``prefix``, keyed by the rest."""
    return {
        key.removeprefix(prefix): n for key, n in sorted(counts.items()) if key.startswith(prefix)
    }


def _summary(replayer: Replayer, config: Config) -> dict[str, Any]:
    counts = replayer.counts
    return {
        "directory": str(config.directory),
        "model": config.model.source if config.model is not None else None,
        "mentions": counts["mentions"],
        "actions": _grouped(counts, "action:"),
        "categories": _grouped(counts, "category:"),
        "acks": counts["acks"],
        "tickets": counts["tickets"],
        "needs_triage": counts["needs_triage"],
        "policies": _grouped(counts, "policy:"),
    }


def _write_summary(out: TextIO, name: str, replayer: Replayer) -> None:
    counts = replayer.counts

    def listing(prefix: str) -> str:
        return ", ".join(f"{k} {n}" for k, n in _grouped(counts, prefix).items()) or "none"

    out.write(f"\n{name}:\n")
    out.write(f"  categories: {listing('category:')}\n")
    out.write(f"  actions: {listing('action:')}\n")
    out.write(
        f"  acks {counts['acks']}, tickets {counts['tickets']}, "
        f"needs triage {counts['needs_triage']}\n"
    )
    out.write(f"  escalation policies: {listing('policy:')}\n")


class _OutputError(Exception):
    """Writing the export failed (not the database's fault)."""


class _Output:
    """The export's destination; a failed write becomes :class:`_OutputError`."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle

    def write(self, text: str) -> int:
        try:
            return self._handle.write(text)
        except OSError as exc:
            raise _OutputError(exc.strerror or str(exc)) from exc


def _export(config: Config, command: str, out_path: Path | None, since_text: str | None) -> int:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    from bot.durations import parse_duration  # noqa: PLC0415
    from bot.errors import StartupError  # noqa: PLC0415

    since: datetime | None = None
    if since_text:
        try:
            window = parse_duration(since_text)
        except ValueError as exc:
            sys.stderr.write(f"carebot {command}: --since: {exc}\n")
            return EXIT_INPUT
        since = datetime.now(UTC) - window
    url = make_url(config.database_url.get_secret_value())
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and not Path(database).is_file():
        # Reading must not create an empty database where a path was mistyped.
        sys.stderr.write(f"carebot {command}: cannot read the database: no file {database}\n")
        return EXIT_STARTUP
    tmp = out_path.with_name(out_path.name + ".tmp") if out_path is not None else None
    try:
        if tmp is None:
            count = asyncio.run(_export_async(config, command, _Output(sys.stdout), since))
        else:
            with tmp.open("w", encoding="utf-8", newline="") as handle:
                count = asyncio.run(_export_async(config, command, _Output(handle), since))
            tmp.replace(out_path)  # type: ignore[arg-type]  # set with tmp
    except StartupError as exc:
        sys.stderr.write(f"carebot {command}: cannot read the database: {exc}\n")
        return EXIT_STARTUP
    except (OSError, _OutputError) as exc:
        where = out_path or "stdout"
        detail = exc.strerror if isinstance(exc, OSError) else str(exc)
        sys.stderr.write(f"carebot {command}: cannot write {where}: {detail}\n")
        return EXIT_INPUT
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    what = "label correction(s)" if command == "export-labels" else "mention(s)"
    sys.stderr.write(f"{count} {what} written{f' to {out_path}' if out_path else ''}\n")
    return EXIT_OK


async def _export_async(config: Config, command: str, out: _Output, since: datetime | None) -> int:
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415

    from bot.errors import StartupError  # noqa: PLC0415
    from bot.exports import export_labels, export_mentions  # noqa: PLC0415
    from bot.migrate import current  # noqa: PLC0415
    from bot.store import make_engine  # noqa: PLC0415

    engine = make_engine(config.database_url.get_secret_value())
    where = engine.url.render_as_string(hide_password=True)
    export = export_labels if command == "export-labels" else export_mentions
    try:
        if await current(engine) is None:
            raise StartupError(f"{where} holds no carebot data (its schema was never created)")
        return await export(engine, out, since)
    except (OSError, SQLAlchemyError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StartupError(f"{where}: {detail}") from exc
    finally:
        await engine.dispose()
