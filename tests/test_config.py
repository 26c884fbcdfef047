"""Config validation as an operator meets it: `carebot check-config` and its messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import X_SECRET_VARS, CarebotFile, load_config
from bot.errors import ConfigError
from bot.reference import comments, default_of, leaves, stated_default
from tests.conftest import REPO, ConfigDir


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def check(
    cfg: ConfigDir, capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None
) -> tuple[int, str]:
    code = main(["check-config", "--config", str(cfg.path)], environ=env or {})
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_shipped_config_is_valid(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(config_copy, capsys)
    assert code == 0
    assert "configuration OK" in out


def test_a_bad_value_names_file_line_and_key(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_copy.path / "carebot.yaml"
    edit(path, "poll_interval: 30s", "poll_interval: soon")
    code, out = check(config_copy, capsys)
    assert code == 1
    line = line_of(path, "poll_interval: soon")
    assert f"{path}:{line}: platforms.x.poll_interval: expected a duration" in out


def test_an_unknown_key_is_an_error(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_copy.path / "carebot.yaml"
    edit(path, "  max_attempts: 8", "  max_attempt: 8")
    code, out = check(config_copy, capsys)
    assert code == 1
    assert f"{path}:{line_of(path, 'max_attempt: 8')}: outbox.max_attempt: unknown key" in out


def test_a_secret_in_yaml_is_refused_and_names_the_variable(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_copy.path / "carebot.yaml"
    edit(path, "    enabled: false\n", "    enabled: false\n    bearer_token: AAAA-secret-value\n")
    code, out = check(config_copy, capsys)
    assert code == 1
    line = line_of(path, "bearer_token:")
    assert (
        f"{path}:{line}: platforms.x.bearer_token: secrets are never read from config files" in out
    )
    assert "CAREBOT_X_BEARER_TOKEN" in out
    assert "AAAA-secret-value" not in out


def test_a_password_in_the_database_url_is_refused(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_copy.path / "carebot.yaml"
    edit(
        path,
        "url: sqlite+aiosqlite:///carebot.db",
        "url: postgresql+asyncpg://care:hunter2@db/care",
    )
    code, out = check(config_copy, capsys)
    assert code == 1
    assert "database.url: the URL holds a password; set CAREBOT_DATABASE_URL" in out
    assert "hunter2" not in out


def test_every_problem_in_every_file_is_listed_at_once(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = config_copy.path / "templates.yaml"
    edit(templates, "your reference is {ref}.", "your reference is soon.")
    escalation = config_copy.path / "escalation.yaml"
    edit(escalation, "notify: kudos", "notify: kudoz")
    rules = config_copy.path / "rules.yaml"
    edit(rules, "\nmin_score: ", "\nmin_score: high #")
    code, out = check(config_copy, capsys)
    assert code == 1
    assert f"{templates}:" in out
    assert "lacks {ref}" in out
    assert (
        f"{escalation}:{line_of(escalation, 'notify: kudoz')}: policies.kudos.steps[0].notify"
        in out
    )
    assert "no staff group named 'kudoz'" in out
    assert f"{rules}:{line_of(rules, 'min_score: high')}: min_score: Input should be" in out


def test_an_invalid_rule_regex_names_its_line(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = config_copy.path / "rules.yaml"
    rules.write_text(
        rules.read_text(encoding="utf-8")
        + "\n  - name: broken-regex\n    regex: '([a-z'\n    weights: {complaint: 1.0}\n",
        encoding="utf-8",
    )
    code, out = check(config_copy, capsys)
    assert code == 1
    assert f"{rules}:{line_of(rules, 'regex: ' + chr(39) + '([a-z')}:" in out
    assert "invalid regex" in out


def test_yaml_syntax_errors_give_the_line(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_copy.path / "escalation.yaml"
    edit(path, "repeat_every: 30m", "repeat_every: [30m")
    code, out = check(config_copy, capsys)
    assert code == 1
    assert f"{path}:" in out
    assert "invalid YAML" in out


def test_a_missing_file_is_named(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    (config_copy.path / "rules.yaml").unlink()
    code, out = check(config_copy, capsys)
    assert code == 1
    assert f"{config_copy.path / 'rules.yaml'}: (file): file not found" in out


def test_x_enabled_without_credentials_names_each_variable(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    config_copy.update(
        "carebot.yaml", sandbox={"enabled": False}, platforms={"x": {"enabled": True}}
    )
    code, out = check(config_copy, capsys, env={"CAREBOT_X_BEARER_TOKEN": "b"})
    assert code == 1
    for var in ("CAREBOT_X_CONSUMER_KEY", "CAREBOT_X_ACCESS_TOKEN_SECRET"):
        assert f"environment: {var}: X is enabled" in out
    assert "environment: CAREBOT_X_BEARER_TOKEN" not in out
    env = dict.fromkeys((*X_SECRET_VARS, "CAREBOT_TELEGRAM_STAFF_TOKEN"), "s3cret")
    config = load_config(config_copy.path, env)
    assert config.x_credentials is not None
    assert "s3cret" not in repr(config.x_credentials)


def test_sandbox_and_real_x_together_is_an_error(config_copy: ConfigDir) -> None:
    config_copy.update("carebot.yaml", platforms={"x": {"enabled": True}})
    with pytest.raises(ConfigError) as caught:
        load_config(config_copy.path, {})
    assert any(
        p.key == "platforms.x.enabled" and "set sandbox.enabled: false" in p.message
        for p in caught.value.problems
    )


def test_the_config_dir_comes_from_the_environment(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check-config"], environ={"CAREBOT_CONFIG_DIR": str(config_copy.path)})
    assert code == 0
    assert str(config_copy.path) in capsys.readouterr().out


def test_the_command_exits_1_from_a_shell(config_copy: ConfigDir) -> None:
    edit(config_copy.path / "carebot.yaml", "page_size: 100", "page_size: 1000")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBOT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(config_copy.path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "platforms.x.page_size: Input should be less than or equal to 100" in proc.stderr


def test_templates_must_fit_x_with_the_configured_brand(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = config_copy.path / "templates.yaml"
    long_text = (
        "Thank you so much, {handle}! " + "Truly, " * 20 + "from all of us at {brand}. ({ref})"
    )
    edit(
        templates,
        '"Thank you so much, {handle}! Kind words like yours mean a lot to us. ({ref})"',
        f'"{long_text}"',
    )
    config_copy.update("carebot.yaml", brand={"name": "会社" * 20})  # 40 wide characters weigh 80
    code, out = check(config_copy, capsys)
    assert code == 1
    line = line_of(templates, "Truly, Truly")
    assert f"{templates}:{line}: acks.praise.default[1]: with brand" in out
    assert "of X's 280 characters" in out


def test_a_bare_domain_is_a_link_and_refused(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = config_copy.path / "templates.yaml"
    edit(templates, "your reference is {ref}.", "your reference is {ref}; see acme.com/help")
    code, out = check(config_copy, capsys)
    assert code == 1
    assert f"{templates}:{line_of(templates, 'acme.com/help')}: acks.complaint.default[0]" in out
    assert "contains a link" in out


def test_an_unknown_platform_in_templates_names_its_own_line(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = config_copy.path / "templates.yaml"
    edit(templates, "  question:\n    default:", "  question:\n    twitter:")
    code, out = check(config_copy, capsys)
    assert code == 1
    assert f"{templates}:{line_of(templates, 'twitter:')}: acks.question.twitter" in out


def test_a_duplicated_key_is_an_error_not_a_silent_override(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_copy.path / "carebot.yaml"
    edit(path, "  pool_size: 5\n", "  pool_size: 5\n  pool_size: 50\n")
    code, out = check(config_copy, capsys)
    assert code == 1
    first = line_of(path, "pool_size: 5")
    assert (
        f"{path}:{first + 1}: (syntax): duplicate key 'pool_size' (first at line {first})" in out
    )


def test_a_wrong_database_url_in_the_environment_is_a_config_error(
    config_copy: ConfigDir, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = check(
        config_copy, capsys, env={"CAREBOT_DATABASE_URL": "postgresql://care:hunter2@db/care"}
    )
    assert code == 1
    assert "environment: CAREBOT_DATABASE_URL: use sqlite+aiosqlite" in out
    assert "hunter2" not in out


def test_an_unreachable_database_stops_start_up_with_exit_3(
    config_copy: ConfigDir, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'carebot.db'}"
    code = main(
        ["migrate", "--config", str(config_copy.path)], environ={"CAREBOT_DATABASE_URL": url}
    )
    err = capsys.readouterr().err
    assert code == 3
    assert "carebot: cannot start: cannot open the database sqlite+aiosqlite:///" in err
    assert "unable to open database file" in err


def test_the_readme_config_reference_is_what_the_command_prints_and_every_key_is_documented(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config-reference", "--config", str(REPO / "config")], environ={}) == 0
    printed = capsys.readouterr().out
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- config-reference -->\n", 1)[1].split("<!-- /config-reference", 1)[0]
    assert block == printed  # regenerate: carebot config-reference --config config
    notes = comments((REPO / "config" / "carebot.yaml").read_text(encoding="utf-8"))
    for path, field in leaves(CarebotFile):
        key = ".".join(path)
        assert notes.get(path), f"config/carebot.yaml has no comment above {key}"
        stated = stated_default(notes[path])
        assert stated is not None, f"{key}: the comment states no default"
        default = default_of(field)
        if not default.startswith(("{", "[")) or default in ("{}", "[]"):
            assert stated.split(" (")[0] == default, f"{key}: comment {stated!r}, code {default!r}"
