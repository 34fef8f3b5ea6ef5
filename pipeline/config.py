"""Run configuration: defaults, environment variables and validation.

Everything a run needs is gathered here once, so the stages below never read the
environment themselves. The API token lives in a :class:`Secret` whose ``repr`` and
``str`` never show the value, so it cannot leak through logs or tracebacks by accident.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.redaction import redact, register_secret

DEFAULT_BASE_URL = "https://api.phaseo.app/v1"
DEFAULT_CONCURRENCY = 16
DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_TIMEOUT_S = 30.0
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

    @classmethod
    def from_env(
        cls,
        base_url: str | None = None,
        concurrency: int | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
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
        )


@dataclass(frozen=True)
class RunConfig:
    db_path: Path
    strict: bool = False
    chunk_size: int = DEFAULT_CHUNK_SIZE
    wait_for_lock_s: float = 0.0
    progress: bool = True
    memory_limit: str = "256MB"
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS
    account: dict[str, str] | None = None  # from the config file; None keeps the stored


# -- the optional config file (TOML) ---------------------------------------------------
CONFIG_ENV = "BILLING_CONFIG"

DEFAULT_ACCOUNT = {
    # FOCUS columns the batch objects do not carry. The gateway sells the models and
    # issues the invoice (FOCUS ProviderName/InvoiceIssuerName); the model's maker is the
    # PublisherName. A user names their own billing account.
    "billing_account_id": "default",
    "billing_account_name": "Phaseo gateway account",
    "invoice_issuer_name": "Phaseo",
    "provider_name": "Phaseo",
}


@dataclass(frozen=True)
class FileConfig:
    """What ``billing.toml`` sets. Every table and key is optional."""

    path: Path | None = None
    account: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ACCOUNT))

    def meta_rows(self) -> list[tuple[str, str]]:
        """``pipeline_meta`` rows the views read (``account.*``)."""
        return [(f"account.{k}", v) for k, v in sorted(self.account.items())]


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
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {redact(str(exc))}") from None
    unknown = sorted(set(data) - {"account"})
    if unknown:
        raise ConfigError(f"config file {path}: unknown table(s) {', '.join(unknown)}")
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
    return FileConfig(path=path, account=account)
