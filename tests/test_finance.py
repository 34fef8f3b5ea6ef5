"""Finance outputs: the HTML report in a real browser, budgets and `billing check`,
anomalies, the month-end forecast, attribution tags, price checks and waste."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import Result

from tests.helpers import (
    SAMPLE,
    batch,
    load,
    png_pixels,
    query,
    rebilled,
    scalar,
    write_jsonl,
)

Cli = Callable[..., Result]


def billed(
    n: int,
    day: str,
    nanos: int,
    provider: str = "openai",
    model: str = "gpt-5",
    status: str = "completed",
    metadata: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A consistent billed batch: one priced line of `nanos` tokens at $1 per 1e9 tokens."""
    when = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)
    obj = batch(n, provider=provider, status=status, metadata={"model": model, **(metadata or {})})
    obj = rebilled(obj, nanos, when.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    obj["created_at"] = int(when.timestamp()) - 3600
    obj["completed_at"] = int(when.timestamp())
    obj["pricing_lines"] = [
        {
            "dimension": "input_text_tokens",
            "quantity": nanos,
            "billable_units": nanos / 1e9,
            "unit_size": 1000000000,
            "unit_price_usd": "1.000000000",
            "line_cost_usd": obj["billing"]["pricing_breakdown"]["total_usd_str"],
            "line_nanos": nanos,
            "pricing_plan": "batch",
            "service_tier": "batch",
        }
    ]
    obj.update(extra)
    return obj


def days(start: str, count: int) -> list[str]:
    first = datetime.fromisoformat(start)
    return [(first + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(count)]


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "billing.toml"
    path.write_text(text)
    return path


# -- the report, in a real browser ------------------------------------------------------


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _need_chromium() -> None:
    if _chromium() is None:
        if os.environ.get("REQUIRE_CHROMIUM"):
            pytest.fail("REQUIRE_CHROMIUM is set but no chromium is installed")
        pytest.skip("no chromium on this machine (.ci/run installs Debian's)")


def _render(html_file: Path, profile: Path, *extra: str) -> str:
    browser = _chromium()
    assert browser is not None
    proc = subprocess.run(
        [
            browser,
            *extra,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *(() if any(a.startswith("--print-to-pdf") for a in extra) else ("--dump-dom",)),
            html_file.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_the_report_renders_offline_in_chromium_with_its_charts_and_exact_total(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    _need_chromium()
    out = tmp_path / "november.html"
    result = run_cli("report", "--db", db, "--out", out, "--month", "2026-11")
    assert result.exit_code == 0, result.output
    november = scalar(
        db,
        "select sum(cost_nanos) from spend_by_provider"
        " where day >= '2026-11-01' and day < '2026-12-01'",
    )
    total = f"${Decimal(november) / 10**9:,.9f}"
    assert result.output == f"{out}: November 2026, {total}\n"
    page = out.read_text()
    # self-contained: nothing fetched from anywhere
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "http://" not in page and "https://" not in page
    dom = _render(out, tmp_path / "profile")
    # four charts and one per tag key (model, team): all laid out by the browser
    assert 'data-charts-drawn="6"' in dom
    cents = f"${Decimal(november + 5_000_000) // 10_000_000 / 100:,.2f}"
    assert f'<div class="total" id="total" title="exact: {total}">{cents}</div>' in dom
    assert f'<span id="total-exact">{total}</span>' in dom  # the exact figure one step away
    assert '<strong id="data-through">data through 2026-11-27</strong>' in dom
    assert '<span id="previous">October 2026: $321.85 (+14.6%)</span>' in dom
    for heading in ("Spend over time", "By model", "Top sessions", "Top tags", "Budgets",
                    "Anomalies", "Month-end forecast", "Price checks", "Reconciliation",
                    "What the spend bought", "Priced but not billed",
                    "Restated bills"):  # fmt: skip
        assert f"<h2>{heading}" in dom, heading
    data = json.loads(dom.split('id="report-data">')[1].split("</script>")[0])
    assert int(data["total_cost_nanos"]) == november
    # each table's exact figures download as CSV from the page itself (a data: URL)
    links = dict(
        re.findall(
            r'<a class="csv" download="([^"]+)" href="data:text/csv;charset=utf-8,([^"]+)"', dom
        )
    )
    assert {"spend_by_day.csv", "spend_by_provider.csv", "spend_by_model.csv",
            "top_sessions.csv", "spend_by_tag_team.csv"} <= set(links)  # fmt: skip
    for name in ("spend_by_day.csv", "spend_by_provider.csv", "spend_by_model.csv",
                 "top_sessions.csv", "spend_by_tag_team.csv"):  # fmt: skip
        rows = list(csv.reader(io.StringIO(unquote(html.unescape(links[name])))))
        assert len({len(r) for r in rows}) == 1, name  # every row has every column
        cost = rows[0].index("total_nanos" if name == "spend_by_day.csv" else "cost_nanos")
        assert rows[-1][0] == "total" and int(rows[-1][cost]) == november, name
        assert sum(int(r[cost]) for r in rows[1:-1]) == november, name  # the rows add up
        assert Decimal(rows[-1][cost + 1]) * 10**9 == november  # and the exact dollars
    assert rows[0] == ["tag_value", "batches", "cost_nanos", "cost_usd"]


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_report_period_options_and_a_bad_month(run_cli: Cli, db: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    whole = run_cli("report", "--db", db, "--out", out, "--since", "2026-10-01")
    assert whole.exit_code == 0
    assert whole.output == f"{out}: 2026-10-01 to 2026-11-27, $690.661169561\n"
    default = run_cli("report", "--db", db, "--out", out)
    assert default.output.startswith(f"{out}: November 2026, $")
    bad = run_cli("report", "--db", db, "--out", out, "--month", "2026-13")
    assert (bad.exit_code, bad.output) == (
        2,
        "billing: error: --month must be YYYY-MM, got '2026-13'\n",
    )
    folder = run_cli("report", "--db", db, "--out", tmp_path)
    assert folder.exit_code == 2


# -- budgets -----------------------------------------------------------------------------

BUDGETS = """
[[budget]]
name = "openai monthly"
period = "month"
provider = "openai"
limit_usd = "3.5"

[[budget]]
name = "research daily"
period = "day"
tag = "team=research"
limit_usd = "1.5"

[[budget]]
name = "everything"
limit_usd = "1000"
"""


def _budget_data(tmp_path: Path) -> Path:
    items = [billed(i, d, 1_000_000_000) for i, d in enumerate(days("2026-11-01", 4), 1)]
    items.append(
        billed(10, "2026-11-04", 2_500_000_000, provider="mistral", metadata={"team": "research"})
    )
    items.append(billed(11, "2026-11-04", 100_000_000, provider="anthropic", model="claude"))
    return write_jsonl(tmp_path / "in.jsonl", items)


def test_a_crossed_budget_shows_in_the_summary_the_view_and_check_exits_4(
    run_cli: Cli, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_TODAY", "2026-11-04")  # the night after the data's last day
    cfg = _config(tmp_path, BUDGETS)
    run = run_cli("run", _budget_data(tmp_path), "--db", db, "--config", cfg)
    assert run.exit_code == 0, run.output  # opt-in: a crossed budget never fails a load
    assert (
        "  budgets     2 crossed, 0 at 80% or more of 3 budget periods in 2026-11-01 to"
        " 2026-11-04 (month to date) (see view budget_status)"
    ) in run.output
    assert (
        "    CROSSED openai monthly (2026-11, provider=openai): $4.00 of $3.50 (114.3%),"
        " over by $0.50 since 2026-11-04"
    ) in run.output
    assert (
        "    CROSSED research daily (day 2026-11-04, team=research): $2.50 of $1.50 (166.7%),"
        " over by $1.00 since 2026-11-04"
    ) in run.output
    rows = query(
        db,
        "select budget_name, period_start::varchar, spend_nanos, limit_nanos, status"
        " from budget_status order by budget_name, period_start",
    )
    assert rows == [
        ("everything", "2026-11-01", 6_600_000_000, 1_000_000_000_000, "ok"),
        ("openai monthly", "2026-11-01", 4_000_000_000, 3_500_000_000, "crossed"),
        ("research daily", "2026-11-04", 2_500_000_000, 1_500_000_000, "crossed"),
    ]
    check = run_cli("check", "--db", db)
    assert check.exit_code == 4
    assert check.output.startswith("check: 2 budget(s) crossed\n")
    as_json = run_cli("check", "--db", db, "--format", "json")
    assert as_json.exit_code == 4
    assert sorted(b["budget_name"] for b in json.loads(as_json.output)["budgets"] if
                  b["status"] == "crossed") == ["openai monthly", "research daily"]  # fmt: skip
    # run --check: the load is committed and the exit code says a budget is crossed
    again = run_cli("run", _budget_data(tmp_path), "--db", db, "--check", "-q")
    assert again.exit_code == 4
    assert scalar(db, "select count(*) from load_runs") == 2


def test_check_with_a_config_tries_budgets_without_storing_them(
    run_cli: Cli, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_TODAY", "2026-11-04")  # the night after the data's last day
    assert run_cli("run", _budget_data(tmp_path), "--db", db, "-q").exit_code == 0
    assert scalar(db, "select count(*) from budgets") == 0
    assert run_cli("check", "--db", db).exit_code == 0
    generous = _config(tmp_path, '[[budget]]\nlimit_usd = "100"\n')
    ok = run_cli("check", "--db", db, "--config", generous)
    assert (ok.exit_code, ok.output.splitlines()[0]) == (
        0,
        "check: ok: no budget crossed, no anomaly",
    )
    tight = tmp_path / "tight.toml"
    tight.write_text('[[budget]]\nname = "tight"\nlimit_usd = "1"\n')
    crossed = run_cli("check", "--db", db, "--config", tight)
    assert crossed.exit_code == 4
    assert (
        "CROSSED tight (2026-11, all spend): $6.60 of $1.00 (660.0%), over by $5.60"
        " since 2026-11-02"  # $1.00 on Nov 1 is at the limit, not above it
    ) in crossed.output
    assert scalar(db, "select count(*) from budgets") == 0  # nothing was written


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[budget]]\nperiod = "week"\nlimit_usd = "1"\n', 'period must be "day" or "month"'),
        ('[[budget]]\nperiod = "day"\n', "limit_usd is required"),
        ('[[budget]]\nlimit_usd = "1.0000000001"\n', "at most 9 decimals"),
        ('[[budget]]\nlimit_usd = "-3"\n', "non-negative"),
        ('[[budget]]\nlimit_usd = "ten"\n', 'must be a dollar amount like "12.50"'),
        ('[[budget]]\nlimit_usd = "1"\ntag = "research"\n', "tag must look like team=research"),
        ('[[budget]]\nlimit_usd = "1"\ncolour = "red"\n', "unknown key(s) colour"),
        (
            '[[budget]]\nname = "a"\nlimit_usd = "1"\n[[budget]]\nname = "a"\nlimit_usd = "2"\n',
            "two budgets have the same name",
        ),
        ('[prices]\nfile = "nope.csv"\n', "does not exist"),
        ('[[budget]]\nlimit_usd = "sNaN"\n', "at most 9 decimals"),
        ('[[budget]]\nlimit_usd = "1e30"\n', "must be at most $9,223,372,036.854775807"),
        ("[[budget]]\nlimit_usd = 1e30\n", "must be at most $9,223,372,036.854775807"),
        (
            '[[prices.price]]\nprovider = "openai"\ndimension = "x"\nunit_size = "1'
            + "0" * 20
            + '"\nunit_price_usd = "1"\n',
            "unit_size must be from 1 to 1,000,000,000,000,000",
        ),
        (
            '[[prices.price]]\nprovider = "openai"\ndimension = "x"\nunit_price_usd = "'
            + "9" * 29
            + '"\n',
            "unit_price_usd must be at most $9,223,372,036.854775807",
        ),
        ('[attribution]\ntags = "team"\n', "attribution.tags must be a list of keys"),
    ],
)
def test_bad_budget_price_and_tag_config_is_refused(
    run_cli: Cli, db: Path, tmp_path: Path, text: str, message: str
) -> None:
    cfg = _config(tmp_path, text)
    result = run_cli("run", SAMPLE, "--db", db, "--config", cfg)
    assert result.exit_code == 2
    assert message in result.output
    assert not db.exists()


# -- anomalies ---------------------------------------------------------------------------


def test_an_injected_spike_shows_in_spend_anomalies_the_summary_and_check(
    run_cli: Cli, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_TODAY", "2026-10-21")  # the night after the data's last day
    steady = [
        billed(i, d, 1_000_000_000 + (i % 3) * 50_000_000)
        for i, d in enumerate(days("2026-10-01", 20), 1)
    ]
    spike = billed(100, "2026-10-21", 9_000_000_000)
    data = write_jsonl(tmp_path / "in.jsonl", [*steady, spike])
    run = run_cli("run", data, "--db", db)
    assert run.exit_code == 0
    assert "  anomalies   2 (see view spend_anomalies)" in run.output
    rows = query(
        db,
        "select day::varchar, level, provider, model, cost_nanos, baseline_median_nanos,"
        " rule from spend_anomalies order by level",
    )
    assert rows == [
        ("2026-10-21", "model", "openai", "gpt-5", 9_000_000_000, 1_050_000_000, "baseline"),
        ("2026-10-21", "provider", "openai", "*", 9_000_000_000, 1_050_000_000, "baseline"),
    ]
    explanation = scalar(db, "select explanation from spend_anomalies where level = 'provider'")
    assert explanation.startswith(
        "spend $9.00 vs a median of $1.05 on the 20 days with spend before"
    )
    check = run_cli("check", "--db", db)
    assert check.exit_code == 5
    assert check.output.startswith("check: 2 spend anomaly(ies)\n")
    # steady spend alone is not an anomaly
    quiet = tmp_path / "quiet.duckdb"
    load(run_cli, quiet, tmp_path / "q.jsonl", steady)
    assert scalar(quiet, "select count(*) from spend_anomalies") == 0
    assert run_cli("check", "--db", quiet).exit_code == 0


def test_with_little_history_a_day_three_times_the_day_before_is_flagged(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    items = [billed(1, "2026-10-01", 1_000_000_000), billed(2, "2026-10-02", 3_500_000_000)]
    load(run_cli, db, tmp_path / "in.jsonl", items)
    assert query(db, "select level, rule, explanation from spend_anomalies order by level") == [
        ("model", "day_over_day", "spend $3.50 is 3.5x the day before"),
        ("provider", "day_over_day", "spend $3.50 is 3.5x the day before"),
    ]


# -- forecast, waste, tags -------------------------------------------------------------


def test_month_end_forecast_is_run_rate_plus_running_batches_and_says_estimate(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    items = [billed(i, d, 1_000_000_000) for i, d in enumerate(days("2026-11-01", 10), 1)]
    running = batch(50, status="in_progress", provider="openai")
    running.pop("completed_at")
    running["created_at"] = items[-1]["completed_at"]
    running["request_counts"] = {"total": 200, "completed": 100, "failed": 0}
    running["billing"] = {"cost_nanos": 500_000_000}
    items.append(running)
    load(run_cli, db, tmp_path / "in.jsonl", items)
    rows = query(
        db,
        "select month::varchar, as_of::varchar, provider, billed_nanos, days_left,"
        " run_rate_nanos_per_day, projected_rest_nanos, running_batches,"
        " running_estimate_nanos, forecast_nanos, is_estimate from spend_forecast"
        " order by provider",
    )
    assert rows == [
        ("2026-11-01", "2026-11-10", "*", 10_000_000_000, 20, 1_000_000_000, 20_000_000_000,
         1, 500_000_000, 30_500_000_000, True),
        ("2026-11-01", "2026-11-10", "openai", 10_000_000_000, 20, 1_000_000_000,
         20_000_000_000, 1, 500_000_000, 30_500_000_000, True),
    ]  # fmt: skip


def test_waste_counts_failed_and_expired_batches_and_failed_requests(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    ok = billed(1, "2026-11-02", 1_000_000_000)
    ok["requests"] = [
        {"id": "r1", "model": "gpt-5", "status": "completed", "cost_nanos": 700_000_000},
        {"id": "r2", "model": "gpt-5", "status": "failed", "response_status": 500,
         "cost_nanos": 300_000_000},
    ]  # fmt: skip
    failed = billed(2, "2026-11-02", 400_000_000, status="failed")
    expired = billed(3, "2026-11-03", 250_000_000, status="expired")
    load(run_cli, db, tmp_path / "in.jsonl", [ok, failed, expired])
    assert query(
        db,
        "select month::varchar, provider, billed_nanos, error_response_nanos, failed_requests,"
        " waste_nanos, failed_batch_nanos, expired_batch_nanos, ended_badly_nanos"
        " from spend_waste",
    ) == [  # the failed and expired batches delivered what they billed: not waste
        ("2026-11-01", "openai", 1_650_000_000, 300_000_000, 1, 300_000_000, 400_000_000,
         250_000_000, 650_000_000)
    ]  # fmt: skip


def test_spend_by_tag_uses_the_chosen_keys_and_shows_untagged_spend(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    cfg = _config(tmp_path, '[attribution]\ntags = ["team", "project"]\n')
    items = [
        billed(1, "2026-11-02", 1_000_000_000, metadata={"team": "search", "project": "p1"}),
        billed(2, "2026-11-02", 2_000_000_000, metadata={"team": "ads"}),
        billed(3, "2026-11-02", 4_000_000_000, metadata={"other": "x"}),
    ]
    load(run_cli, db, tmp_path / "in.jsonl", items, "--config", cfg)
    rows = query(
        db,
        "select tag_key, tag_value, sum(cost_nanos) from spend_by_tag group by all"
        " order by tag_key, tag_value",
    )
    assert rows == [
        ("project", "(untagged)", 6_000_000_000),
        ("project", "p1", 1_000_000_000),
        ("team", "(untagged)", 4_000_000_000),
        ("team", "ads", 2_000_000_000),
        ("team", "search", 1_000_000_000),
    ]
    # FOCUS Tags carry the chosen keys
    tags = query(db, "select ResourceId, Tags from focus_charges order by ResourceId")
    assert [(r, json.loads(t)) for r, t in tags] == [
        (items[0]["id"], {"team": "search", "project": "p1"}),
        (items[1]["id"], {"team": "ads"}),
        (items[2]["id"], {}),
    ]


# -- price checks --------------------------------------------------------------------------


def test_price_checks_flag_arithmetic_unpriced_and_price_list_differences(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    (tmp_path / "prices.csv").write_text(
        "provider,model,dimension,plan,unit_size,unit_price_usd,effective_from,effective_to\n"
        "openai,gpt-5,input_text_tokens,batch,1000000000,1.000000000,2026-11-01,\n"
        "openai,*,input_text_tokens,,,0.900000000,,\n"
        "anthropic,claude,input_text_tokens,,,1.000000000,,2026-11-03\n"
    )
    cfg = _config(tmp_path, '[prices]\nfile = "prices.csv"\n')
    good = billed(1, "2026-11-02", 1_000_000_000)
    off = billed(2, "2026-11-02", 1_000_000_000)
    off["pricing_lines"][0]["line_nanos"] = 1_000_000_100  # billed 100 nanos over its price
    old = billed(3, "2026-10-30", 2_000_000_000)  # before the list's gpt-5 entry: $0.90
    unpriced = billed(4, "2026-11-02", 1_000_000_000)
    unpriced["pricing_lines"][0].update(unit_price_usd="0.000000000")
    stale = billed(5, "2026-11-04", 1_000_000_000, provider="anthropic", model="claude")
    load(run_cli, db, tmp_path / "in.jsonl", [good, off, old, unpriced, stale], "--config", cfg)
    rows = query(
        db,
        "select batch_id, status, expected_line_nanos, arithmetic_diff_nanos,"
        " list_unit_price_usd, list_line_nanos, list_diff_nanos from price_checks"
        " order by batch_id",
    )
    assert rows == [
        (good["id"], "ok", 1_000_000_000, 0, Decimal("1.000000000"), 1_000_000_000, 0),
        (off["id"], "arithmetic_mismatch", 1_000_000_000, 100, Decimal("1.000000000"),
         1_000_000_000, 100),
        (old["id"], "list_mismatch", 2_000_000_000, 0, Decimal("0.900000000"), 1_800_000_000,
         200_000_000),
        (unpriced["id"], "unpriced", 0, 1_000_000_000, Decimal("1.000000000"), 1_000_000_000,
         0),
        (stale["id"], "not_in_list", 1_000_000_000, 0, None, None, None),
    ]  # fmt: skip


def test_price_list_csv_problems_are_named(run_cli: Cli, db: Path, tmp_path: Path) -> None:
    (tmp_path / "prices.csv").write_text("provider,dimension\nopenai,input_text_tokens\n")
    cfg = _config(tmp_path, '[prices]\nfile = "prices.csv"\n')
    result = run_cli("run", SAMPLE, "--db", db, "--config", cfg)
    assert result.exit_code == 2
    assert f"price list {tmp_path / 'prices.csv'} lacks column(s) unit_price_usd" in result.output
    (tmp_path / "prices.csv").write_text(
        "provider,dimension,unit_price_usd,effective_from\nopenai,x,1.0,yesterday\n"
    )
    result = run_cli("run", SAMPLE, "--db", db, "--config", cfg)
    assert result.exit_code == 2
    assert "line 2: effective_from must be a date YYYY-MM-DD" in result.output


def test_the_example_config_loads_the_sample(run_cli: Cli, db: Path) -> None:
    from tests.helpers import REPO

    cfg = REPO / "docs" / "billing.example.toml"
    result = run_cli("run", SAMPLE, "--db", db, "--config", cfg)
    assert result.exit_code == 0, result.output
    assert query(db, "select name from budgets order by name") == [
        ("all spend per month",),
        ("anthropic per day",),
        ("research team per month",),
    ]
    assert scalar(db, "select count(*) from price_list") == 3
    assert query(db, "select tag_key from attribution_keys order by 1") == [("model",), ("team",)]
    statuses = dict(query(db, "select status, count(*) from price_checks group by 1"))
    assert statuses["ok"] > 0 and statuses["not_in_list"] > 0
    assert scalar(db, "select distinct BillingAccountId from focus_charges") == "acme-001"


def test_with_sparse_history_a_day_three_times_the_usual_is_flagged(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    items = [
        billed(1, "2026-10-01", 1_000_000_000),
        billed(2, "2026-10-05", 1_200_000_000),
        billed(3, "2026-10-09", 5_000_000_000),  # no spend the day before
    ]
    load(run_cli, db, tmp_path / "in.jsonl", items)
    assert query(db, "select day::varchar, rule, explanation from spend_anomalies"
                     " where level = 'provider'") == [
        ("2026-10-09", "day_over_day",
         "spend $5.00 is 4.5x the median of the 2 earlier days with spend"),
    ]  # fmt: skip


def test_budget_and_price_spellings_people_reach_for_are_understood(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    (tmp_path / "p.csv").write_text(
        "provider,model,dimension,pricing_plan,price_usd,valid_from\n"
        "openai,gpt-5,input_text_tokens,batch,0.5,2026-01-01\n"
    )
    cfg = _config(
        tmp_path,
        '[[budgets]]\nname = "b"\nperiod = "monthly"\namount_usd = 1\n'
        'tag = { team = "research" }\n[prices]\nfile = "p.csv"\n',
    )
    items = [billed(1, "2026-11-02", 2_000_000_000, metadata={"team": "research"})]
    load(run_cli, db, tmp_path / "in.jsonl", items, "--config", cfg)
    assert query(db, "select period, limit_nanos, tag_key, tag_value from budgets") == [
        ("month", 1_000_000_000, "team", "research")
    ]
    assert query(db, "select status, list_diff_nanos from price_checks") == [
        ("list_mismatch", 1_000_000_000)
    ]


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_check_and_report_on_a_database_from_an_older_version_say_how_to_upgrade(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    con.execute("drop view budget_status")
    con.close()
    for args in (("check",), ("report", "--out", tmp_path / "r.html")):
        result = run_cli(*args, "--db", db)
        assert result.exit_code == 2
        assert result.output == (
            "billing: error: this database has no budget_status (written by an older "
            "version): run `billing run` on it once (any input) to add them\n"
        )
    assert run_cli("run", SAMPLE, "--db", db, "-q").exit_code == 0  # a run brings them back
    assert run_cli("check", "--db", db).exit_code in (0, 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('provider,dimension,unit_price_usd\nopenai,x,"1\n', "unexpected end of data"),
        ("provider,dimension,unit_price_usd\nopenai," + "x" * 200_000 + ",1\n", "field limit"),
    ],
)
def test_a_price_list_that_is_not_readable_csv_is_one_line(
    run_cli: Cli, db: Path, tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "prices.csv").write_text(text)
    cfg = _config(tmp_path, '[prices]\nfile = "prices.csv"\n')
    result = run_cli("run", SAMPLE, "--db", db, "--config", cfg)
    assert result.exit_code == 2
    assert result.output.startswith(
        f"billing: error: price list {tmp_path / 'prices.csv'} near line 2:"
    )
    assert message in result.output and result.output.count("\n") == 1
    assert not db.exists()


def test_a_budget_whose_scope_differs_only_in_case_or_look_alikes_is_named(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    """A budget on provider 'OpenAI' (or a pasted Cyrillic 'о') matches none of the
    gateway's 'openai' spend: it is never silently zero, and never guessed either."""
    cfg = _config(
        tmp_path,
        '[[budget]]\nname = "caps"\nprovider = "OpenAI"\nlimit_usd = "1"\n'
        '[[budget]]\nname = "cyrillic"\nprovider = "\u043epenai"\nlimit_usd = "1"\n'
        '[[budget]]\nname = "exact"\nprovider = "openai"\nlimit_usd = "100"\n',
    )
    data = write_jsonl(tmp_path / "in.jsonl", [billed(1, "2026-11-02", 2_000_000_000)])
    assert run_cli("run", data, "--db", db, "--config", cfg, "-q").exit_code == 0
    checked = run_cli("check", "--db", db, "--month", "2026-11")
    assert checked.exit_code == 0, checked.output
    assert checked.output.splitlines()[-2:] == [
        "  scope       budget 'caps': provider='OpenAI' matches no spend, but 'openai' has"
        " $2.000000000 (the names differ in case or look-alike letters)",
        "  scope       budget 'cyrillic': provider='\u043epenai' matches no spend, but 'openai'"
        " has $2.000000000 (the names differ in case or look-alike letters)",
    ]
    notes = json.loads(
        run_cli("check", "--db", db, "--month", "2026-11", "--format", "json").output
    )
    assert len(notes["notes"]) == 2


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_each_provider_has_one_colour_in_every_chart_of_the_report(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:

    out = tmp_path / "r.html"
    assert run_cli("report", "--db", db, "--out", out, "--month", "2026-11").exit_code == 0
    page = out.read_text()
    fills: dict[str, set[str]] = {}
    # stacked days ("2026-11-03 openai: $..."), provider bars ("openai: $..."), model and
    # session bars ("openai / gpt-5: $...", "sess_001 (openai): $...")
    for fill, title in re.findall(r'fill="(#[0-9A-F]{6})"><title>([^<]*)</title>', page):
        name = title.rsplit(": ", 1)[0]
        m = re.fullmatch(r"\d{4}-\d\d-\d\d (\S+)|([^ /()=]+)(?: / .*)?|\S+ \(([^)]+)\)", name)
        if m and fill != "#6B7A8F":  # the neutral colour: tag bars, no provider
            fills.setdefault(next(g for g in m.groups() if g), set()).add(fill)
    assert fills == {
        "anthropic": {"#4C78A8"},
        "google-vertex": {"#F58518"},
        "groq": {"#54A24B"},
        "mistral": {"#E45756"},
        "openai": {"#72B7B2"},
    }


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_the_report_fits_a_400_px_screen_and_prints_to_pdf(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    _need_chromium()
    out = tmp_path / "r.html"
    assert run_cli("report", "--db", db, "--out", out, "--month", "2026-11").exit_code == 0
    import duckdb

    from pipeline import finance

    con = duckdb.connect(str(db), read_only=True)
    try:
        palette = finance.provider_colors(con)
    finally:
        con.close()
    for width in (1280, 400):
        # one browser run: the DOM as laid out, and a screenshot of what a reader sees
        png = tmp_path / f"shot{width}.png"
        dom = _render(
            out, tmp_path / f"p{width}", f"--window-size={width},800", f"--screenshot={png}"
        )
        assert 'data-charts-drawn="6"' in dom, width
        assert 'data-overflows="no"' in dom, width  # no content beyond the window
        assert 'data-clipped="0"' in dom, width  # nothing cut where it cannot be scrolled to
        assert '<strong id="data-through">data through 2026-11-27</strong>' in dom
        assert re.search(r'<div class="total" id="total" title="exact: \$[\d,.]+">\$368\.81<', dom)
        # the first screen: every provider in its one colour
        w, h, rows = png_pixels(png.read_bytes())
        assert (w, h) == (width, 800)
        seen: dict[str, int] = {}
        for row in rows:
            for i in range(0, len(row), 3):
                key = "#" + row[i : i + 3].hex().upper()
                seen[key] = seen.get(key, 0) + 1
        for provider, colour in palette.items():
            assert seen.get(colour, 0) >= 30, (width, provider, colour)
    pdf = tmp_path / "r.pdf"
    _render(out, tmp_path / "pdf", f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type\s*/Page(?![s\w])", data)) >= 2  # pages, not /Pages
    assert b"/MediaBox [0 0 595" in data or b"/MediaBox [0 0 594" in data  # A4 wide


@pytest.mark.usefixtures("sample_loaded")  # db holds the sample
def test_each_tag_key_sums_to_the_total_with_untagged_and_others(run_cli: Cli, db: Path) -> None:
    """The top-tags table mixed keys in one list and summed to twice the total."""
    import duckdb

    from pipeline import finance

    con = duckdb.connect(str(db), read_only=True)
    try:
        p = finance.period(con, "2026-11")
        total = finance.totals(con, p)["cost_nanos"]
        rows = finance.top_tags(con, p, limit=2)
    finally:
        con.close()
    keys = sorted({r["tag_key"] for r in rows})
    assert keys == ["model", "team"]
    for key in keys:
        mine = [r for r in rows if r["tag_key"] == key]
        assert sum(r["cost_nanos"] for r in mine) == total, key
        assert mine[-1]["tag_value"] == "(others)" and len(mine) == 3
