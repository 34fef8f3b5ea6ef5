"""Money in the right period (README, "Two dates"): one corpus with every case a month-end
close meets under the real gateway, checked in every view, the report, `billing check`
and the FOCUS export. October is the month being closed; November is open.

The corpus (nanos; 1 USD = 1e9):
  #1  ended Oct 31 23:10, captured by the gateway's reconciler; our first read (Nov 1)
      answers already_billed: October, as billed and as used.            1.000000000
  #2  ended Oct 31 23:58, OUR read captured it Nov 1 00:03 (charged:true): billed in
      November (capture), used in October.                                2.000000000
  #3  ended and captured Oct 15 at 3.00, restated to 2.50 on Nov 20: as billed October
      keeps 3.00 and November books -0.50; as used October has 2.50.
  #4  priced 7.00 but not billed (settlement_not_applied:reservation_exceeded): no spend.
  #5-7 running since August, past expires_at (stale); #8 running, created in November.
  #9  1,000 requests, line 499 nanos under units x price (the engine's rounding): ok.
  #10 included quantity 500,000 of 1,500,000 tokens: ok, included recognised.
  #11 a line 5,000 nanos off with 2 requests: arithmetic_mismatch.
  #12 a fallback line (total only): not_checkable, 0.30 shown.
  #13 request rows that add up; #14 rows that do not (0.90 of 1.00).
  #15 failed part-way, billed 1.20 for 3 delivered outputs, 1 failed request at 0.
  #16 cancelled after 0.40 of spend; #17 0.05 billed for an HTTP 500 response.
"""

from __future__ import annotations

import copy
import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import TOKEN, Gateway, serve
from tests.helpers import batch, query, rebilled, scalar, write_jsonl

USD = 1_000_000_000


def unix(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def priced(
    n: int,
    ended: str,
    nanos: int,
    *,
    status: str = "completed",
    reason: str = "charged:captured",
    charged: bool = True,
    billed: bool = True,
    finalized: str | None = None,
    lines: list[dict[str, Any]] | None = None,
    completed: int = 2,
    failed: int = 0,
    requests: list[tuple[str, int, int]] | None = None,  # (status, http status, nanos)
) -> dict[str, Any]:
    """A batch that ended at ``ended`` (UTC, ISO) billed ``nanos``: one line that adds up
    (``nanos`` tokens at $1 per 1e9) unless ``lines`` are given."""
    end = unix(ended)
    obj = batch(n, status=status, created_at=end - 7200, in_progress_at=end - 3600)
    obj.pop("completed_at")
    obj[f"{status}_at"] = end
    obj["request_counts"] = {"total": completed + failed, "completed": completed, "failed": failed}
    obj = rebilled(
        obj,
        nanos,
        finalized or ended + ":00.000Z",
        reason=reason,
        charged=charged,
        billed=billed,
    )
    obj["pricing_lines"] = lines or [line(nanos, nanos / 1e9, 10**9, "1.000000000", nanos)]
    if requests is not None:
        obj["requests"] = [
            {
                "id": f"breq_{n:03d}{i:03d}",
                "custom_id": f"r{i}",
                "request_index": i,
                "model": "gpt-5",
                "status": st,
                "response_status": http,
                "cost_nanos": cost,
                "created_at": ended + ":00Z",
            }
            for i, (st, http, cost) in enumerate(requests)
        ]
    return obj


def line(quantity: int, units: float, size: int, price: str, nanos: int) -> dict[str, Any]:
    return {
        "dimension": "input_text_tokens",
        "quantity": quantity,
        "billable_units": units,
        "unit_size": size,
        "unit_price_usd": price,
        "line_cost_usd": f"{nanos // USD}.{nanos % USD:09d}",
        "line_nanos": nanos,
        "pricing_plan": "batch",
        "service_tier": "batch",
    }


def running(n: int, created: str, expires: str) -> dict[str, Any]:
    obj = batch(n, status="in_progress", created_at=unix(created), expires_at=unix(expires))
    for key in ("completed_at", "billing", "pricing_lines"):
        obj.pop(key)
    obj["request_counts"] = {"total": 10, "completed": 0, "failed": 0}
    return obj


RESTATED_FIRST = priced(3, "2026-10-15T10:00", 3 * USD, finalized="2026-10-15T10:05:00.000Z")
RESTATED_LATER = rebilled(
    RESTATED_FIRST,
    2_500_000_000,
    "2026-11-20T02:00:00.000Z",
    reason="already_billed",
    charged=False,
)
RESTATED_LATER["pricing_lines"] = [line(2_500_000_000, 2.5, 10**9, "1.000000000", 2_500_000_000)]

CORPUS = [
    priced(
        1,
        "2026-10-31T23:10",
        1 * USD,
        reason="already_billed",
        charged=False,
        finalized="2026-11-01T02:00:00.000Z",
    ),
    priced(2, "2026-10-31T23:58", 2 * USD, finalized="2026-11-01T00:03:00.000Z"),
    RESTATED_FIRST,
    priced(
        4,
        "2026-11-05T12:00",
        7 * USD,
        billed=False,
        charged=False,
        reason="settlement_not_applied:reservation_exceeded",
    ),
    running(5, "2026-08-01T00:00", "2026-08-02T00:00"),
    running(6, "2026-08-03T00:00", "2026-08-04T00:00"),
    running(7, "2026-09-01T00:00", "2026-09-02T00:00"),
    running(8, "2026-11-10T00:00", "2026-12-30T00:00"),
    priced(
        9,
        "2026-11-06T12:00",
        150_000_000,
        completed=1000,
        lines=[line(1_000_000, 1.0, 1_000_000, "0.150000499", 150_000_000)],
    ),
    priced(
        10,
        "2026-11-06T13:00",
        2 * USD,
        lines=[line(1_500_000, 1.0, 1_000_000, "2.000000000", 2 * USD)],
    ),
    priced(
        11,
        "2026-11-07T12:00",
        2 * USD + 5000,
        lines=[line(1_000_000, 1.0, 1_000_000, "2.000000000", 2 * USD + 5000)],
    ),
    priced(
        12,
        "2026-11-07T13:00",
        300_000_000,
        lines=[
            {
                "dimension": "batch_requests",
                "pricing_plan": "batch",
                "service_tier": "batch",
                "endpoint": "/v1/responses",
                "units": 2,
                "total_nanos": 300_000_000,
                "total_usd_str": "0.300000000",
            }
        ],
    ),
    priced(
        13,
        "2026-11-08T12:00",
        USD,
        requests=[("completed", 200, 600_000_000), ("completed", 200, 400_000_000)],
    ),
    priced(
        14,
        "2026-11-08T13:00",
        USD,
        requests=[("completed", 200, 600_000_000), ("completed", 200, 300_000_000)],
    ),
    priced(
        15,
        "2026-11-09T12:00",
        1_200_000_000,
        status="failed",
        completed=3,
        failed=1,
        requests=[("completed", 200, 400_000_000)] * 3 + [("failed", 500, 0)],
    ),
    priced(16, "2026-11-09T13:00", 400_000_000, status="cancelled"),
    priced(
        17,
        "2026-11-09T14:00",
        500_000_000,
        requests=[("completed", 200, 450_000_000), ("failed", 500, 50_000_000)],
    ),
]

BILLED = {b["id"]: b["billing"]["cost_nanos"] for b in CORPUS if b.get("billing")}
BILLED.pop(CORPUS[3]["id"])  # #4: priced, not billed
OCT_AS_BILLED = 1 * USD + 3 * USD
NOV_AS_BILLED = sum(BILLED.values()) - OCT_AS_BILLED - 500_000_000  # #3's correction
OCT_AS_USED = 1 * USD + 2 * USD + 2_500_000_000

BUDGETS = """
[[budget]]
name = "monthly"
limit_usd = "3.5"

[[budget]]
name = "daily"
period = "day"
limit_usd = "2.5"
"""


def bid(n: int) -> str:
    return batch(n)["id"]


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus loaded, then #3 read again after its restatement (one database for the
    module's read-only tests)."""
    from click.testing import CliRunner

    from pipeline.cli import cli

    tmp = tmp_path_factory.mktemp("periods")
    db = tmp / "billing.duckdb"
    cfg = tmp / "billing.toml"
    cfg.write_text(BUDGETS)
    for name, items in (("night1", CORPUS), ("night2", [RESTATED_LATER])):
        path = write_jsonl(tmp / f"{name}.jsonl", items)
        args = ["run", "--input", str(path), "--db", str(db), "--config", str(cfg), "-q"]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return db


def months(db: Path, sql: str) -> dict[str, int]:
    return {str(m)[:7]: int(n) for m, n in query(db, sql)}


def test_every_view_puts_the_money_in_the_month_it_was_billed(closed: Path) -> None:
    by_month = "select month, sum(cost_nanos) from spend_by_provider group by 1 order by 1"
    assert months(closed, by_month) == {"2026-10": OCT_AS_BILLED, "2026-11": NOV_AS_BILLED}
    focus = months(
        closed,
        "select BillingPeriodStart, sum(x_CostNanos) from focus_charges group by 1 order by 1",
    )
    assert focus == {"2026-10": OCT_AS_BILLED, "2026-11": NOV_AS_BILLED}
    for view, col in (
        ("spend_by_model", "cost_nanos"),
        ("spend_by_dimension", "cost_nanos"),
        ("spend_by_provider", "cost_nanos"),
    ):
        got = months(
            closed,
            f"select date_trunc('month', day), sum({col}) from {view} group by 1 order by 1",
        )
        assert got == {"2026-10": OCT_AS_BILLED, "2026-11": NOV_AS_BILLED}, view
    tags = months(
        closed,
        "select date_trunc('month', day), sum(cost_nanos) from spend_by_tag"
        " where tag_key = 'team' group by 1 order by 1",
    )
    assert tags == {"2026-10": OCT_AS_BILLED, "2026-11": NOV_AS_BILLED}
    # the other reading: final bills by the day the usage ended
    used = months(closed, "select month, sum(cost_nanos) from spend_as_used group by 1 order by 1")
    total = sum(BILLED.values()) - 500_000_000  # the current bills (#3 restated)
    assert used == {"2026-10": OCT_AS_USED, "2026-11": total - OCT_AS_USED}
    # exactness: both readings and the books sum to the bills, to the nano
    assert scalar(closed, "select sum(cost_nanos) from spend_by_provider") == total
    assert scalar(closed, "select sum(cost_nanos) from spend_as_used") == total
    assert scalar(closed, "select sum(cost_nanos) from spend_by_session") == total
    assert scalar(closed, "select sum(billed_nanos) from spend_waste") == total


def test_the_charge_date_is_the_capture_or_the_end_never_a_re_read(closed: Path) -> None:
    rows = query(
        closed,
        "select batch_id, charged_at::varchar, charge_date_basis, used_at::varchar"
        " from stg_batches where batch_id in ($1, $2, $3) order by batch_id",
        [bid(1), bid(2), bid(3)],
    )
    assert rows == [
        (bid(1), "2026-10-31 23:10:00+00", "ended", "2026-10-31 23:10:00+00"),
        (bid(2), "2026-11-01 00:03:00+00", "capture", "2026-10-31 23:58:00+00"),
        (bid(3), "2026-10-15 10:05:00+00", "capture", "2026-10-15 10:00:00+00"),
    ]
    focus = query(
        closed,
        "select ResourceId, ChargePeriodStart::date::varchar, BillingPeriodStart::date::varchar,"
        " ChargeClass, x_CostNanos from focus_charges where ResourceId in ($1, $2, $3)"
        " order by ResourceId, x_RecordedAt",
        [bid(1), bid(2), bid(3)],
    )
    assert focus == [
        (bid(1), "2026-10-31", "2026-10-01", None, USD),
        (bid(2), "2026-10-31", "2026-11-01", None, 2 * USD),
        (bid(3), "2026-10-15", "2026-10-01", None, 3 * USD),
        (bid(3), "2026-10-15", "2026-11-01", "Correction", -500_000_000),
    ]
    assert query(
        closed,
        "select batch_id, original_day::varchar, restated_day::varchar, original_nanos,"
        " delta_nanos, current_nanos from spend_restatements",
    ) == [(bid(3), "2026-10-15", "2026-11-20", 3 * USD, -500_000_000, 2_500_000_000)]


def test_priced_but_not_billed_is_not_spend_and_is_shown_apart(closed: Path) -> None:
    four = bid(4)
    assert scalar(closed, "select count(*) from focus_charges where ResourceId = $1", [four]) == 0
    assert (
        scalar(closed, "select count(*) from int_billed_charges where batch_id = $1", [four]) == 0
    )
    assert query(
        closed,
        "select day::varchar, reason_base, reason_detail, batches, cost_nanos from spend_unbilled",
    ) == [("2026-11-05", "settlement_not_applied", "reservation_exceeded", 1, 7 * USD)]
    # not a reconciliation mismatch either: only #14's request rows are
    assert query(
        closed,
        "select batch_id, check_name, expected_nanos, actual_nanos from billing_reconciliation",
    ) == [(bid(14), "requests_vs_cost", USD, 900_000_000)]


def test_price_checks_follow_the_engine(closed: Path) -> None:
    rows = query(
        closed,
        "select batch_id, status, included_quantity, tolerance_nanos, arithmetic_diff_nanos,"
        " line_nanos from price_checks where batch_id in ($1, $2, $3, $4) order by batch_id",
        [bid(9), bid(10), bid(11), bid(12)],
    )
    assert rows == [
        (bid(9), "ok", None, 500, -499, 150_000_000),
        (bid(10), "ok", 500_000, 1, 0, 2 * USD),
        (bid(11), "arithmetic_mismatch", None, 1, 5000, 2 * USD + 5000),
        (bid(12), "not_checkable", None, 1, None, 300_000_000),
    ]
    # every line of every billed batch is covered, none of the unbilled one
    assert scalar(closed, "select count(distinct batch_id) from price_checks") == len(BILLED)


def test_waste_is_what_bought_nothing(closed: Path) -> None:
    assert query(
        closed,
        "select month::varchar, error_response_nanos, cancelled_batch_nanos, waste_nanos,"
        " failed_batch_nanos, expired_batch_nanos, ended_badly_nanos from spend_waste"
        " order by month",
    ) == [
        ("2026-10-01", 0, 0, 0, 0, 0, 0),
        ("2026-11-01", 50_000_000, 400_000_000, 450_000_000, 1_200_000_000, 0, 1_200_000_000),
    ]


def test_the_forecast_counts_only_what_can_still_be_charged(closed: Path) -> None:
    rows = query(
        closed,
        "select month::varchar, as_of::varchar, billed_nanos, running_batches, stale_batches,"
        " is_estimate from spend_forecast where provider = '*' order by month",
    )
    assert rows == [
        ("2026-10-01", "2026-10-31", OCT_AS_BILLED, 0, 0, False),
        ("2026-11-01", "2026-11-20", NOV_AS_BILLED, 1, 3, True),
    ]
    oct_forecast = scalar(
        closed,
        "select forecast_nanos from spend_forecast where provider = '*' and month = '2026-10-01'",
    )
    assert oct_forecast == OCT_AS_BILLED


def test_the_report_equals_focus_for_the_closed_month(
    closed: Path, tmp_path: Path, run_cli: Any
) -> None:
    out = tmp_path / "october.html"
    result = run_cli("report", "--db", closed, "--out", out, "--month", "2026-10")
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}: October 2026, $4.000000000\n"
    page = out.read_text()
    data = json.loads(page.split('id="report-data">')[1].split("</script>")[0])
    assert data["total_cost_nanos"] == str(OCT_AS_BILLED)
    assert "Month-end (actual)" in page and "(an estimate)" not in page
    assert "as used (final bills of batches whose processing ended in the period): $5.50" in page
    nov = run_cli("report", "--db", closed, "--out", out, "--month", "2026-11")
    assert (
        nov.output == f"{out}: November 2026, ${NOV_AS_BILLED // USD}.{NOV_AS_BILLED % USD:09d}\n"
    )
    page = out.read_text()
    assert 'id="unbilled" title="exact: $7.000000000">$7.00<' in page  # cents, exact a hover away
    assert "Month-end forecast" in page
    assert (
        "9 of 10 pricing lines checked against the gateway's arithmetic: 1 do not (below)."
        " 1 fallback lines ($0.30) carry a total only and cannot be checked."
    ) in html.unescape(page)


def test_check_evaluates_the_period_asked_for(
    closed: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    october = run_cli("check", "--db", closed, "--month", "2026-10")
    assert october.exit_code == 4
    lines = october.output.splitlines()
    assert lines[0] == "check: 2 budget(s) crossed"
    assert (
        "    CROSSED monthly (2026-10, all spend): $4.00 of $3.50 (114.3%),"
        " over by $0.50 since 2026-10-31"
    ) in lines
    assert (
        "    CROSSED daily (day 2026-10-15, all spend): $3.00 of $2.50 (120.0%),"
        " over by $0.50 since 2026-10-15"
    ) in lines
    # the nightly default: month to date; an October day crossed long ago is not news
    monkeypatch.setenv("BILLING_TODAY", "2026-11-21")
    night = run_cli("check", "--db", closed, "--format", "json")
    got = json.loads(night.output)
    assert got["period"] == {"start": "2026-11-01", "end": "2026-11-22"}
    assert [(b["budget_name"], b["period_start"], b["status"]) for b in got["budgets"]] == [
        ("daily", "2026-11-20", "ok"),  # yesterday: the restatement's -$0.50
        ("monthly", "2026-11-01", "crossed"),
    ]
    assert night.exit_code == 4


def test_a_batch_the_reconciler_captured_stays_in_its_month_across_nights(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """Against the loopback gateway: every GET answers already_billed with the time of
    the GET; the batch ended Oct 31 23:10 stays October spend, counted once."""
    ended = copy.deepcopy(CORPUS[0])
    ended["billing"].update(charged=True, reason="charged:captured")
    gw = Gateway(batches={ended["id"]: ended}, refinalize=True, reconciled=True)
    ids = tmp_path / "ids.txt"
    ids.write_text(ended["id"] + "\n")
    env = {"PHASEO_API_KEY": TOKEN}
    args = ("run", "--base-url", "", "--db", db, "--ids-file", ids, "-q")
    with serve(gw):
        for read_at in ("2026-11-01T02:00:00.000Z", "2026-11-02T02:00:00.000Z"):
            gw.read_at = read_at
            result = run_cli(*(gw.url if a == "" else a for a in args), env=env)
            assert result.exit_code == 0, result.output
    assert query(db, "select month::varchar, cost_nanos from spend_by_provider") == [
        ("2026-10-01", USD)
    ]
    assert query(
        db, "select BillingPeriodStart::date::varchar, x_CostNanos from focus_charges"
    ) == [("2026-10-01", USD)]
    assert scalar(db, "select charge_date_basis from stg_batches") == "ended"


def test_a_billed_batch_without_any_lifecycle_time_is_still_in_a_day(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """Hostile: no created/ended timestamps at all. Its money must not drop out of every
    dated total: it is dated by the first billing.finalized_at read, and says so."""
    bare = priced(1, "2026-11-03T04:00", USD, finalized="2026-11-03T05:00:00.000Z")
    for key in ("created_at", "in_progress_at", "completed_at"):
        bare.pop(key)
    nothing = copy.deepcopy(bare)
    nothing["id"] = bid(2)
    nothing["billing"].pop("finalized_at")
    path = write_jsonl(tmp_path / "bare.jsonl", [bare, nothing])
    result = run_cli("run", "--input", path, "--db", db, "-q")
    assert result.exit_code == 0, result.output
    assert query(db, "select batch_id, charge_date_basis from stg_batches order by batch_id") == [
        (bid(1), "capture"),
        (bid(2), "loaded"),
    ]
    assert scalar(db, "select sum(cost_nanos) from spend_by_provider") == 2 * USD
    assert scalar(db, "select count(*) from spend_by_provider where day is null") == 0
    assert scalar(db, "select sum(x_CostNanos) from focus_charges") == 2 * USD
    assert scalar(db, "select count(*) from focus_charges where ChargePeriodStart is null") == 0


def test_check_honours_csv_and_markdown(closed: Path, run_cli: Any) -> None:
    import csv
    import io

    out = run_cli("check", "--db", closed, "--month", "2026-10", "--format", "csv")
    assert out.exit_code == 4
    rows = list(csv.DictReader(io.StringIO(out.output)))
    crossed = {(r["name"], r["period_start"], r["spend_nanos"], r["since"]) for r in rows
               if r["status"] == "crossed"}  # fmt: skip
    assert crossed == {
        ("monthly", "2026-10-01", str(OCT_AS_BILLED), "2026-10-31"),
        ("daily", "2026-10-15", str(3 * USD), "2026-10-15"),
    }
    md = run_cli("check", "--db", closed, "--month", "2026-10", "--format", "markdown")
    assert md.output.splitlines()[0].startswith("| kind | name | period |")
