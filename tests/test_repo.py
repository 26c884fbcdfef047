"""The repository's promises: README commands, CI, Dockerfile, CLI basics."""

from __future__ import annotations

import re
import shlex

import pytest

from bot.cli import main
from tests.conftest import REPO, ConfigDir


def _readme_block(marker: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker} -->\s*```\n(.+?)\n```\s*<!-- /{marker} -->", text, re.S)
    assert match, f"README.md has no {marker} block"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command_after_a_fresh_install() -> None:
    command = _readme_block("test-command")
    assert "pip install -e '.[dev]'" in command
    assert command.endswith("pytest -q")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "test-command" in ci  # it reads the command from the README, not a copy
    assert "rm -rf .venv" in ci
    for gate in ("ruff check .", "ruff format --check .", "mypy"):
        assert gate in ci


def test_dockerfile_is_slim_non_root_exec_form_and_installs_like_the_readme() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n\s*", " ", text)  # one instruction per line, as Docker reads it
    lines = [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert re.fullmatch(r"FROM python:3\.1[1-9]-slim", lines[0])
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    cmds = [line for line in lines if line.startswith("CMD ")]
    assert cmds == ['CMD ["carebot", "run"]']  # exec form: Python is PID 1 and gets SIGTERM
    installs = [line for line in lines if line.startswith("RUN pip install")]
    assert installs
    assert shlex.split(installs[0])[-1] == "."  # the same package the README installs
    readme_run = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && carebot run"
    assert readme_run in (REPO / "README.md").read_text(encoding="utf-8")
    copied = {line.split()[1] for line in lines if line.startswith("COPY ")}
    assert {"bot", "handlers", "migrations", "config"} <= copied
    # the health check asks carebot's own /healthz on the port the image sets
    port = re.search(r"CAREBOT_HTTP_PORT=(\d+)", text)
    assert port
    assert "CAREBOT_HTTP_HOST=0.0.0.0" in text  # probes from outside the container reach it
    [check] = [line for line in lines if line.startswith("HEALTHCHECK ")]
    assert " CMD " in check
    assert f"http://127.0.0.1:{port.group(1)}/healthz" in check
    assert f"EXPOSE {port.group(1)}" in lines


def test_classify_explains_which_rules_fired(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "classify",
            "--config",
            str(config_copy.path),
            "--explain",
            "still waiting for my refund",
        ],
        environ={},
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("complaint (confidence ")
    assert "rule 'money-trouble': 'refund' → complaint" in out


def test_compose_runs_two_processes_on_postgresql_with_secrets_from_the_environment() -> None:
    import yaml

    compose = yaml.safe_load((REPO / "compose.yaml").read_text(encoding="utf-8"))
    db, app = compose["services"]["db"], compose["services"]["carebot"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in db["healthcheck"]["test"]
    assert app["build"] == "."
    assert app["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["deploy"]["replicas"] >= 2  # the scaled set-up the leases make safe
    env = app["environment"]
    assert env["CAREBOT_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert "@db/" in env["CAREBOT_DATABASE_URL"]
    secrets = [k for k in env if any(w in k for w in ("TOKEN", "SECRET", "KEY"))]
    assert secrets
    assert all(str(env[k]).startswith("${") for k in secrets)  # from the environment only
    assert "${CAREBOT_DB_PASSWORD" in db["environment"]["POSTGRES_PASSWORD"]
    assert "./config:/app/config:ro" in app["volumes"]  # where the image reads its config
    assert "ports" not in app  # two replicas cannot share a host port
