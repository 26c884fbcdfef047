"""Configuration: four YAML files validated by pydantic, secrets from the environment.

``load_config(directory, environ)`` takes its inputs as arguments (tests pass a dict and a temp
dir). Every problem found is collected and raised together as one ``ConfigError`` whose
problems name the file, the line and the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.classifier import RulesFile
from bot.domain import Category, Platform
from bot.durations import Duration
from bot.errors import ConfigError, Problem
from bot.model import BUILTIN_MODEL, LinearModel, ModelError
from bot.policy import EscalationFile
from bot.templates import TemplatesFile, worst_case
from bot.textlimits import X_MAX_WEIGHTED, contains_url
from bot.yamlload import LocatedYaml, YamlSyntaxError, load_located

CONFIG_DIR_ENV: Final = "CAREBOT_CONFIG_DIR"
DATABASE_URL_ENV: Final = "CAREBOT_DATABASE_URL"
TELEGRAM_WEBHOOK_SECRET_ENV: Final = "CAREBOT_TELEGRAM_WEBHOOK_SECRET"  # noqa: S105 — a name
WEBHOOK_SECRET_ENV: Final = "CAREBOT_WEBHOOK_SECRET"  # noqa: S105 — a variable's name
MASTODON_TOKEN_ENV: Final = "CAREBOT_MASTODON_ACCESS_TOKEN"  # noqa: S105 — a variable's name
STAFF_TOKEN_ENV: Final = "CAREBOT_TELEGRAM_STAFF_TOKEN"  # noqa: S105 — a variable's name
DB_SCHEMES: Final = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
DEFAULT_DATABASE_URL: Final = "sqlite+aiosqlite:///carebot.db"
FILES: Final = ("carebot.yaml", "rules.yaml", "templates.yaml", "escalation.yaml")
ACKED_CATEGORIES: Final = (Category.COMPLAINT, Category.QUESTION, Category.PRAISE)

# Keys that hold secrets, wherever they appear, and the variable that must carry them instead.
SECRET_KEY_RE: Final = re.compile(
    r"(token|secret|password|passwd|api_key|apikey|bearer|consumer_key|private_key)", re.I
)
SECRET_ENV: Final = {
    ("platforms", "x", "bearer_token"): "CAREBOT_X_BEARER_TOKEN",
    ("platforms", "x", "consumer_key"): "CAREBOT_X_CONSUMER_KEY",
    ("platforms", "x", "consumer_secret"): "CAREBOT_X_CONSUMER_SECRET",
    ("platforms", "x", "access_token"): "CAREBOT_X_ACCESS_TOKEN",
    ("platforms", "x", "access_token_secret"): "CAREBOT_X_ACCESS_TOKEN_SECRET",
    ("staff", "token"): "CAREBOT_TELEGRAM_STAFF_TOKEN",
    ("platforms", "mastodon", "access_token"): "CAREBOT_MASTODON_ACCESS_TOKEN",
    ("platforms", "webhook", "secret"): "CAREBOT_WEBHOOK_SECRET",
    ("staff", "telegram_webhook_secret"): "CAREBOT_TELEGRAM_WEBHOOK_SECRET",
    ("database", "password"): "CAREBOT_DATABASE_URL",  # the whole URL, password included
}
X_SECRET_VARS: Final = (
    "CAREBOT_X_BEARER_TOKEN",
    "CAREBOT_X_CONSUMER_KEY",
    "CAREBOT_X_CONSUMER_SECRET",
    "CAREBOT_X_ACCESS_TOKEN",
    "CAREBOT_X_ACCESS_TOKEN_SECRET",
)
_PASSWORD_IN_URL: Final = re.compile(r"://[^/@:]*:[^/@]+@")


KeyPath = tuple[str | int, ...]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrandConfig(_Model):
    """Who we are."""

    name: str = Field(default="Acme", min_length=1, max_length=40)

    @field_validator("name")
    @classmethod
    def _no_link(cls, name: str) -> str:
        if contains_url(name):
            raise ValueError(f"{name!r} reads as a link; acknowledgements are link-free")
        return name


def _at_least(value: timedelta, minimum: timedelta, message: str) -> timedelta:
    if value < minimum:
        raise ValueError(message)
    return value


class DatabaseConfig(_Model):
    """Where tickets live. ``CAREBOT_DATABASE_URL`` overrides ``url``."""

    url: str = DEFAULT_DATABASE_URL
    pool_size: int = Field(default=5, ge=1, le=100)
    # Several processes on one database: a source is polled, and a rate-limited platform
    # sent to, by one process at a time; another takes over within this time if it dies.
    lease_ttl: Duration = timedelta(seconds=15)

    @field_validator("lease_ttl")
    @classmethod
    def _lease_ttl(cls, value: timedelta) -> timedelta:
        return _at_least(value, timedelta(seconds=2), "lease_ttl must be at least 2s")

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str) -> str:
        if _PASSWORD_IN_URL.search(url):
            raise ValueError(
                f"the URL holds a password; set {DATABASE_URL_ENV} in the environment instead"
            )
        if not url.startswith(DB_SCHEMES):
            raise ValueError(
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db"
            )
        return url


class XConfig(_Model):
    """X (Twitter) through tweepy; credentials come from CAREBOT_X_* variables."""

    enabled: bool = False
    api_base_url: str = Field(default="https://api.x.com", pattern=r"^https?://[^\s/]+/?$")
    poll_interval: Duration = timedelta(seconds=30)
    page_size: int = Field(default=100, ge=5, le=100)
    backfill: Duration = timedelta(0)
    request_timeout: Duration = timedelta(seconds=10)


class MastodonConfig(_Model):
    """Mastodon over plain aiohttp; the access token comes from CAREBOT_MASTODON_ACCESS_TOKEN."""

    enabled: bool = False
    api_base_url: str = Field(default="https://mastodon.social", pattern=r"^https?://[^\s/]+/?$")
    request_timeout: Duration = timedelta(seconds=10)
    page_size: int = Field(default=40, ge=1, le=80)


class TelegramConfig(_Model):
    """Customers on Telegram, through the staff chat's bot (CAREBOT_TELEGRAM_STAFF_TOKEN)."""

    enabled: bool = False


class WebhookConfig(_Model):
    """``POST /ingest``: mentions from any system, signed with CAREBOT_WEBHOOK_SECRET."""

    enabled: bool = False
    max_body_bytes: int = Field(default=65_536, ge=1024, le=10_000_000)
    timestamp_tolerance: Duration = timedelta(minutes=5)
    reply_timeout: Duration = timedelta(seconds=10)


class PlatformsConfig(_Model):
    """The real platforms carebot talks to."""

    x: XConfig = Field(default_factory=XConfig)
    mastodon: MastodonConfig = Field(default_factory=MastodonConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)


class RetentionConfig(_Model):
    """How long customers' texts and identities are kept (None: for ever)."""

    days: int | None = Field(default=365, ge=1, le=36500)
    every: Duration = timedelta(hours=1)

    @field_validator("every")
    @classmethod
    def _every(cls, value: timedelta) -> timedelta:
        return _at_least(value, timedelta(minutes=1), "every must be at least 1m")


class HttpConfig(_Model):
    """carebot's own HTTP server (webhooks); CAREBOT_HTTP_HOST / CAREBOT_HTTP_PORT override."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


class SandboxConfig(_Model):
    """Local fake platforms plus generated traffic, for trying carebot without credentials."""

    enabled: bool = True
    traffic_per_minute: float = Field(default=30.0, ge=0, le=600_000)
    seed: int | None = None
    poll_interval: Duration = timedelta(seconds=1)
    live_log: bool = True
    # a storm of complaints about one outage (the checkout) this long after start; null: none
    outage_after: Duration | None = timedelta(seconds=90)
    # how many customers complain in it (over about a minute)
    outage_complaints: int = Field(default=30, ge=1, le=100_000)


class ScreeningConfig(_Model):
    """Authors whose mentions are stored but never answered."""

    bot_accounts: list[str] = Field(default_factory=list)
    blocked_authors: list[str] = Field(default_factory=list)
    max_acks_per_author_per_hour: int = Field(default=3, ge=1, le=1000)


class Quota(_Model):
    """At most ``limit`` sends per ``window`` to one platform."""

    limit: int = Field(ge=1)
    window: Duration

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("window must be longer than 0s")
        return value


def _default_quotas() -> dict[Platform, Quota]:
    # X: POST /2/tweets allows 100 per 15 min per user. Mastodon: 300 requests per 5 min
    # per account for every call, so 20 are left for reading mentions.
    return {
        Platform.X: Quota(limit=100, window=timedelta(minutes=15)),
        Platform.MASTODON: Quota(limit=280, window=timedelta(minutes=5)),
    }


class OutboxConfig(_Model):
    """Delivery of replies and notices."""

    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_base: Duration = timedelta(seconds=2)
    backoff_max: Duration = timedelta(minutes=10)
    batch_size: int = Field(default=20, ge=1, le=500)
    drain_timeout: Duration = timedelta(seconds=10)
    quotas: dict[Platform, Quota] = Field(default_factory=_default_quotas)


class TicketsConfig(_Model):
    """Ticket references."""

    ref_prefix: str = Field(default="CB-", pattern=r"^[A-Z][A-Z0-9]{0,5}-?$")
    reopen_window: Duration = timedelta(days=7)


class StaffGroup(_Model):
    """A Telegram chat where support staff receive ticket cards."""

    name: str = Field(min_length=1)
    chat_id: int
    categories: list[Category] = Field(default_factory=list)


class StaffMember(_Model):
    """A person allowed to act on tickets from the staff chat."""

    name: str = Field(min_length=1)
    telegram_user_id: int
    role: Literal["agent", "lead"] = "agent"


class StaffConfig(_Model):
    """Staff chat; the bot token comes from CAREBOT_TELEGRAM_STAFF_TOKEN."""

    enabled: bool = True
    telegram_api_base_url: str = Field(
        default="https://api.telegram.org", pattern=r"^https?://\S+$"
    )
    telegram_webhook_url: str | None = Field(default=None, pattern=r"^https?://\S+/telegram$")
    sweep_interval: Duration = timedelta(seconds=5)
    groups: list[StaffGroup] = Field(default_factory=list)
    members: list[StaffMember] = Field(default_factory=list)
    # the group (by name) that gets operational alerts, e.g. a refused config reload
    alerts_group: str | None = None

    @model_validator(mode="after")
    def _alerts_group_exists(self) -> StaffConfig:
        names = [g.name for g in self.groups]
        if self.alerts_group is not None and self.alerts_group not in names:
            raise ValueError(
                f"alerts_group {self.alerts_group!r} is not one of the groups: {names}"
            )
        return self

    def chat_of(self, name: str | None) -> int | None:
        """The chat id of the group named ``name`` (None: no such group)."""
        return next((g.chat_id for g in self.groups if g.name == name), None)

    def alerts_chat(self) -> int | None:
        """The alerts group's chat id (None: alerts are logged only)."""
        return next((g.chat_id for g in self.groups if g.name == self.alerts_group), None)


class SurgeConfig(_Model):
    """When similar complaints come in fast enough to be a surge worth an alert."""

    # this many complaints from different customers on one platform sharing a term ...
    threshold: int = Field(default=20, ge=2, le=100_000)
    # ... within this long
    window: Duration = timedelta(minutes=10)
    # a term also common in the complaints of the day before the window is no theme: it must
    # be at least this many times as frequent now
    min_ratio: float = Field(default=3.0, ge=1.0)
    # with less history than the window holds, the share of the window's complaints instead
    min_share: float = Field(default=0.3, gt=0.0, le=1.0)
    # how often complaints are looked at
    every: Duration = timedelta(seconds=30)
    # one alert per theme and platform within this long
    cooldown: Duration = timedelta(hours=6)

    @model_validator(mode="after")
    def _every_within_window(self) -> SurgeConfig:
        if self.every <= timedelta(0) or self.every > self.window:
            raise ValueError("every must be longer than 0s and at most the window")
        return self


class IncidentsConfig(_Model):
    """Crisis mode: surge alerts, incidents that group complaints, follow-ups when fixed."""

    enabled: bool = True
    # the staff group (a name from staff.groups) that gets surge alerts and incident cards;
    # null: staff.alerts_group
    group: str | None = None
    # categories of new mentions linked to a matching incident
    categories: list[Category] = Field(
        default_factory=lambda: [Category.COMPLAINT, Category.QUESTION]
    )
    # platforms where every linked customer receives status updates; elsewhere only those
    # who replied to their acknowledgement
    updates_to_all_on: list[Platform] = Field(default_factory=list)
    # an incident with no news (update, state change) for this long pages the leads again
    remind_every: Duration | None = timedelta(minutes=30)
    surge: SurgeConfig = Field(default_factory=SurgeConfig)


class LoggingConfig(_Model):
    """Log levels."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # per logger, e.g. {bot.outbox: DEBUG}; tweepy and httpx never go below INFO / WARNING
    levels: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = Field(default_factory=dict)
    # json lines, readable text, or auto: JSON unless stderr is a terminal
    format: Literal["auto", "json", "text"] = "auto"


class CarebotFile(_Model):
    """``carebot.yaml``."""

    brand: BrandConfig = Field(default_factory=BrandConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    platforms: PlatformsConfig = Field(default_factory=PlatformsConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    tickets: TicketsConfig = Field(default_factory=TicketsConfig)
    staff: StaffConfig = Field(default_factory=StaffConfig)
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)


@dataclass(frozen=True, slots=True)
class XCredentials:
    """X API credentials (app bearer for reading, OAuth 1.0a user context for posting)."""

    bearer_token: SecretStr
    consumer_key: SecretStr
    consumer_secret: SecretStr
    access_token: SecretStr
    access_token_secret: SecretStr


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration of one carebot process."""

    directory: Path
    carebot: CarebotFile
    rules: RulesFile
    templates: TemplatesFile
    escalation: EscalationFile
    database_url: SecretStr
    x_credentials: XCredentials | None
    telegram_staff_token: SecretStr | None = None
    mastodon_token: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    telegram_webhook_secret: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    model: LinearModel | None = None  # classifier.model in rules.yaml; None: rules alone

    def secret_values(self) -> list[str]:
        """Every secret this process holds, raw and URL-quoted, for the logs to mask."""
        held = [
            s.get_secret_value()
            for s in (
                self.telegram_staff_token,
                self.mastodon_token,
                self.webhook_secret,
                self.telegram_webhook_secret,
            )
            if s is not None
        ]
        if self.x_credentials is not None:
            held += [
                getattr(self.x_credentials, f.name).get_secret_value()
                for f in fields(self.x_credentials)
            ]
        try:
            password = make_url(self.database_url.get_secret_value()).password
        except ArgumentError:
            password = None
        if password:
            held.append(str(password))
        return held + [quote(v, safe="") for v in held if quote(v, safe="") != v]


def config_dir(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path:
    """The config directory: ``--config``, else ``CAREBOT_CONFIG_DIR``, else ``./config``."""
    if explicit:
        return Path(explicit)
    return Path(environ.get(CONFIG_DIR_ENV) or "config")


def _key(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _pop_secrets(
    data: Any,
    path: tuple[str | int, ...],
    located: LocatedYaml,
    name: str,
    problems: list[Problem],
) -> None:
    """Report (and remove) every secret-looking key with a value, wherever it is."""
    if isinstance(data, dict):
        for key in list(data):
            here = (*path, key)
            value = data[key]
            if isinstance(key, str) and SECRET_KEY_RE.search(key) and isinstance(value, str | int):
                if str(value).strip():
                    env = SECRET_ENV.get(here)
                    where = (
                        f"set {env} in the environment"
                        if env
                        else "carebot reads no secret from this key (see the README for the "
                        "environment variables it does read)"
                    )
                    problems.append(
                        Problem(
                            name,
                            located.line_of(here),
                            _key(here),
                            f"secrets are never read from config files; remove it; {where}",
                        )
                    )
                del data[key]
            else:
                _pop_secrets(value, here, located, name, problems)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            _pop_secrets(item, (*path, i), located, name, problems)


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _validate(
    model: type[BaseModel], name: str, located: LocatedYaml, problems: list[Problem]
) -> Any:
    try:
        return model.model_validate(located.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("[")))
            problems.append(Problem(name, located.line_of(loc), _key(loc), _message(err)))
        return None


def _load_file(directory: Path, name: str, problems: list[Problem]) -> LocatedYaml | None:
    path = directory / name
    try:
        located = load_located(path)
    except FileNotFoundError:
        problems.append(Problem(str(path), None, "(file)", "file not found"))
        return None
    except YamlSyntaxError as exc:
        problems.append(Problem(str(path), exc.line, "(syntax)", str(exc)))
        return None
    except OSError as exc:
        problems.append(Problem(str(path), None, "(file)", f"cannot read: {exc.strerror}"))
        return None
    if not isinstance(located.data, dict):
        problems.append(Problem(str(path), 1, "(top level)", "expected a mapping of keys"))
        return None
    _pop_secrets(located.data, (), located, str(path), problems)
    return located


def _template_lengths(
    carebot: CarebotFile, templates: TemplatesFile, add: Callable[[str, KeyPath, str], None]
) -> None:
    """Every customer-facing text fits X with the configured brand name and ticket prefix."""
    sections: list[tuple[tuple[str, ...], Mapping[Any, list[str]]]] = [
        (("acks", name), per_platform) for name, per_platform in templates.acks.items()
    ]
    sections += [
        (("incidents", name), getattr(templates.incidents, name))
        for name in ("ack", "update", "fixed")
    ]
    sections.append((("resolution",), templates.resolution))
    for where, per_platform in sections:
        for key, texts in per_platform.items():
            for i, text in enumerate(texts):
                worst = worst_case(
                    text, brand=carebot.brand.name, ref_prefix=carebot.tickets.ref_prefix
                )
                if worst > X_MAX_WEIGHTED:
                    add(
                        "templates.yaml",
                        (*where, key, i),
                        f"with brand {carebot.brand.name!r} this can reach {worst} of X's "
                        f"{X_MAX_WEIGHTED} characters; shorten it",
                    )


def _cross_checks(
    models: dict[str, Any],
    located: dict[str, LocatedYaml],
    directory: Path,
    problems: list[Problem],
) -> None:
    """Checks that span files; each runs when the files it reads are valid on their own."""

    def add(file: str, path: KeyPath, message: str) -> None:
        problems.append(
            Problem(str(directory / file), located[file].line_of(path), _key(path), message)
        )

    carebot: CarebotFile | None = models.get("carebot.yaml")
    templates: TemplatesFile | None = models.get("templates.yaml")
    escalation: EscalationFile | None = models.get("escalation.yaml")
    if templates is not None:
        for category in ACKED_CATEGORIES:
            if category.value not in templates.acks:
                add("templates.yaml", ("acks",), f"no template set for {category.value!r}")
    if carebot is None:
        return
    if templates is not None:
        _template_lengths(carebot, templates, add)
    for name in ("x", "mastodon"):
        if carebot.sandbox.enabled and getattr(carebot.platforms, name).enabled:
            add(
                "carebot.yaml",
                ("platforms", name, "enabled"),
                f"the sandbox is enabled: set sandbox.enabled: false to talk to the real {name}",
            )
    if escalation is not None:
        _escalation_refs(carebot, escalation, add)
    if carebot.platforms.telegram.enabled and not carebot.staff.enabled:
        add(
            "carebot.yaml",
            ("platforms", "telegram", "enabled"),
            "Telegram customers write to the staff chat's bot: set staff.enabled: true too",
        )
    incidents = carebot.incidents
    groups = [g.name for g in carebot.staff.groups]
    if incidents.group is not None and incidents.group not in groups:
        add(
            "carebot.yaml",
            ("incidents", "group"),
            f"no staff group named {incidents.group!r} (groups: {', '.join(groups) or 'none'})",
        )
    if (
        incidents.enabled
        and carebot.staff.enabled
        and incidents.group is None
        and carebot.staff.alerts_group is None
    ):
        add(
            "carebot.yaml",
            ("incidents", "group"),
            "surge alerts need a staff group: set incidents.group or staff.alerts_group "
            "(or incidents.enabled: false)",
        )
    days = carebot.retention.days
    if days is not None and timedelta(days=days) <= carebot.tickets.reopen_window:
        add(
            "carebot.yaml",
            ("retention", "days"),
            f"must be longer than tickets.reopen_window ({carebot.tickets.reopen_window}): "
            "a customer's follow-up could not find the ticket it reopens",
        )


def model_path(rules: RulesFile, directory: Path) -> Path | None:
    """Where ``classifier.model`` points (relative to ``directory``); None for builtin/none."""
    name = rules.classifier.model
    if name.lower() in (BUILTIN_MODEL, "none"):
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() else directory / path


def _load_model(
    rules: RulesFile,
    located: dict[str, LocatedYaml],
    directory: Path,
    problems: list[Problem],
) -> LinearModel | None:
    """Load the model ``classifier.model`` names; a problem names the key's line."""
    name = rules.classifier.model
    try:
        if name.lower() == "none":
            return None
        path = model_path(rules, directory)
        return LinearModel.builtin() if path is None else LinearModel.load(path)
    except ModelError as exc:
        key = ("classifier", "model")
        line = located["rules.yaml"].line_of(key)
        hint = " (write one with `carebot train`)" if "cannot read" in str(exc) else ""
        problems.append(Problem(str(directory / "rules.yaml"), line, _key(key), f"{exc}{hint}"))
        return None


def _escalation_refs(
    carebot: CarebotFile, escalation: EscalationFile, add: Callable[[str, KeyPath, str], None]
) -> None:
    """Policies name staff groups and people that carebot.yaml defines."""
    groups = {g.name for g in carebot.staff.groups}
    members = {m.name for m in carebot.staff.members}
    for policy_name, policy in escalation.policies.items():
        for i, step in enumerate(policy.steps):
            here = ("policies", policy_name, "steps", i)
            if groups and step.notify not in groups:
                add(
                    "escalation.yaml",
                    (*here, "notify"),
                    f"no staff group named {step.notify!r} in carebot.yaml "
                    f"(groups: {', '.join(sorted(groups))})",
                )
            for who in step.mention:
                if who not in members:
                    add("escalation.yaml", (*here, "mention"), f"no staff member named {who!r}")


def _webhook_secret(
    carebot: CarebotFile, environ: Mapping[str, str], problems: list[Problem]
) -> SecretStr | None:
    secret = environ.get(WEBHOOK_SECRET_ENV)
    if secret:
        if len(secret) < 16:
            problems.append(
                Problem("environment", None, WEBHOOK_SECRET_ENV, "use at least 16 characters")
            )
        return SecretStr(secret)
    if carebot.platforms.webhook.enabled and not carebot.sandbox.enabled:
        problems.append(
            Problem(
                "environment",
                None,
                WEBHOOK_SECRET_ENV,
                "the webhook is enabled (platforms.webhook.enabled) but this is unset",
            )
        )
    return None


def _telegram_webhook_secret(
    carebot: CarebotFile, environ: Mapping[str, str], problems: list[Problem]
) -> SecretStr | None:
    if not carebot.staff.telegram_webhook_url:
        return None
    secret = environ.get(TELEGRAM_WEBHOOK_SECRET_ENV, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", secret):
        problems.append(
            Problem(
                "environment",
                None,
                TELEGRAM_WEBHOOK_SECRET_ENV,
                "staff.telegram_webhook_url is set: give 16-256 characters of A-Z a-z 0-9 _ -",
            )
        )
        return None
    return SecretStr(secret)


def _http_address(
    carebot: CarebotFile, environ: Mapping[str, str], problems: list[Problem]
) -> tuple[str, int]:
    host = environ.get("CAREBOT_HTTP_HOST") or carebot.http.host
    port = carebot.http.port
    raw = environ.get("CAREBOT_HTTP_PORT")
    if raw:
        if raw.isdigit() and int(raw) <= 65535:
            port = int(raw)
        else:
            problems.append(Problem("environment", None, "CAREBOT_HTTP_PORT", "not a port number"))
    return host, port


def _mastodon_token(
    carebot: CarebotFile, environ: Mapping[str, str], problems: list[Problem]
) -> SecretStr | None:
    token = environ.get(MASTODON_TOKEN_ENV)
    if carebot.platforms.mastodon.enabled and not carebot.sandbox.enabled and not token:
        problems.append(
            Problem(
                "environment",
                None,
                MASTODON_TOKEN_ENV,
                "Mastodon is enabled (platforms.mastodon.enabled) but this is unset",
            )
        )
    return SecretStr(token) if token else None


def _staff_token(
    carebot: CarebotFile, environ: Mapping[str, str], problems: list[Problem]
) -> SecretStr | None:
    token = environ.get(STAFF_TOKEN_ENV)
    if token:
        return SecretStr(token)
    if carebot.staff.enabled and not carebot.sandbox.enabled:
        problems.append(
            Problem(
                "environment",
                None,
                STAFF_TOKEN_ENV,
                "the staff chat is enabled (staff.enabled) but this is unset",
            )
        )
    return None


def _secrets(
    carebot: CarebotFile, environ: Mapping[str, str], problems: list[Problem]
) -> tuple[SecretStr, XCredentials | None]:
    db_url = environ.get(DATABASE_URL_ENV) or carebot.database.url
    if not db_url.startswith(DB_SCHEMES):
        problems.append(
            Problem(
                "environment",
                None,
                DATABASE_URL_ENV,
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user:password@host/db",
            )
        )
    x_creds = None
    if carebot.platforms.x.enabled and not carebot.sandbox.enabled:
        missing = [var for var in X_SECRET_VARS if not environ.get(var)]
        for var in missing:
            problems.append(
                Problem(
                    "environment",
                    None,
                    var,
                    "X is enabled (platforms.x.enabled) but this is unset",
                )
            )
        if not missing:
            x_creds = XCredentials(*(SecretStr(environ[var]) for var in X_SECRET_VARS))
    return SecretStr(db_url), x_creds


def load_config(directory: Path, environ: Mapping[str, str], *, with_model: bool = True) -> Config:
    """Load and validate the four config files in ``directory`` and the environment.

    ``with_model=False`` leaves the learned model unloaded (``carebot train`` writes it).

    Raises:
        ConfigError: listing every problem, each as ``file:line: key: message``.
    """
    problems: list[Problem] = []
    located: dict[str, LocatedYaml] = {}
    for name in FILES:
        loaded = _load_file(directory, name, problems)
        if loaded is not None:
            located[name] = loaded
    models: dict[str, Any] = {}
    kinds: tuple[type[BaseModel], ...] = (CarebotFile, RulesFile, TemplatesFile, EscalationFile)
    for name, model in zip(FILES, kinds, strict=True):
        if name in located:
            models[name] = _validate(model, str(directory / name), located[name], problems)
    carebot, rules, templates, escalation = (models.get(name) for name in FILES)
    _cross_checks(models, located, directory, problems)
    linear = _load_model(rules, located, directory, problems) if rules and with_model else None
    db_url, x_creds = _secrets(carebot, environ, problems) if carebot else (SecretStr(""), None)
    staff_token = _staff_token(carebot, environ, problems) if carebot else None
    mastodon_token = _mastodon_token(carebot, environ, problems) if carebot else None
    webhook_secret = _webhook_secret(carebot, environ, problems) if carebot else None
    tg_secret = _telegram_webhook_secret(carebot, environ, problems) if carebot else None
    host, port = _http_address(carebot, environ, problems) if carebot else ("", 0)
    if problems or carebot is None or rules is None or templates is None or escalation is None:
        raise ConfigError(problems)
    return Config(
        directory=directory,
        carebot=carebot,
        rules=rules,
        templates=templates,
        escalation=escalation,
        database_url=db_url,
        x_credentials=x_creds,
        telegram_staff_token=staff_token,
        mastodon_token=mastodon_token,
        webhook_secret=webhook_secret,
        telegram_webhook_secret=tg_secret,
        http_host=host,
        http_port=port,
        model=linear,
    )
