"""The gateway's account routes: the price catalogue and the wallet.

``GET /v1/pricing/models`` lists every price in force NOW, with no dates and no service
tier, so the only way to check an old bill against the prices of its day is to keep
dated snapshots of it: :func:`store_catalogue` writes one (table ``catalogue_snapshots``
and its entries in ``catalogue_prices``); the view ``catalogue_price_validity`` dates each
entry from the snapshot that first showed it to the first one that no longer does.
``GET /v1/credits`` is the wallet (balance, money reserved for running batches, available);
:func:`store_credits` keeps each reading with its time (``credit_readings``).

Both answers come from the API (an API run, ``billing prices --fetch``, ``billing credits
--fetch``) or from a saved response file. A missing scope (403) or a route the gateway
does not serve (404, 501) is one line (:class:`RouteUnavailable`), never a failed night.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import duckdb
import orjson

from pipeline.config import ConfigError
from pipeline.redaction import redact

PRICING_PATH = "pricing/models"
CREDITS_PATH = "credits"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a saved catalogue or credits file
MAX_PRICE = Decimal(10) ** 20
_SCOPES = {PRICING_PATH: "PRICING_READ", CREDITS_PATH: "CREDITS_READ"}


class RouteUnavailable(Exception):
    """The gateway did not give this route's answer: one line, nothing stored."""


class BadResponse(ConfigError):
    """A saved or fetched answer that is not the route's shape (exit 2 from a file)."""


def unavailable(path: str, status: int, reason: str) -> RouteUnavailable:
    route = f"GET /v1/{path}"
    if status == 403:
        return RouteUnavailable(
            f"{route}: the API key lacks the {_SCOPES.get(path, 'needed')} scope"
            f" (403 {reason}); nothing recorded"
        )
    if status in (404, 501):
        return RouteUnavailable(
            f"{route}: the gateway does not serve this route ({status} {reason}); nothing recorded"
        )
    return RouteUnavailable(f"{route}: answered {status} ({reason}); nothing recorded")


def read_saved(path: Path) -> Any:
    """A saved response file (the route's JSON body)."""
    if not path.is_file():
        raise ConfigError(f"{path} does not exist or is not a file")
    if path.stat().st_size > MAX_RESPONSE_BYTES:
        raise ConfigError(f"{path} is over 64 MiB: is it the right file?")
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BadResponse(f"{path} is not JSON ({exc})") from None


def _nanos(value: Any, where: str) -> int:
    if isinstance(value, bool) or value is None:
        raise BadResponse(f"{where} must be an integer of nanos, got {value!r}"[:200])
    try:
        n = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise BadResponse(f"{where} must be an integer of nanos, got {value!r}"[:200]) from None
    if abs(n) > 2**63 - 1:
        raise BadResponse(f"{where} is out of range")
    return n


@dataclass(frozen=True)
class CreditReading:
    balance_nanos: int
    reserved_nanos: int
    available_nanos: int
    remaining: str | None
    thirty_day_usage: str | None
    thirty_day_requests: int | None


def parse_credits(body: Any) -> CreditReading:
    """``{ok, credits: {balance_nanos, reserved_nanos, available_nanos, ...}}``."""
    credits = body.get("credits", body) if isinstance(body, dict) else None
    if not isinstance(credits, dict) or "balance_nanos" not in credits:
        raise BadResponse("not a GET /v1/credits answer: no credits.balance_nanos")
    balance = _nanos(credits["balance_nanos"], "credits.balance_nanos")
    reserved = _nanos(credits.get("reserved_nanos", 0), "credits.reserved_nanos")
    available = (
        _nanos(credits["available_nanos"], "credits.available_nanos")
        if credits.get("available_nanos") is not None
        else balance - reserved
    )
    requests = credits.get("thirty_day_requests")

    def text(value: Any) -> str | None:
        return None if value is None else redact(str(value))[:100]

    return CreditReading(
        balance_nanos=balance,
        reserved_nanos=reserved,
        available_nanos=available,
        remaining=text(credits.get("remaining")),
        thirty_day_usage=text(credits.get("thirty_day_usage")),
        thirty_day_requests=requests
        if isinstance(requests, int) and not isinstance(requests, bool)
        else None,
    )


def store_credits(
    con: duckdb.DuckDBPyConnection,
    reading: CreditReading,
    recorded_at: datetime,
    source: str,
    run_id: str,
) -> None:
    con.execute(
        "insert into credit_readings values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        [
            recorded_at, redact(source)[:300], reading.balance_nanos, reading.reserved_nanos,
            reading.available_nanos, reading.remaining, reading.thirty_day_usage,
            reading.thirty_day_requests, run_id,
        ],
    )  # fmt: skip


CATALOGUE_COLUMNS = (
    "provider", "model", "endpoint", "display_name", "meter", "unit", "unit_size",
    "price_per_unit", "unit_price", "unit_price_attousd", "currency", "conditions",
    "billing_timestamp_basis", "time_windows",
)  # fmt: skip


def _short(value: Any, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return redact(text)[:limit]


def parse_catalogue(body: Any) -> tuple[list[tuple[Any, ...]], int]:
    """The entries of ``{ok, models: [{provider, model, ..., meters: [...]}]}``, one row
    per meter (:data:`CATALOGUE_COLUMNS`), and how many had a price that is not a decimal
    (kept, with no unit_price: never skipped)."""
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise BadResponse("not a GET /v1/pricing/models answer: no models list")
    rows: list[tuple[Any, ...]] = []
    unreadable = 0
    for m in models:
        if not isinstance(m, dict):
            unreadable += 1
            continue
        meters = m.get("meters")
        if not isinstance(meters, list):
            unreadable += 1  # a model without a meter list: counted, nothing to keep
            meters = []
        for meter in meters:
            if not isinstance(meter, dict):
                unreadable += 1
                continue
            raw = meter.get("price_per_unit")
            price: Decimal | None
            try:
                price = Decimal(str(raw).strip()) if raw is not None else None
            except InvalidOperation:
                price = None
            if price is not None and (
                not price.is_finite() or abs(price) >= MAX_PRICE or price != round(price, 18)
            ):
                price = None
            size = meter.get("unit_size", 1)
            unit_size = size if isinstance(size, int) and not isinstance(size, bool) else None
            if price is None or unit_size is None or not 0 < unit_size < 10**15:
                unreadable += 1
                price, unit_size = None, unit_size if unit_size and 0 < unit_size < 10**15 else None
            rows.append(
                (
                    _short(m.get("provider")), _short(m.get("model")), _short(m.get("endpoint")),
                    _short(m.get("display_name")), _short(meter.get("meter")),
                    _short(meter.get("unit")), unit_size, _short(raw, 60), price,
                    None if price is None else int(price * 10**18),
                    _short(meter.get("currency"), 10), _short(meter.get("conditions"), 500),
                    _short(meter.get("billing_timestamp_basis"), 60),
                    _short(meter.get("time_windows"), 500),
                )
            )  # fmt: skip
    return rows, unreadable


def store_catalogue(
    con: duckdb.DuckDBPyConnection,
    body: Any,
    taken_at: datetime,
    source: str,
    run_id: str,
) -> tuple[int, int]:
    """One dated snapshot of the catalogue: (entries, entries without a readable price)."""
    rows, unreadable = parse_catalogue(body)
    digest = hashlib.md5(orjson.dumps(rows, default=str), usedforsecurity=False).hexdigest()
    snapshot_id = f"{taken_at:%Y%m%dT%H%M%SZ}-{digest[:8]}"
    con.execute("delete from catalogue_prices where snapshot_id = $1", [snapshot_id])
    con.execute("delete from catalogue_snapshots where snapshot_id = $1", [snapshot_id])
    con.execute(
        "insert into catalogue_snapshots values ($1, $2, $3, $4, $5, $6, $7)",
        [snapshot_id, taken_at, redact(source)[:300], len(rows), unreadable, digest, run_id],
    )
    if rows:
        con.executemany(
            "insert into catalogue_prices values"
            " ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            [(snapshot_id, *row) for row in rows],
        )
    return len(rows), unreadable


def now_utc() -> datetime:
    return datetime.now(UTC)


async def fetch(client: Any, path: str) -> Any:
    """One account route through the API client (its retries and deadline): the body, or
    :class:`RouteUnavailable` for any answer that is not a 200."""
    from pipeline.extract.api import _error_reason

    try:
        resp = await client.get(path)
    except Exception as exc:  # retries exhausted, the run's deadline, a connection error
        raise RouteUnavailable(
            f"GET /v1/{path}: {redact(str(exc) or type(exc).__name__)[:200]}; nothing recorded"
        ) from None
    if resp.status != 200:
        raise unavailable(path, resp.status, _error_reason(resp))
    try:
        return resp.json()
    except ValueError:
        raise RouteUnavailable(
            f"GET /v1/{path}: the answer is not JSON; nothing recorded"
        ) from None
