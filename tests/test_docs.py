"""The operator's guide (docs/operators.md) stays true to the code.

Environment variables, CLI commands and flags, config keys and metric names written in the
guide must exist in the code, and everything the code reads from the environment or exposes
on /metrics must be in the guide. Each check is a function of the guide's text, so
``test_the_checks_catch_a_wrong_guide`` can show that it fails on a wrong one.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from bot.classifier import RulesFile
from bot.cli import _parser
from bot.clock import SystemClock
from bot.config import SECRET_ENV, CarebotFile, PlatformsConfig, config_dir, load_config
from bot.metrics import Metrics
from bot.reference import leaves
from tests.conftest import REPO

GUIDE = REPO / "docs" / "operators.md"
# Commands the guide may describe before their parser lands. They are checked like the rest
# (and fail until they exist); the flags the guide gives them are listed here meanwhile.
EXPECTED: dict[str, frozenset[str]] = {"report": frozenset({"--since", "--png"})}

ENV_RE = re.compile(r"\bCAREBOT_[A-Z0-9_]*[A-Z0-9]\b")
FENCE_RE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
SPAN_RE = re.compile(r"`([^`\n]+)`")
INVOCATION_RE = re.compile(r"(?:^|[\s/])carebot ((?!carebot\b)[a-z][a-z-]*)")
FLAG_RE = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
SEPARATOR_RE = re.compile(r"&&|\|\||[|;>#]")
DOTTED_RE = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+")
METRIC_RE = re.compile(r"\bcarebot_[a-z_]+\b")
# Dotted names in backticks that are not config keys: files, loggers, and the fields of
# Telegram updates and webhook bodies.
NOT_KEYS_SUFFIXES = (".yaml", ".yml", ".py", ".csv", ".json", ".jsonl", ".md", ".db")
NOT_KEYS_PREFIXES = ("bot.", "message.", "author.")


# -- reading the guide ---------------------------------------------------------------------


def fenced_blocks(text: str) -> list[str]:
    """The contents of the ``` blocks."""
    return FENCE_RE.findall(text)


def inline_spans(text: str) -> list[str]:
    """The `code spans` outside ``` blocks."""
    return SPAN_RE.findall(FENCE_RE.sub("", text))


def command_lines(text: str) -> list[str]:
    """Where the guide runs carebot: spans starting with it, and ``$ `` lines of blocks."""
    lines = [span for span in inline_spans(text) if span.startswith("carebot ")]
    for block in fenced_blocks(text):
        lines += [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    return lines


def invocations(text: str) -> Iterator[tuple[str, set[str]]]:
    """Each ``carebot <command>`` the guide runs, with the ``--flags`` given to it."""
    for line in command_lines(text):
        for match in INVOCATION_RE.finditer(line):
            rest = SEPARATOR_RE.split(line[match.end() :], maxsplit=1)[0]
            yield match.group(1), set(FLAG_RE.findall(rest))


def env_vars(text: str) -> set[str]:
    """Every CAREBOT_* variable named anywhere in the text."""
    return set(ENV_RE.findall(text))


def env_table(text: str) -> dict[str, str]:
    """The guide's table of variables: name → the rest of its row."""
    rows = re.findall(r"^\| `(CAREBOT_[A-Z0-9_]+)` \|(.+)$", text, re.M)
    return dict(rows)


def cited_keys(text: str) -> set[str]:
    """Dotted names in `code spans` that claim to be config keys."""
    found: set[str] = set()
    for span in inline_spans(text):
        name = span.split(":")[0].strip()  # `platforms.x.backfill: 2h` cites the key
        if not DOTTED_RE.fullmatch(name):
            continue
        if name.endswith(NOT_KEYS_SUFFIXES) or name.startswith(NOT_KEYS_PREFIXES):
            continue
        found.add(name)
    return found


# -- what the code has ---------------------------------------------------------------------


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The CLI's sub-command parsers by name."""
    actions = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1, "the CLI has one level of sub-commands"
    choices: dict[str, argparse.ArgumentParser] = actions[0].choices
    return choices


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    """The long options a parser accepts."""
    return {opt for a in parser._actions for opt in a.option_strings if opt.startswith("--")}


def config_keys() -> set[str]:
    """Every key path of carebot.yaml and rules.yaml, sections included."""
    keys: set[str] = set()
    for model in (CarebotFile, RulesFile):
        for path, _ in leaves(model):
            keys.update(".".join(path[:i]) for i in range(1, len(path) + 1))
    return keys


def literal_env_names() -> set[str]:
    """CAREBOT_* names written as whole string literals in the service's code."""
    names: set[str] = set()
    for path in sorted((REPO / "bot").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and ENV_RE.fullmatch(value):
                names.add(value)
    return names


def compose_only_names() -> set[str]:
    """Variables compose.yaml interpolates but does not hand to carebot."""
    text = (REPO / "compose.yaml").read_text(encoding="utf-8")
    given = set(yaml.safe_load(text)["services"]["carebot"]["environment"])
    return set(re.findall(r"\$\{(CAREBOT_[A-Z0-9_]+)", text)) - given


class RecordingEnv(Mapping[str, str]):
    """An environment that answers every CAREBOT_* name plausibly and records the reads."""

    def __init__(self, tmp: Path) -> None:
        self.read: set[str] = set()
        self._tmp = tmp

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        if not key.startswith("CAREBOT_"):
            raise KeyError(key)
        if key.endswith("_URL"):
            return f"sqlite+aiosqlite:///{self._tmp / 'recorded.db'}"
        if key.endswith("_PORT"):
            return "8181"
        if key.endswith("_HOST"):
            return "10.0.0.9"
        if key.endswith("_DIR"):
            return str(self._tmp)
        return "Recorded-value_0123456789"  # fits every token and secret check

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


@pytest.fixture(scope="module")
def env_read_by_code(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The variables carebot reads with every platform, the staff chat and webhooks on."""
    tmp = tmp_path_factory.mktemp("live-config")
    directory = tmp / "config"
    shutil.copytree(REPO / "config", directory)
    path = directory / "carebot.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    data.setdefault("sandbox", {})["enabled"] = False
    platforms = data.setdefault("platforms", {})
    for name in PlatformsConfig.model_fields:
        platforms.setdefault(name, {})["enabled"] = True
    staff = data.setdefault("staff", {})
    staff["enabled"] = True
    staff["telegram_webhook_url"] = "https://carebot.example/telegram"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    env = RecordingEnv(tmp)
    config = load_config(directory, env, with_model=False)
    # every secret was read and used, so the recording covers every feature
    assert config.x_credentials is not None
    assert config.telegram_staff_token is not None
    assert config.mastodon_token is not None
    assert config.webhook_secret is not None
    assert config.telegram_webhook_secret is not None
    assert config.database_url.get_secret_value().endswith("recorded.db")
    assert (config.http_host, config.http_port) == ("10.0.0.9", 8181)
    assert config_dir(None, env) == tmp
    return env.read


# -- the checks, as functions of a guide's text --------------------------------------------


def unknown_env_vars(text: str, known: set[str]) -> set[str]:
    """Variables the text names that carebot does not read (nor compose.yaml use)."""
    return env_vars(text) - known - compose_only_names()


def unknown_commands(text: str) -> set[str]:
    """``carebot <command>`` in the text that the CLI does not have (nor is expected to get)."""
    have = set(subcommands()) | set(EXPECTED)  # test_expected_commands_exist_now checks those
    return {command for command, _ in invocations(text) if command not in have}


def unknown_flags(text: str) -> set[str]:
    """``carebot <command> --flag`` where that command has no such flag."""
    parsers = subcommands()
    bad: set[str] = set()
    for command, flags in invocations(text):
        if command in parsers:
            accepted = flags_of(parsers[command])
        elif command in EXPECTED:
            accepted = set(EXPECTED[command]) | {"--config", "--help"}
        else:
            continue  # unknown_commands reports it
        bad |= {f"{command} {flag}" for flag in flags - accepted}
    return bad


def unknown_keys(text: str) -> set[str]:
    """Config key paths cited in the text that neither carebot.yaml nor rules.yaml has."""
    return cited_keys(text) - config_keys()


def metric_names() -> tuple[set[str], set[str]]:
    """(the names to document, every series name /metrics can show)."""
    families: list[Metric] = list(Metrics(SystemClock()).registry.collect())
    main: set[str] = set()
    series: set[str] = set()
    for family in families:
        if family.type == "counter":
            main.add(f"{family.name}_total")
            series |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            main.add(family.name)
            series |= {family.name} | {
                f"{family.name}_{s}" for s in ("bucket", "count", "sum", "created")
            }
        else:
            main.add(family.name)
            series.add(family.name)
    return main, series


def cited_metrics(text: str) -> set[str]:
    """carebot_* names in `code spans`, and series in pasted /metrics output."""
    names = {m for span in inline_spans(text) for m in METRIC_RE.findall(span.split("{")[0])}
    for block in fenced_blocks(text):
        names |= set(re.findall(r"^(carebot_[a-z_]+)[{ ]", block, re.M))
    return names


def unknown_metrics(text: str) -> set[str]:
    """carebot_* names in the text that /metrics does not serve."""
    _, series = metric_names()
    return cited_metrics(text) - series


# -- the tests -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def test_every_variable_the_guide_names_is_read_by_carebot(
    guide: str, env_read_by_code: set[str]
) -> None:
    assert unknown_env_vars(guide, env_read_by_code) == set()


def test_every_variable_carebot_reads_is_in_the_guide_table(
    guide: str, env_read_by_code: set[str]
) -> None:
    table = env_table(guide)
    assert env_read_by_code - set(table) == set(), "read by carebot, missing from the table"
    assert literal_env_names() - set(table) == set(), "named in bot/, missing from the table"
    secrets = set(SECRET_ENV.values()) | {"CAREBOT_WEBHOOK_SECRET", "CAREBOT_DATABASE_URL"}
    secrets.add("CAREBOT_TELEGRAM_WEBHOOK_SECRET")
    assert secrets - set(table) == set()
    assert set(table) - env_read_by_code == set(), "in the table, but never read"


def test_the_table_says_which_key_enables_each_platform(guide: str) -> None:
    rows = " ".join(env_table(guide).values())
    for name in PlatformsConfig.model_fields:
        assert f"`platforms.{name}.enabled" in guide
    assert "`staff.enabled" in rows
    assert "`sandbox.enabled: false`" in rows
    assert "`staff.telegram_webhook_url`" in rows


def test_the_guide_runs_commands(guide: str) -> None:
    ran = {command for command, _ in invocations(guide)}
    # the tuning loop, the database and the watching sections
    wanted = {"classify", "eval", "replay", "export-labels", "export-mentions", "train"}
    assert wanted | {"migrate", "check-config", "config-reference", "report"} <= ran


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_expected_commands_exist_now(command: str) -> None:
    """A command the guide already documents has landed in the CLI (fails until it has)."""
    assert command in subcommands(), f"`carebot {command}` is documented but not in the CLI"
    assert EXPECTED[command] <= flags_of(subcommands()[command])


def test_every_command_in_the_guide_is_a_real_subcommand(guide: str) -> None:
    assert unknown_commands(guide) == set()


def test_every_flag_in_the_guide_belongs_to_its_command(guide: str) -> None:
    assert unknown_flags(guide) == set()


def test_every_config_key_in_the_guide_exists(guide: str) -> None:
    cited = cited_keys(guide)
    assert {"database.lease_ttl", "classifier.model", "logging.levels"} <= cited  # parsing works
    assert unknown_keys(guide) == set()


def test_the_metrics_table_matches_the_registry(guide: str) -> None:
    main, _ = metric_names()
    assert unknown_metrics(guide) == set()
    table = set(re.findall(r"^\| `(carebot_[a-z_]+)` \|", guide, re.M))
    assert table == main


def test_readyz_texts_quoted_in_the_guide_are_the_codes(guide: str) -> None:
    app = (REPO / "bot" / "app.py").read_text(encoding="utf-8")
    for text in ("standby: another process holds its intake", "degraded: cannot renew its lease"):
        assert text in guide
        assert text in app


def test_the_checks_catch_a_wrong_guide(env_read_by_code: set[str]) -> None:
    wrong = "\n".join(
        [
            "Export `CAREBOT_X_API_KEY` and `CAREBOT_DATABASE_URL`.",
            "Run `carebot frobnicate --now` and `carebot eval FILE.csv --explain`.",
            "```",
            "$ CAREBOT_DATABASE_URL=x carebot migrat --to head",
            "$ .venv/bin/carebot replay week.jsonl --against DIR --json",
            "carebot sandbox: this output line is not a command",
            "```",
            "Tune `database.lease_tll`, `classifier.treshold`, keep `database.lease_ttl`.",
            "Scrape `carebot_mentions_total` and `carebot_acks_sent_total`.",
        ]
    )
    assert unknown_env_vars(wrong, env_read_by_code) == {"CAREBOT_X_API_KEY"}
    assert unknown_commands(wrong) == {"frobnicate", "migrat"}
    assert unknown_flags(wrong) == {"eval --explain"}
    assert unknown_keys(wrong) == {"database.lease_tll", "classifier.treshold"}
    assert unknown_metrics(wrong) == {"carebot_acks_sent_total"}
    assert env_table("| `CAREBOT_HTTP_PORT` | port | always |\n") == {
        "CAREBOT_HTTP_PORT": " port | always |"
    }
