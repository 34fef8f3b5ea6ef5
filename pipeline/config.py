"""Run configuration: defaults, environment variables and validation.

Everything a run needs is gathered here once, so the stages below never read the
environment themselves. The API token lives in a :class:`Secret` whose ``repr`` and
``str`` never show the value, so it cannot leak through logs or tracebacks by accident.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.redaction import redact, register_secret

DEFAULT_BASE_URL = "https://api.phaseo.app/v1"
DEFAULT_CONCURRENCY = 16
DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_API_DEADLINE_S = 3600.0  # the whole API part of a run (fetches, retries, lists)
DEFAULT_MAX_RETRIES = 5
DEFAULT_KEEP_SNAPSHOTS = 7
TOKEN_ENV = "PHASEO_API_KEY"
BASE_URL_ENV = "PHASEO_BASE_URL"


_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header can carry


class ConfigError(Exception):
    """A usage or configuration problem: the CLI exits 2 with this message."""


class Secret:
    """A string that never shows itself in ``repr``/``str`` (logs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class ApiConfig:
    base_url: str = DEFAULT_BASE_URL
    token: Secret = field(default_factory=lambda: Secret(""))
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_after_s: float = 120.0
    deadline_s: float = DEFAULT_API_DEADLINE_S

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        concurrency: int | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        deadline_s: float | None = None,
    ) -> ApiConfig:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise ConfigError(f"no API token: set {TOKEN_ENV} to fetch batches from the gateway")
        register_secret(token)
        if not _TOKEN.fullmatch(token):
            raise ConfigError(
                f"{TOKEN_ENV} holds spaces, line breaks or control characters (a stray "
                "newline from a file?); fix the variable, the token was not used"
            )
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base URL must start with http:// or https://, got {redact(url)[:200]!r}"
            )
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError(f"base URL is not a valid URL: {redact(url)[:200]!r}") from None
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                "base URL must not hold credentials (user:password@): "
                f"the token goes in {TOKEN_ENV}"
            )
        if parts.query or parts.fragment or not parts.hostname:
            raise ConfigError(
                f"base URL must be scheme://host[:port]/path, got {redact(url)[:200]!r}"
            )
        conc = DEFAULT_CONCURRENCY if concurrency is None else concurrency
        if conc < 1:
            raise ConfigError("--concurrency must be at least 1")
        return cls(
            base_url=url,
            token=Secret(token),
            concurrency=conc,
            timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
            max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
            deadline_s=DEFAULT_API_DEADLINE_S if deadline_s is None else deadline_s,
        )


@dataclass(frozen=True)
class RunConfig:
    db_path: Path
    strict: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    wait_for_lock_s: float = 0.0
    progress: bool = True
    memory_limit: str = "512MB"
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS
    settings: FileConfig | None = None  # the config file's; None keeps what is stored


# -- the optional config file (TOML) ---------------------------------------------------
CONFIG_ENV = "BILLING_CONFIG"
NANOS_PER_USD = 10**9  # money is integer nano-USD everywhere
MAX_CONFIG_BYTES = 1024 * 1024
MAX_PRICE_LIST_BYTES = 64 * 1024 * 1024

DEFAULT_ACCOUNT = {
    # FOCUS columns the batch objects do not carry. The gateway sells the models and
    # issues the invoice (FOCUS ProviderName/InvoiceIssuerName); the model's maker is the
    # PublisherName. A user names their own billing account.
    "billing_account_id": "default",
    "billing_account_name": "Phaseo gateway account",
    "invoice_issuer_name": "Phaseo",
    "provider_name": "Phaseo",
}


DEFAULT_THRESHOLDS = (80, 100)


@dataclass(frozen=True)
class Budget:
    """A spend limit per day or month on a scope (every filter given must match)."""

    name: str
    period: str  # "day" | "month"
    limit_nanos: int
    provider: str | None = None
    model: str | None = None
    session_id: str | None = None
    tag_key: str | None = None
    tag_value: str | None = None
    kind: str = "spend"  # "spend": limit_nanos a period; "runway": min_days of wallet left
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS  # % of the limit a notification is sent at
    min_days: Decimal | None = None  # a runway budget: alert below this many days

    def row(self) -> tuple[object, ...]:
        return (
            self.name,
            self.period,
            self.limit_nanos,
            self.provider,
            self.model,
            self.session_id,
            self.tag_key,
            self.tag_value,
            self.kind,
            list(self.thresholds),
            self.min_days,
        )


@dataclass(frozen=True)
class Price:
    """One entry of the user's price list: what a line should cost per ``unit_size``."""

    provider: str
    dimension: str
    unit_price_nanos: int
    model: str | None = None  # None: any model
    pricing_plan: str | None = None  # None: any plan
    unit_size: int | None = None  # None: the line's own unit size
    effective_from: date | None = None
    effective_to: date | None = None  # exclusive
    source: str = ""

    def row(self) -> tuple[object, ...]:
        return (
            self.provider,
            self.model,
            self.dimension,
            self.pricing_plan,
            self.unit_size,
            self.unit_price_nanos,
            self.effective_from,
            self.effective_to,
            self.source,
        )


@dataclass(frozen=True)
class FileConfig:
    """What ``billing.toml`` sets. Every table and key is optional; a part the file does
    not set (None) keeps what an earlier run stored."""

    path: Path | None = None
    account: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ACCOUNT))
    budgets: tuple[Budget, ...] | None = None
    tags: tuple[str, ...] | None = None
    prices: tuple[Price, ...] | None = None
    notify: NotifyConfig | None = None  # never stored: its URLs and secrets stay here


@dataclass(frozen=True)
class Endpoint:
    """Where notifications go. The URL (a webhook URL is itself a credential) and the
    signing secret are read from the environment when given as ``url_env``/``secret_env``,
    and are never stored, logged or shown: the endpoint is known by its name."""

    name: str
    format: str  # "slack" ({"text": ...}, Slack-compatible) | "json" (every field)
    url: Secret | None = None
    url_env: str | None = None
    secret_env: str | None = None  # HMAC-SHA256 signature of "{timestamp}.{body}"


@dataclass(frozen=True)
class NotifyConfig:
    endpoints: tuple[Endpoint, ...] = ()
    report_url: str | None = None  # the pointer in each message (else the report command)
    timeout_s: float = 10.0  # one attempt, the whole response
    total_timeout_s: float = 60.0  # every delivery of one check together
    max_retries: int = 3  # per message, on 429/5xx/connection errors


_KNOWN_TABLES = ("account", "attribution", "budget", "budgets", "notify", "prices")
_BUDGET_KEYS = (
    "name", "period", "limit_usd", "provider", "model", "session", "tag", "kind",
    "thresholds", "min_days",
)  # fmt: skip
_PRICE_KEYS = (
    "provider",
    "model",
    "dimension",
    "plan",
    "unit_size",
    "unit_price_usd",
    "effective_from",
    "effective_to",
)


MAX_NANOS = 2**63 - 1  # a BIGINT of nanos
MAX_UNIT_SIZE = 10**15  # price_checks computes in exact integers up to here


def usd_to_nanos(value: object, where: str) -> int:
    """An exact dollar amount (a string like "12.50", or an integer) in nano-USD."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f'{where} must be a dollar amount like "12.50"')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(f'{where} must be a dollar amount like "12.50"') from None
    if not amount.is_finite():  # NaN, sNaN, Infinity: before any arithmetic
        raise ConfigError(f"{where} must be a non-negative amount with at most 9 decimals")
    nanos = amount * NANOS_PER_USD
    if nanos != nanos.to_integral_value() or amount < 0:
        raise ConfigError(f"{where} must be a non-negative amount with at most 9 decimals")
    if nanos > MAX_NANOS:
        raise ConfigError(f"{where} must be at most $9,223,372,036.854775807 (a 64-bit nanos)")
    return int(nanos)


def _optional(value: object, where: str) -> str | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "*")):
        return None
    return _text(value, where)


def _date(value: object, where: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise ConfigError(f"{where} must be a date YYYY-MM-DD") from None


_BUDGET_ALIASES = {
    "limit": "limit_usd",
    "amount_usd": "limit_usd",
    "session_id": "session",
    "thresholds_pct": "thresholds",
    "alert_at": "thresholds",
    "notify_at": "thresholds",
    "runway_days": "min_days",
    "min_runway_days": "min_days",
}
_PRICE_ALIASES = {
    "pricing_plan": "plan",
    "price_usd": "unit_price_usd",
    "valid_from": "effective_from",
    "valid_to": "effective_to",
}
_PERIODS = {"day": "day", "daily": "day", "month": "month", "monthly": "month"}


def _canonical(item: dict[str, object], aliases: dict[str, str], where: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in item.items():
        name = aliases.get(key, key)
        if name in out:
            raise ConfigError(f"{where}: {name} is given twice ({key})")
        out[name] = value
    return out


def _budget(item: object, n: int, path: Path) -> Budget:
    where = f"budget #{n} in {path}"
    if not isinstance(item, dict):
        raise ConfigError(f"{where} must be a table ([[budget]])")
    item = _canonical(item, _BUDGET_ALIASES, where)
    tag_table = item.get("tag")
    if isinstance(tag_table, dict) and len(tag_table) == 1:  # tag = {team = "research"}
        ((key, value),) = tag_table.items()
        item["tag"] = f"{key}={value}"
    unknown = sorted(set(item) - set(_BUDGET_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    period = _PERIODS.get(str(item.get("period", "month")))
    if period is None:
        raise ConfigError(f'{where}: period must be "day" or "month", got {item.get("period")!r}')
    kind = str(item.get("kind", "spend"))
    if kind not in ("spend", "runway"):
        raise ConfigError(f'{where}: kind must be "spend" or "runway", got {kind!r}')
    thresholds = _thresholds(item.get("thresholds"), where)
    if kind == "runway":
        return _runway_budget(item, where, thresholds)
    if "min_days" in item:
        raise ConfigError(f'{where}: min_days goes with kind = "runway"')
    if "limit_usd" not in item:
        raise ConfigError(f"{where}: limit_usd is required")
    tag_key = tag_value = None
    if item.get("tag") is not None:
        tag = _text(item["tag"], f"{where}: tag")
        tag_key, sep, tag_value = tag.partition("=")
        if not sep or not tag_key.strip():
            raise ConfigError(f"{where}: tag must look like team=research, got {tag!r}")
        tag_key, tag_value = tag_key.strip(), tag_value.strip()
    provider = _optional(item.get("provider"), f"{where}: provider")
    model = _optional(item.get("model"), f"{where}: model")
    session = _optional(item.get("session"), f"{where}: session")
    scope = ", ".join(
        f"{k}={v}" for k, v in (("provider", provider), ("model", model), ("session", session)) if v
    )
    if tag_key:
        scope = ", ".join(filter(None, [scope, f"{tag_key}={tag_value}"]))
    default_name = f"{period}ly {scope or 'all spend'}".replace("dayly", "daily")
    return Budget(
        name=_text(item.get("name", default_name), f"{where}: name"),
        period=period,
        limit_nanos=usd_to_nanos(item["limit_usd"], f"{where}: limit_usd"),
        provider=provider,
        model=model,
        session_id=session,
        tag_key=tag_key,
        tag_value=tag_value,
        thresholds=thresholds,
    )


def _thresholds(value: object, where: str) -> tuple[int, ...]:
    if value is None:
        return DEFAULT_THRESHOLDS
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(t, int) and not isinstance(t, bool) for t in value)
        or not all(1 <= t <= 1000 for t in value)
    ):
        raise ConfigError(f"{where}: thresholds must be a list of percentages like [50, 80, 100]")
    return tuple(sorted(set(value)))


def _runway_budget(item: dict[str, object], where: str, thresholds: tuple[int, ...]) -> Budget:
    """kind = "runway": alert when the wallet's runway (days left at the trailing 7- and
    30-day spend rate, the shorter) drops below min_days; one alert a month."""
    unknown = sorted(set(item) - {"name", "kind", "min_days", "period"})
    if unknown:
        raise ConfigError(
            f"{where}: a runway budget takes name and min_days, not {', '.join(unknown)}"
        )
    try:
        min_days = Decimal(str(item.get("min_days", "")).strip())
    except InvalidOperation:
        min_days = Decimal("NaN")
    if not min_days.is_finite() or not 0 < min_days <= 100_000:
        raise ConfigError(f"{where}: min_days must be a number of days from 0 to 100000")
    return Budget(
        name=_text(item.get("name", f"runway under {min_days} days"), f"{where}: name"),
        period="month",
        limit_nanos=0,
        kind="runway",
        thresholds=(100,),
        min_days=min_days.quantize(Decimal("0.1")),
    )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_NOTIFY_KEYS = ("report_url", "timeout_s", "total_timeout_s", "max_retries", "endpoint")
_ENDPOINT_KEYS = ("name", "url", "url_env", "format", "secret_env")


def _seconds(value: object, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{where} must be a number of seconds from {low:g} to {high:g}")
    return float(value)


_ENDPOINT_ALIASES = {
    "type": "format",
    "kind": "format",
    "webhook_url": "url",
    "webhook_url_env": "url_env",
    "env": "url_env",
    "signing_secret_env": "secret_env",
}
_ENDPOINT_ALIASES.update({k: k for k in _ENDPOINT_KEYS})
_NOTIFY_ALIASES = {"endpoints": "endpoint", "webhook": "endpoint", "webhooks": "endpoint"}


def _notify(table: object, path: Path) -> NotifyConfig:
    """[notify] with [[notify.endpoint]] tables: where `billing check` posts findings.
    Also read: [[notify]] tables (each an endpoint, settings from the first), and a
    [notify] table that is itself the one endpoint (it has url or url_env)."""
    if isinstance(table, list):  # [[notify]]: each table an endpoint
        if not all(isinstance(t, dict) for t in table):
            raise ConfigError(f"config file {path}: [[notify]] entries must be tables")
        first = dict(table[0]) if table else {}
        settings = {k: first.pop(k) for k in list(first) if k in _NOTIFY_KEYS}
        table = {**settings, "endpoint": [first, *table[1:]] if first or table else []}
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [notify] must be a table")
    table = _canonical(table, _NOTIFY_ALIASES, f"[notify] in {path}")
    inline = {k: table.pop(k) for k in list(table) if k in _ENDPOINT_ALIASES}
    if inline:  # [notify] url_env = ...: the table is the one endpoint
        if "endpoint" in table:
            raise ConfigError(
                f"config file {path}: give the endpoint in [notify] or as"
                " [[notify.endpoint]] tables, not both"
            )
        table["endpoint"] = [inline]
    unknown = sorted(set(table) - set(_NOTIFY_KEYS))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) notify.{', notify.'.join(unknown)}")
    items = table.get("endpoint", [])
    if not isinstance(items, list):
        raise ConfigError(f"config file {path}: endpoints are [[notify.endpoint]] tables")
    endpoints = []
    for n, given in enumerate(items, start=1):
        where = f"notify.endpoint #{n} in {path}"
        if not isinstance(given, dict):
            raise ConfigError(f"{where} must be a table")
        item: dict[str, Any] = _canonical(given, _ENDPOINT_ALIASES, where)
        bad = sorted(set(item) - set(_ENDPOINT_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}")
        if ("url" in item) == ("url_env" in item):
            raise ConfigError(f"{where}: give url_env (an environment variable) or url")
        url = None
        if "url" in item:
            text = item["url"]
            if not isinstance(text, str) or not text.startswith(("http://", "https://")):
                raise ConfigError(f"{where}: url must start with http:// or https://")
            register_secret(text)  # a webhook URL is a credential: never shown
            url = Secret(text)
        for key in ("url_env", "secret_env"):
            if key in item and not (isinstance(item[key], str) and _ENV_NAME.fullmatch(item[key])):
                raise ConfigError(f"{where}: {key} must name an environment variable")
        fmt = str(item.get("format", "json"))
        if fmt not in ("slack", "json"):
            raise ConfigError(f'{where}: format must be "slack" or "json", got {fmt!r}')
        endpoints.append(
            Endpoint(
                name=_text(item.get("name", f"endpoint-{n}"), f"{where}: name", 80),
                format=fmt,
                url=url,
                url_env=item.get("url_env"),
                secret_env=item.get("secret_env"),
            )
        )
    if len({e.name for e in endpoints}) != len(endpoints):
        raise ConfigError(f"config file {path}: two notify endpoints have the same name")
    report_url = table.get("report_url")
    return NotifyConfig(
        endpoints=tuple(endpoints),
        report_url=None
        if report_url is None
        else _text(report_url, f"notify.report_url in {path}", 500),
        timeout_s=_seconds(table.get("timeout_s", 10.0), f"notify.timeout_s in {path}", 0.05, 600),
        total_timeout_s=_seconds(
            table.get("total_timeout_s", 60.0), f"notify.total_timeout_s in {path}", 0.1, 3600
        ),
        max_retries=_retries(table.get("max_retries", 3), f"notify.max_retries in {path}"),
    )


def _retries(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise ConfigError(f"{where} must be a whole number from 0 to 10")
    return value


def _price(item: dict[str, object], where: str, source: str) -> Price:
    item = _canonical(item, _PRICE_ALIASES, where)
    unknown = sorted(set(item) - set(_PRICE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("provider", "dimension", "unit_price_usd"):
        if item.get(key) in (None, ""):
            raise ConfigError(f"{where}: {key} is required")
    unit_size: int | None = None
    if item.get("unit_size") not in (None, ""):
        try:
            unit_size = int(str(item["unit_size"]).strip())
        except ValueError:
            raise ConfigError(f"{where}: unit_size must be a whole number") from None
        if not 1 <= unit_size <= MAX_UNIT_SIZE:
            raise ConfigError(f"{where}: unit_size must be from 1 to {MAX_UNIT_SIZE:,}")
    start = _date(item.get("effective_from"), f"{where}: effective_from")
    end = _date(item.get("effective_to"), f"{where}: effective_to")
    if start and end and end <= start:
        raise ConfigError(f"{where}: effective_to must be after effective_from")
    return Price(
        provider=_text(item["provider"], f"{where}: provider"),
        model=_optional(item.get("model"), f"{where}: model"),
        dimension=_text(item["dimension"], f"{where}: dimension"),
        pricing_plan=_optional(item.get("plan"), f"{where}: plan"),
        unit_size=unit_size,
        unit_price_nanos=usd_to_nanos(item["unit_price_usd"], f"{where}: unit_price_usd"),
        effective_from=start,
        effective_to=end,
        source=source,
    )


def _prices(table: object, path: Path) -> tuple[Price, ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [prices] must be a table")
    unknown = sorted(set(table) - {"file", "price"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) prices.{', prices.'.join(unknown)}")
    out: list[Price] = []
    if table.get("file") is not None:
        csv_path = path.parent / _text(table["file"], f"prices.file in {path}")
        if not csv_path.is_file():
            raise ConfigError(f"price list {csv_path} (prices.file in {path}) does not exist")
        if csv_path.stat().st_size > MAX_PRICE_LIST_BYTES:
            raise ConfigError(f"price list {csv_path} is over 64 MiB: is it the right file?")
        try:
            text = csv_path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"price list {csv_path} is not UTF-8 text") from None
        reader = csv.DictReader(io.StringIO(text), strict=True)
        try:
            fields = {_PRICE_ALIASES.get(f.strip(), f.strip()) for f in reader.fieldnames or []}
            missing = {"provider", "dimension", "unit_price_usd"} - fields
            if missing:
                raise ConfigError(
                    f"price list {csv_path} lacks column(s) {', '.join(sorted(missing))} "
                    f"(columns: {', '.join(_PRICE_KEYS)})"
                )
            for n, row in enumerate(reader, start=2):
                clean = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                out.append(_price(clean, f"price list {csv_path} line {n}", f"{csv_path.name}:{n}"))
        except csv.Error as exc:  # an open quote, a field over the csv module's limit
            raise ConfigError(
                f"price list {csv_path} near line {reader.line_num + 1}: not readable CSV ({exc})"
            ) from None
    items = table.get("price", [])
    if not isinstance(items, list):
        raise ConfigError(f"config file {path}: prices.price must be [[prices.price]] tables")
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ConfigError(f"config file {path}: prices.price #{n} must be a table")
        out.append(_price(item, f"prices.price #{n} in {path}", f"{path.name}#{n}"))
    return tuple(out)


def _tags(table: object, path: Path) -> tuple[str, ...]:
    if not isinstance(table, dict) or set(table) - {"tags"}:
        raise ConfigError(f"config file {path}: [attribution] takes one key, tags = [...]")
    tags = table.get("tags", [])
    if not isinstance(tags, list):
        raise ConfigError(f"config file {path}: attribution.tags must be a list of keys")
    return tuple(dict.fromkeys(_text(t, f"attribution.tags in {path}") for t in tags))


def _text(value: object, where: str, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    if len(value) > limit or any(ord(c) < 32 for c in value):
        raise ConfigError(f"{where} must be one line of at most {limit} characters")
    if redact(value) != value:
        raise ConfigError(f"{where} looks like a credential; it would be shown in every export")
    return value.strip()


def load_config_file(path: Path | None) -> FileConfig:
    """Read ``path`` (or ``$BILLING_CONFIG``); no file means the defaults."""
    import tomllib

    if path is None:
        env = os.environ.get(CONFIG_ENV, "").strip()
        if not env:
            return FileConfig()
        path = Path(env)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over 1 MiB: is it the right file?")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {redact(str(exc))}") from None
    unknown = sorted(set(data) - set(_KNOWN_TABLES))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown table(s) {', '.join(unknown)} "
            f"(known: {', '.join(_KNOWN_TABLES)})"
        )
    account = dict(DEFAULT_ACCOUNT)
    given = data.get("account", {})
    if not isinstance(given, dict):
        raise ConfigError(f"config file {path}: [account] must be a table")
    for key, value in given.items():
        if key not in DEFAULT_ACCOUNT:
            raise ConfigError(
                f"config file {path}: unknown key account.{key} "
                f"(known: {', '.join(DEFAULT_ACCOUNT)})"
            )
        account[key] = _text(value, f"account.{key} in {path}")
    if "budgets" in data:  # [[budgets]] is read as [[budget]]
        if "budget" in data:
            raise ConfigError(f"config file {path}: use [[budget]] or [[budgets]], not both")
        data["budget"] = data.pop("budgets")
    budgets = None
    if "budget" in data:
        items = data["budget"]
        if not isinstance(items, list):
            raise ConfigError(f"config file {path}: budgets are [[budget]] tables, a list")
        budgets = tuple(_budget(item, n, path) for n, item in enumerate(items, start=1))
        names = [b.name for b in budgets]
        if len(set(names)) != len(names):
            raise ConfigError(f"config file {path}: two budgets have the same name")
    tags = _tags(data["attribution"], path) if "attribution" in data else None
    prices = _prices(data["prices"], path) if "prices" in data else None
    notify = _notify(data["notify"], path) if "notify" in data else None
    return FileConfig(
        path=path, account=account, budgets=budgets, tags=tags, prices=prices, notify=notify
    )
