"""The finance queries: one set, shared by `billing report`, `billing check` and the
dashboard notebook. Each reads the views over a half-open date range [start, end).

Every figure here is "as billed": money dated by its charge date (stg_batches.charged_at),
a restated bill's difference in the period it was restated, billed money only, exactly
as the FOCUS export books it (see README, "Two dates"). :func:`as_used` gives the other
reading (final amounts by usage day) where a person wants to compare."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from pipeline.config import ConfigError
from pipeline.night import RECENT_MARTS, recent_sql, view_over
from pipeline.report import usd

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


# One colour per provider wherever spend is drawn (the report's charts, the notebook):
# given by the provider's place among every provider in the database, sorted, so it is
# the same in every chart and period.
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B",
           "#9D755D", "#BAB0AC", "#FF9DA6"]  # fmt: skip


def provider_colors(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """provider -> colour, for every provider with spend (``None`` as 'unknown')."""
    names = [
        r[0]
        for r in con.execute(
            "select distinct coalesce(provider, 'unknown') from int_billed_charges order by 1"
        ).fetchall()
    ]
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def recent_runs(con: duckdb.DuckDBPyConnection, limit: int = 5) -> Rows:
    return _rows(
        con,
        "select run_id, status, records_read, batches_loaded, rejected,"
        " reconciliation_issues, cost_delta_nanos from load_runs"
        " order by started_at desc limit $1",
        [limit],
    )


def totals(con: duckdb.DuckDBPyConnection, p: Period) -> dict[str, Any]:
    """The period's billed spend (as billed), the batches charged in it and the batches
    whose restated bill was booked in it."""
    rows = _rows(
        con,
        "select coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos,"
        " coalesce(sum(batches), 0)::bigint as batches,"
        " coalesce(sum(billed_batches), 0)::bigint as billed_batches,"
        " coalesce(sum(corrections), 0)::bigint as corrections"
        " from spend_by_provider where day >= $1 and day < $2",
        [p.start, p.end],
    )
    return rows[0]


def previous(p: Period) -> Period:
    """The period before ``p``: the month before a month, else as many days before."""
    if p.start.day == 1 and p.end == _month_after(p.start):
        start = (p.start - timedelta(days=1)).replace(day=1)
        return Period(start, p.start, start.strftime("%B %Y"))
    start = p.start - (p.end - p.start)
    return Period(start, p.start, f"{start} to {p.start - timedelta(days=1)}")


def data_through(con: duckdb.DuckDBPyConnection, p: Period) -> date | None:
    """The last day of the period with a charge: how far the data goes."""
    row = con.execute(
        "select max(day) from spend_by_provider where day >= $1 and day < $2", [p.start, p.end]
    ).fetchone()
    return row[0] if row else None


def as_used(con: duckdb.DuckDBPyConnection, p: Period) -> dict[str, Any]:
    """The other reading: final bills of the batches whose usage ended in the period."""
    return _rows(
        con,
        "select coalesce(sum(cost_nanos), 0)::hugeint as cost_nanos,"
        " coalesce(sum(batches), 0)::bigint as batches"
        " from spend_as_used where day >= $1 and day < $2",
        [p.start, p.end],
    )[0]


def restatements(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    """Restated bills whose difference was booked in the period, or whose original
    charge lies in it (its figure there stays as first billed)."""
    return _rows(
        con,
        "select batch_id, provider, used_day, original_day, restated_day, original_nanos,"
        " delta_nanos, current_nanos from spend_restatements"
        " where (restated_day >= $1 and restated_day < $2)"
        " or (original_day >= $1 and original_day < $2)"
        " order by restated_day, batch_id",
        [p.start, p.end],
    )


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
        "select provider, model, attribution, sum(requests)::hugeint as requests,"
        " sum(cost_nanos)::hugeint as cost_nanos, nanos_to_usd(sum(cost_nanos)) as cost_usd"
        " from spend_by_model where day >= $1 and day < $2"
        " group by all order by cost_nanos desc, provider, model, attribution",
        [p.start, p.end],
    )


def top_sessions(con: duckdb.DuckDBPyConnection, p: Period, limit: int = 10) -> Rows:
    """The largest sessions, then one '(others)' row for the rest (provider null): the
    rows sum exactly to the period's spend."""
    return _rows(
        con,
        "with sessions as (select session_id, provider, count(distinct batch_id) as batches,"
        " sum(cost_nanos)::hugeint as cost_nanos from int_model_charges"
        " where (charged_at at time zone 'UTC')::date >= $1"
        " and (charged_at at time zone 'UTC')::date < $2 group by all),"
        " ranked as (select *, row_number() over (order by cost_nanos desc, session_id,"
        " provider) as rn from sessions)"
        " select session_id, provider, batches, cost_nanos, nanos_to_usd(cost_nanos) as cost_usd"
        " from ranked where rn <= $3"
        " union all"
        " select '(others)', null, sum(batches)::bigint, sum(cost_nanos)::hugeint,"
        " nanos_to_usd(sum(cost_nanos)) from ranked where rn > $3 having count(*) > 0"
        " order by session_id = '(others)', cost_nanos desc, session_id",
        [p.start, p.end, limit],
    )


def top_tags(con: duckdb.DuckDBPyConnection, p: Period, limit: int = 5) -> Rows:
    """Per tag key, its largest values (untagged spend included, never hidden), then one
    '(others)' row for the rest: each key's rows sum exactly to the period's spend."""
    return _rows(
        con,
        "with tags as (select tag_key, tag_value, sum(batches)::bigint as batches,"
        " sum(cost_nanos)::hugeint as cost_nanos from spend_by_tag"
        " where day >= $1 and day < $2 group by all),"
        " ranked as (select *, row_number() over (partition by tag_key"
        " order by cost_nanos desc, tag_value) as rn from tags)"
        " select tag_key, tag_value, batches, cost_nanos, nanos_to_usd(cost_nanos) as cost_usd"
        " from ranked where rn <= $3"
        " union all"
        " select tag_key, '(others)', sum(batches)::bigint, sum(cost_nanos)::hugeint,"
        " nanos_to_usd(sum(cost_nanos)) from ranked where rn > $3 group by tag_key"
        " order by tag_key, tag_value = '(others)', cost_nanos desc, tag_value",
        [p.start, p.end, limit],
    )


def waste(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    """Per provider: spend that bought nothing (error responses, cancelled batches) and
    spend on batches that failed or expired but delivered what they billed."""
    return _rows(
        con,
        "select provider, sum(error_response_nanos)::hugeint as error_response_nanos,"
        " sum(cancelled_batch_nanos)::hugeint as cancelled_batch_nanos,"
        " sum(waste_nanos)::hugeint as waste_nanos, nanos_to_usd(sum(waste_nanos)) as waste_usd,"
        " sum(failed_batch_nanos)::hugeint as failed_batch_nanos,"
        " sum(expired_batch_nanos)::hugeint as expired_batch_nanos,"
        " sum(ended_badly_nanos)::hugeint as ended_badly_nanos"
        " from spend_waste where month >= date_trunc('month', $1::date) and month < $2"
        " group by all order by waste_nanos desc, ended_badly_nanos desc, provider",
        [p.start, p.end],
    )


def unbilled(con: duckdb.DuckDBPyConnection, p: Period) -> dict[str, Any]:
    """Money priced but not billed in the period (not spend), by reason, and finished
    batches without a bill."""
    reasons = _rows(
        con,
        "select reason_base, reason_detail, sum(batches)::bigint as batches,"
        " sum(cost_nanos)::hugeint as cost_nanos from spend_unbilled"
        " where day >= $1 and day < $2 group by all order by cost_nanos desc, reason_base",
        [p.start, p.end],
    )
    final_without_bill = _rows(
        con,
        "select count(*) as n from stg_batches where is_final and cost_nanos is null"
        " and (charged_at at time zone 'UTC')::date >= $1"
        " and (charged_at at time zone 'UTC')::date < $2",
        [p.start, p.end],
    )[0]["n"]
    return {
        "final_without_bill": final_without_bill,
        "not_billed": sum(int(r["batches"]) for r in reasons),
        "not_billed_nanos": sum(int(r["cost_nanos"]) for r in reasons),
        "reasons": reasons,
    }


def reconciliation(con: duckdb.DuckDBPyConnection) -> Rows:
    return _rows(
        con,
        "select check_name, count(*) as batches from billing_reconciliation"
        " group by all order by check_name",
    )


def budget_status(
    con: duckdb.DuckDBPyConnection,
    since: date | None = None,
    until: date | None = None,
    days_since: date | None = None,
    *,
    recent: bool = False,
) -> Rows:
    """Budget periods from ``since``'s month on, before ``until``; a daily budget's days
    from ``days_since`` on (default ``since``: the days of the period). ``recent``: read
    the charges of :func:`use_recent`'s window (they cover ``since``'s month) instead of
    the whole history; the same rows."""
    if not _exists(con, "budgets where coalesce(kind, 'spend') = 'spend'"):
        return []  # nothing to check: the view would still read the whole history
    source = _view_or_recent("budget_status", recent)
    return _rows(
        con,
        "select budget_name, period, period_start, scope, limit_nanos, spend_nanos,"  # noqa: S608
        " remaining_nanos, overage_nanos, used_pct, status, crossed_on, warning_since,"
        f" thresholds, thresholds_reached from {source}"
        " where ($1::date is null or period_start >= case period when 'day'"
        "   then coalesce($3::date, $1::date) else date_trunc('month', $1::date) end)"
        " and ($2::date is null or period_start < $2::date)"
        " order by period_start desc, status = 'crossed' desc, budget_name",
        [since, until, days_since],
    )


def anomalies(
    con: duckdb.DuckDBPyConnection,
    since: date | None = None,
    until: date | None = None,
    *,
    recent: bool = False,
) -> Rows:
    """Spend anomalies of the days from ``since``, before ``until``. ``recent``: computed
    from the charges of :func:`use_recent`'s window (at least the 29 days before
    ``since``: a day's baseline is the 28 before it) instead of the whole history."""
    source = _view_or_recent("spend_anomalies", recent)
    return _rows(
        con,
        "select day, level, provider, model, cost_nanos, baseline_median_nanos, score, rule,"  # noqa: S608
        f" explanation from {source} where ($1::date is null or day >= $1)"
        " and ($2::date is null or day < $2)"
        " order by day desc, level desc, score desc nulls last, provider, model",
        [since, until],
    )


def _view_or_recent(view: str, recent: bool) -> str:
    """The mart ``view``, or its one definition over the recent window's copies."""
    if not recent:
        return view
    return f"({view_over('marts', view, RECENT_MARTS)}\n) as {view}"


ANOMALY_LOOKBACK = timedelta(days=29)  # a day's baseline (28 days) and the day before


RECENT_SHARE = 0.25  # the window is copied only when it is at most this share of the batches


def use_recent(con: duckdb.DuckDBPyConnection, cutoff: date) -> bool:
    """Copy the charges of the batches with an entry in the FOCUS books since ``cutoff``
    (and every row they need) into temp tables (pipeline.night.RECENT_SQL), so that a
    check of recent days reads them, not the whole history. Done only when they are a
    small share of the history (a young database is read whole: copying most of it
    would cost more); False then."""
    at = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
    statements = [part.strip() for part in recent_sql().split(";") if part.strip()]
    con.execute(statements[0], {"cutoff": at})  # recent_batches: ids only, by time
    row = con.execute(
        "select (select count(*) from recent_batches), (select count(*) from batches)"
    ).fetchone()
    recent, total = (int(row[0]), int(row[1])) if row else (0, 0)
    if recent > RECENT_SHARE * total:
        return False
    for statement in statements[1:]:
        con.execute(statement, {"cutoff": at} if "$cutoff" in statement else None)
    return True


def forecast(con: duckdb.DuckDBPyConnection, p: Period | None = None) -> Rows:
    """The month-end figure of each month the period touches (default: the latest): an
    estimate with its parts for the month still open, the actual for a past month."""
    return _rows(
        con,
        "select month, as_of, provider, is_estimate, billed_nanos, run_rate_nanos_per_day,"
        " projected_rest_nanos, running_batches, stale_batches, running_estimate_nanos,"
        " forecast_nanos from spend_forecast"
        " where case when $1::date is null then month = (select max(month) from spend_forecast)"
        " else month >= date_trunc('month', $1::date) and month < $2 end"
        " order by month, provider = '*' desc, forecast_nanos desc, provider",
        [p.start if p else None, p.end if p else None],
    )


def price_check_summary(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    """Lines per status: every pricing line of the period's billed batches."""
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
        " coalesce(list_diff_nanos, arithmetic_diff_nanos) as diff_nanos, tolerance_nanos,"
        " status from price_checks where day >= $1 and day < $2"
        " and status not in ('ok', 'not_checkable')"
        " order by abs(coalesce(list_diff_nanos, arithmetic_diff_nanos, 0)) desc, batch_id"
        " limit $3",
        [p.start, p.end, limit],
    )


def catalogue_coverage(con: duckdb.DuckDBPyConnection, p: Period) -> Rows:
    """Priced lines of the period per catalogue_status (match, price_differs,
    not_in_catalogue, no_snapshot), with the snapshots there are."""
    return _rows(
        con,
        "select catalogue_status, count(*) as lines,"
        " (select count(*) from catalogue_snapshots) as snapshots"
        " from price_checks where day >= $1 and day < $2 and status <> 'not_checkable'"
        " group by all order by catalogue_status",
        [p.start, p.end],
    )


EXIT_BUDGET = 4
EXIT_ANOMALY = 5


@dataclass
class CheckResult:
    """What `billing check` (and `billing run --check`) found."""

    budgets: Rows = field(default_factory=list)
    anomalies: Rows = field(default_factory=list)
    period: Period | None = None
    notes: list[str] = field(default_factory=list)
    wallet: dict[str, Any] | None = None  # the latest GET /v1/credits reading, with runway
    runway: Rows = field(default_factory=list)  # runway budgets against it

    @property
    def warnings(self) -> Rows:
        return [b for b in self.budgets if b["status"] == "warning"]

    @property
    def crossed(self) -> Rows:
        return [b for b in self.budgets if b["status"] == "crossed"]

    @property
    def runway_crossed(self) -> Rows:
        return [r for r in self.runway if r["status"] == "crossed"]

    @property
    def exit_code(self) -> int:
        if self.crossed or self.runway_crossed:
            return EXIT_BUDGET
        return EXIT_ANOMALY if self.anomalies else 0


# Latin look-alikes of Cyrillic and Greek letters a pasted name may carry ('оpenai')
_LOOKALIKE = str.maketrans("аеорсухіјѕԁһӏοαερτυνκιχ", "aeopcyxijsdhloaeptuvkix")


def _skeleton(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold().translate(_LOOKALIKE)


def scope_notes(con: duckdb.DuckDBPyConnection) -> list[str]:
    """A budget whose provider, model or session matches no spend at all while a name
    that differs only in case or look-alike letters has some: said, never guessed (the
    budget keeps the gateway's spelling)."""
    notes = []
    for column in ("provider", "model", "session_id"):
        scoped = _rows(
            con,
            f"select distinct name, {column} as value from budgets"  # noqa: S608 - fixed names
            f" where {column} is not null order by 1",
        )
        if not scoped:
            continue
        spent = {
            r["value"]: r["cost_nanos"]
            for r in _rows(
                con,
                f"select {column} as value, sum(cost_nanos)::hugeint as cost_nanos"  # noqa: S608
                " from int_model_charges group by 1",
            )
            if r["value"] is not None
        }
        for b in scoped:
            if b["value"] in spent:
                continue
            twins = sorted(v for v in spent if _skeleton(v) == _skeleton(b["value"]))
            if twins:
                label = "session" if column == "session_id" else column
                notes.append(
                    f"budget {b['name']!r}: {label}={b['value']!r} matches no spend, but"
                    f" {', '.join(repr(t) for t in twins)} has {usd(spent[twins[0]])}"
                    " (the names differ in case or look-alike letters)"
                )
    return notes


def today_utc() -> date:
    """Today in UTC, or BILLING_TODAY (YYYY-MM-DD): re-check a past night as it stood."""
    given = os.environ.get("BILLING_TODAY")
    if given:
        try:
            return date.fromisoformat(given)
        except ValueError:
            raise ConfigError(f"BILLING_TODAY must be YYYY-MM-DD, got {given!r}") from None
    return datetime.now(UTC).date()


def check(
    con: duckdb.DuckDBPyConnection, p: Period | None = None, today: date | None = None
) -> CheckResult:
    """Budgets and anomalies of the period ``p``: monthly budgets of the months it
    touches, daily budgets and anomalies of its days. By default the current UTC month to
    date, daily budgets and anomalies of yesterday and today only, so a day crossed in
    the past does not alert again every night."""
    notes = scope_notes(con)
    wallet_now = wallet(con)
    runway = runway_status(con)
    if any(r["rate_basis"] == "no spend" for r in runway):
        notes.append("runway: no billed spend in the 30 days before the wallet reading")
    if wallet_now is None and has_runway_budgets(con):
        notes.append(
            "runway budgets are set but no wallet reading is stored: an API run records"
            " GET /v1/credits (or `billing credits --file`)"
        )
    if p is None:
        today = today or today_utc()
        recent = today - timedelta(days=1)  # the night's run brings yesterday's last hours
        start = recent.replace(day=1)
        p = Period(start, today + timedelta(days=1), f"{start} to {today} (month to date)")
    else:
        start = recent = p.start
    # the window the check needs, not the history: the months its budgets cover and
    # the days before its first anomaly day that a baseline reads
    scoped = use_recent(con, min(start.replace(day=1), recent - ANOMALY_LOOKBACK))
    return CheckResult(
        budget_status(con, start, p.end, recent, recent=scoped),
        anomalies(con, recent, p.end, recent=scoped), p, notes, wallet_now, runway,
    )  # fmt: skip


def _exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    row = con.execute(f"select exists (select 1 from {relation})").fetchone()  # noqa: S608
    return bool(row and row[0])


def wallet(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The latest wallet reading with its burn and runway (view wallet_runway)."""
    if not _exists(con, "credit_readings"):
        return None
    rows = _rows(con, "select * from wallet_runway")
    return rows[0] if rows else None


def runway_status(con: duckdb.DuckDBPyConnection) -> Rows:
    if not has_runway_budgets(con) or not _exists(con, "credit_readings"):
        return []
    return _rows(con, "select * from wallet_runway_status order by budget_name")


def has_runway_budgets(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute("select count(*) from budgets where kind = 'runway'").fetchone()
    return bool(row and row[0])
