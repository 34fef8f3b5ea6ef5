"""`billing prices` and `billing credits`: the gateway's price catalogue and wallet, kept
dated in the database (from the API, or offline from a saved response)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import duckdb

from pipeline import account
from pipeline.cli import (
    EXIT_INCOMPLETE,
    cli,
    db_option,
    format_option,
    friendly_errors,
    require_views,
    wait_option,
    wallet_line,
)
from pipeline.config import ApiConfig, ConfigError
from pipeline.load import Loader, create_views, reader
from pipeline.redaction import redact
from pipeline.report import FORMATS, json_rows, printable, usd_cents
from pipeline.runner import new_run_id
from pipeline.store import check_db_path


def _as_of(value: str | None) -> datetime:
    """--as-of: when a saved response was taken (a date is its midnight UTC)."""
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--as-of must be a date or time like 2026-11-15 or 2026-11-15T08:00Z, got {value!r}"
        ) from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _answer(
    path: str, file: Path | None, fetch: bool, base_url: str | None, as_of: str | None
) -> tuple[Any, str]:
    """The route's body: from the saved file, or fetched (one line when not served)."""
    if (file is None) == (not fetch):
        raise ConfigError("give --fetch (the API) or --file (a saved response), not both")
    if as_of is not None and fetch:
        raise ConfigError("--as-of dates a --file; a fetched answer is dated now")
    if file is not None:
        return account.read_saved(file), str(file)
    from pipeline.extract.api import Client

    api = ApiConfig.from_env(base_url)

    async def get() -> Any:
        async with Client(api) as client:
            return await account.fetch(client, path)

    try:
        return asyncio.run(get()), f"{api.base_url}/{path}"
    except account.RouteUnavailable as exc:
        click.echo(printable(redact(str(exc))), err=True)
        sys.exit(EXIT_INCOMPLETE)


def _record(db: Path, wait_s: float, write: Callable[[duckdb.DuckDBPyConnection, str], Any]) -> Any:
    """One small write transaction, published like a run's (atomic, readers unblocked)."""
    check_db_path(db)
    with Loader(db, new_run_id(), wait_s=wait_s) as ldr:
        out = write(ldr.con, ldr.run_id)
        create_views(ldr.con)  # an older database gains this version's views too
        ldr.commit()
    return out


source_options = [
    click.option("--fetch", is_flag=True, help="Ask the gateway (PHASEO_API_KEY)."),
    click.option(
        "--file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A saved response of the route instead (offline).",
    ),
    click.option(
        "--as-of",
        help="When a --file was taken (YYYY-MM-DD or an ISO time, UTC; default now).",
    ),
    click.option("--base-url", default=None, help="API base URL (else $PHASEO_BASE_URL)."),
    wait_option("Wait up to SECONDS for a run to release the database."),
]


def _with(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def apply(fn: Any) -> Any:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


@cli.command("prices")
@db_option
@_with(source_options)
@format_option
@friendly_errors
def prices_cmd(
    db: Path,
    fetch: bool,
    file: Path | None,
    as_of: str | None,
    base_url: str | None,
    wait_s: float,
    fmt: str,
) -> None:
    """Keep a dated snapshot of the gateway's price catalogue; show what changed.

    GET /v1/pricing/models lists the prices in force now, with no dates: each snapshot
    kept here dates them, so `price_checks` can check a line against the catalogue of its
    own charge time (view int_catalogue_validity) and `price_changes` lists what moved.
    Without --fetch or --file: the changes seen so far.

    \b
    Examples:
      billing prices --fetch                                  # nightly, or run --fetch-prices
      billing prices --file saved.json --as-of 2026-11-15     # a saved answer, offline
      billing prices --format csv                             # the changes
    """
    if fetch or file is not None:
        body, source = _answer(account.PRICING_PATH, file, fetch, base_url, as_of)
        at = _as_of(as_of)
        account.parse_catalogue(body)  # a wrong shape fails before the lock is taken
        entries, unreadable = _record(
            db, wait_s, lambda con, run_id: account.store_catalogue(con, body, at, source, run_id)
        )
        note = f", {unreadable} without a readable price (kept)" if unreadable else ""
        click.echo(
            printable(redact(f"prices: snapshot of {entries} entries at {at:%Y-%m-%d %H:%M} UTC"
                             f" from {source}{note} -> {db}"))
        )  # fmt: skip
        return
    with reader(db, sandbox=True) as con:
        require_views(con, ["price_changes"])
        cur = con.execute(
            "select changed_at, provider, model, endpoint, meter, unit_size, change,"
            " old_price_per_unit, new_price_per_unit from price_changes"
            " order by changed_at desc, provider, model, meter"
        )
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
        snaps = con.execute(
            "select count(*), min(taken_at), max(taken_at) from catalogue_snapshots"
        ).fetchone()
    if fmt != "table":
        click.echo(FORMATS[fmt](columns, rows))
        return
    count, first, last = snaps if snaps else (0, None, None)
    if not count:
        click.echo("prices: no catalogue snapshot yet (billing prices --fetch, or --file)")
        return
    click.echo(
        f"prices: {count} snapshot(s) from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M}"
        f" UTC, {len(rows)} change(s)"
    )
    if rows:
        click.echo(FORMATS["table"](columns, rows))


@cli.command("credits")
@db_option
@_with(source_options)
@format_option
@friendly_errors
def credits_cmd(
    db: Path,
    fetch: bool,
    file: Path | None,
    as_of: str | None,
    base_url: str | None,
    wait_s: float,
    fmt: str,
) -> None:
    """Record the wallet (GET /v1/credits) and show its runway.

    Balance, money held for running batches (reserved) and available money, with the
    days left at the trailing 7- and 30-day billed spend (view wallet_runway). API runs
    record a reading each night; --file records a saved answer offline.

    \b
    Examples:
      billing credits                          # the latest reading and runway
      billing credits --fetch
      billing credits --file credits.json --as-of 2026-11-30T23:00Z
    """
    if fetch or file is not None:
        body, source = _answer(account.CREDITS_PATH, file, fetch, base_url, as_of)
        reading = account.parse_credits(body)
        at = _as_of(as_of)
        _record(
            db, wait_s, lambda con, run_id: account.store_credits(con, reading, at, source, run_id)
        )
    with reader(db, sandbox=True) as con:
        require_views(con, ["wallet_runway"])
        cur = con.execute("select * from wallet_runway")
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    if fmt in ("json", "jsonl"):
        click.echo(json.dumps(json_rows([dict(zip(columns, r, strict=True)) for r in rows])))
        return
    if fmt != "table":
        click.echo(FORMATS[fmt](columns, rows))
        return
    if not rows:
        click.echo("credits: no wallet reading yet (an API run, billing credits --fetch or --file)")
        return
    w = dict(zip(columns, rows[0], strict=True))
    click.echo(printable(redact(f"credits: {usd_cents(w['available_nanos'])} available")))
    click.echo(printable(redact(wallet_line(w))))


@cli.command("reconcile")
@db_option
@format_option
@friendly_errors
def reconcile_cmd(db: Path, fmt: str) -> None:
    """Reconcile every batch of the history, now (nothing is written).

    A nightly run reconciles the batches it wrote (reconciliation_results, the run
    summary); this checks them all: each batch's lines, breakdown, request rows, usage
    and FOCUS books against its bill (view billing_reconciliation). Exit 0 when every
    batch agrees, 1 when some do not (they are listed).
    """
    with reader(db, sandbox=True) as con:
        cur = con.execute(
            "select check_name, count(*) as batches,"
            " sum(abs(coalesce(actual_nanos, 0) - coalesce(expected_nanos, 0)))::hugeint"
            " as diff_nanos, min(batch_id) as first_batch_id"
            " from billing_reconciliation group by all order by check_name"
        )
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
        count = con.execute("select count(*) from batches").fetchone()
    batches = int(count[0]) if count else 0
    if fmt != "table":
        click.echo(FORMATS[fmt](columns, rows))
    elif not rows:
        click.echo(f"reconcile: all {batches:,} batches agree with their bills")
    else:
        off = sum(int(r[1]) for r in rows)
        click.echo(f"reconcile: {off:,} mismatch(es) among {batches:,} batches")
        click.echo(FORMATS["table"](columns, rows))
    if rows:
        sys.exit(1)
