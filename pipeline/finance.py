"""The finance queries: one set, shared by `billing report`, `billing check` and the
dashboard notebook. Each reads the views over a half-open date range [start, end)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import duckdb

from pipeline.config import ConfigError

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # exclusive
    label: str


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> Rows:
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _month_after(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def period(
    con: duckdb.DuckDBPyConnection,
    month: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> Period:
    """``--month YYYY-MM``, or ``--since``/``--until``, or the latest month with spend."""
    if month and (since or until):
        raise ConfigError("choose --month or --since/--until, not both")
    if month:
        try:
            start = date.fromisoformat(f"{month}-01")
        except ValueError:
            raise ConfigError(f"--month must be YYYY-MM, got {month!r}") from None
        return Period(start, _month_after(start), start.strftime("%B %Y"))
    if since or until:
        first, last = con.execute(
            "select min(day), max(day) from spend_by_provider where cost_nanos > 0"
        ).fetchone() or (None, None)
        start = since or first or date.today()
        end = until or ((last + timedelta(days=1)) if last else start + timedelta(days=1))
        if end <= start:
            raise ConfigError("--until must be after --since")
        return Period(start, end, f"{start} to {end - timedelta(days=1)}")
    row = con.execute("select max(day) from spend_by_provider where cost_nanos > 0").fetchone()
    latest = row[0] if row and row[0] else date.today()
    start = latest.replace(day=1)
    return Period(start, _month_after(start), start.strftime("%B %Y"))


def whole(con: duckdb.DuckDBPyConnection) -> Period:
    """Every day with data."""
    first, last = con.execute("select min(day), max(day) from spend_by_provider").fetchone() or (
        None,
        None,
    )
    start = first or date.today()
    end = (last or start) + timedelta(days=1)
    return Period(start, end, f"{start} to {end - timedelta(days=1)}")


def recent_runs(con: duckdb.DuckDBPyConnection, limit: int = 5) -> Rows:
    return _rows(
        con,
        "select run_id, status, records_read, batches_loaded, rejected,"
        " reconciliation_issues, cost_delta_nanos from load_runs"
        " order by started_at desc limit $1",
        [limit],
    )


def totals(con: duckdb.DuckDBPyConnection, p: Period) -> dict[str, Any]:
    rows = _rows(
        con,
        "select coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos,"
        " coalesce(sum(batches), 0)::bigint as batches,"
        " coalesce(sum(billed_batches), 0)::bigint as billed_batches"
        " from spend_by_provider where day >= $1 and day < $2",
        [p.start, p.end],
    )
    return rows[0]


def spend_over_time(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    return _rows(
        con,
        "select day, provider, sum(cost_nanos)::hugeint as cost_nanos from spend_by_provider"
        " where day >= $1 and day < $2 group by all order by day, provider",
        [p.start, p.end],
    )


def spend_by_provider(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    return _rows(
        con,
        "select provider, sum(batches)::bigint as batches, sum(cost_nanos)::hugeint as cost_nanos,"
        " nanos_to_usd(sum(cost_nanos)) as cost_usd from spend_by_provider"
        " where day >= $1 and day < $2 group by all order by cost_nanos desc, provider",
        [p.start, p.end],
    )


def spend_by_model(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    return _rows(
        con,
        "select provider, model, sum(requests)::bigint as requests,"
        " sum(cost_nanos)::hugeint as cost_nanos, nanos_to_usd(sum(cost_nanos)) as cost_usd"
        " from spend_by_model where day >= $1 and day < $2"
        " group by all order by cost_nanos desc, provider, model",
        [p.start, p.end],
    )


def top_sessions(con: duckdb.DuckDBPyConnection, p: Period, limit: int = 10) -> Rows:
    return _rows(
        con,
        "select session_id, provider, count(*) as batches, sum(cost_nanos)::hugeint as cost_nanos,"
        " nanos_to_usd(sum(cost_nanos)) as cost_usd from int_model_charges"
        " where (charged_at at time zone 'UTC')::date >= $1"
        " and (charged_at at time zone 'UTC')::date < $2"
        " group by all order by cost_nanos desc, session_id limit $3",
        [p.start, p.end, limit],
    )


def top_tags(con: duckdb.DuckDBPyConnection, p: Period, limit: int = 5) -> Rows:
    """Per tag key, its largest values (untagged spend included, never hidden)."""
    return _rows(
        con,
        "with tags as (select tag_key, tag_value, sum(batches)::bigint as batches,"
        " sum(cost_nanos)::hugeint as cost_nanos from spend_by_tag"
        " where day >= $1 and day < $2 group by all),"
        " ranked as (select *, row_number() over (partition by tag_key"
        " order by cost_nanos desc, tag_value) as rn from tags)"
        " select tag_key, tag_value, batches, cost_nanos, nanos_to_usd(cost_nanos) as cost_usd"
        " from ranked where rn <= $3 order by tag_key, cost_nanos desc, tag_value",
        [p.start, p.end, limit],
    )


def waste(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    return _rows(
        con,
        "select provider, sum(failed_batch_nanos)::hugeint as failed_batch_nanos,"
        " sum(expired_batch_nanos)::hugeint as expired_batch_nanos,"
        " sum(cancelled_batch_nanos)::hugeint as cancelled_batch_nanos,"
        " sum(failed_request_nanos)::hugeint as failed_request_nanos,"
        " sum(waste_nanos)::hugeint as waste_nanos, nanos_to_usd(sum(waste_nanos)) as waste_usd"
        " from spend_waste where month >= date_trunc('month', $1::date) and month < $2"
        " group by all order by waste_nanos desc, provider",
        [p.start, p.end],
    )


def unbilled(con: duckdb.DuckDBPyConnection, p: Period) -> dict[str, Any]:
    """Finished batches without a bill, and bills not charged (captured later or never)."""
    return _rows(
        con,
        "select count(*) filter (where is_final and cost_nanos is null) as final_without_bill,"
        " count(*) filter (where cost_nanos is not null and not coalesce(billed, false))"
        " as not_billed, coalesce(sum(cost_nanos) filter (where cost_nanos is not null"
        " and not coalesce(billed, false)), 0)::hugeint as not_billed_nanos"
        " from stg_batches where (charged_at at time zone 'UTC')::date >= $1"
        " and (charged_at at time zone 'UTC')::date < $2",
        [p.start, p.end],
    )[0]


def reconciliation(con: duckdb.DuckDBPyConnection) -> Rows:
    return _rows(
        con,
        "select check_name, count(*) as batches from billing_reconciliation"
        " group by all order by check_name",
    )


def budget_status(con: duckdb.DuckDBPyConnection, since: date | None = None) -> Rows:
    return _rows(
        con,
        "select budget_name, period, period_start, scope, limit_nanos, spend_nanos,"
        " remaining_nanos, used_pct, status from budget_status"
        " where $1::date is null or period_start >= date_trunc('month', $1::date)"
        " order by period_start desc, status = 'crossed' desc, budget_name",
        [since],
    )


def anomalies(con: duckdb.DuckDBPyConnection, since: date | None = None) -> Rows:
    return _rows(
        con,
        "select day, level, provider, model, cost_nanos, baseline_median_nanos, score, rule,"
        " explanation from spend_anomalies where $1::date is null or day >= $1"
        " order by day desc, level desc, score desc nulls last, provider, model",
        [since],
    )


def forecast(con: duckdb.DuckDBPyConnection) -> Rows:
    return _rows(
        con,
        "select month, as_of, provider, billed_nanos, run_rate_nanos_per_day,"
        " projected_rest_nanos, running_batches, running_estimate_nanos, forecast_nanos"
        " from spend_forecast order by provider = '*' desc, forecast_nanos desc, provider",
    )


def price_check_summary(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    return _rows(
        con,
        "select status, count(*) as lines, sum(line_nanos)::hugeint as line_nanos,"
        " sum(abs(coalesce(list_diff_nanos, arithmetic_diff_nanos, 0)))::hugeint as diff_nanos"
        " from price_checks where day >= $1 and day < $2 group by all order by status",
        [p.start, p.end],
    )


def price_problems(con: duckdb.DuckDBPyConnection, p: Period, limit: int = 20) -> Rows:
    return _rows(
        con,
        "select batch_id, line_index, provider, model, dimension, unit_price_usd,"
        " list_unit_price_usd, line_nanos, expected_line_nanos, list_line_nanos,"
        " coalesce(list_diff_nanos, arithmetic_diff_nanos) as diff_nanos, status"
        " from price_checks where day >= $1 and day < $2 and status <> 'ok'"
        " order by abs(coalesce(list_diff_nanos, arithmetic_diff_nanos, 0)) desc, batch_id"
        " limit $3",
        [p.start, p.end, limit],
    )


EXIT_BUDGET = 4
EXIT_ANOMALY = 5


@dataclass
class CheckResult:
    """What `billing check` (and `billing run --check`) found."""

    budgets: Rows = field(default_factory=list)
    anomalies: Rows = field(default_factory=list)

    @property
    def crossed(self) -> Rows:
        return [b for b in self.budgets if b["status"] == "crossed"]

    @property
    def exit_code(self) -> int:
        if self.crossed:
            return EXIT_BUDGET
        return EXIT_ANOMALY if self.anomalies else 0


def check(con: duckdb.DuckDBPyConnection, since: date | None = None) -> CheckResult:
    """Budgets of every period from ``since`` on (default: the latest month in the data)
    and anomalies from ``since`` on (default: the latest day in the data: what is new)."""
    if since is not None:
        return CheckResult(budget_status(con, since), anomalies(con, since))
    row = con.execute("select max(day) from spend_by_provider").fetchone()
    latest = row[0] if row else None
    if latest is None:
        return CheckResult()
    return CheckResult(budget_status(con, latest.replace(day=1)), anomalies(con, latest))
