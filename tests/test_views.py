"""Every view and the analyst commands, with exact numbers on a small fixture."""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.helpers import batch, query, write_jsonl

D = Decimal


def fixture_batches() -> list[dict[str, Any]]:
    a = batch(1, metadata={"model": "gpt-5"})  # openai, sess_a, 300M = lines 200M + 100M
    a["requests"] = [  # the models the provider reported: 250M + 40M, 10M unattributed
        {
            "id": "r1",
            "request_index": 0,
            "model": "gpt-5",
            "status": "completed",
            "response_status": 200,
            "cost_nanos": 200_000_000,
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        },
        {
            "id": "r2",
            "request_index": 1,
            "model": "gpt-5",
            "status": "completed",
            "response_status": 200,
            "cost_nanos": 50_000_000,
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
        {
            "id": "r3",
            "request_index": 2,
            "model": "gpt-5-mini",
            "status": "completed",
            "response_status": 200,
            "cost_nanos": 40_000_000,
        },
        {
            "id": "r4",
            "request_index": 3,
            "model": "gpt-5-mini",
            "status": "failed",
            "response_status": 400,
            "cost_nanos": 0,
            "error_body": {"error": "bad"},
        },
    ]
    b = batch(2, provider="anthropic", session_id="sess_b", cost_nanos=1_000_000_000)
    b["pricing_lines"] = [
        dict(b["pricing_lines"][0], line_nanos=600_000_000, line_cost_usd="0.600000000")
    ]
    b["billing"]["pricing_breakdown"]["total_nanos"] = 1_000_000_000
    b["billing"]["pricing_breakdown"]["total_usd_str"] = "1.000000000"
    b["billing"]["cost_usd"] = 1.0
    c = batch(3, status="in_progress", billing=None, pricing_lines=[], completed_at=None)
    d = batch(
        4,
        status="failed",
        session_id="sess_c",
        completed_at=None,
        failed_at=1793664000,
        pricing_lines=[],
        cost_nanos=50_000_000,
    )  # failed_at 2026-11-03
    d["billing"].update(finalized_at=None, cost_usd=0.05, pricing_breakdown=None)
    return [a, b, c, d]


@pytest.fixture
def loaded(run_cli: Any, db: Path, tmp_path: Path) -> Path:
    result = run_cli(
        "run", "--input", write_jsonl(tmp_path / "in.jsonl", fixture_batches()), "--db", db
    )
    assert result.exit_code == 0, result.output
    return db


def test_spend_by_provider(loaded: Path) -> None:
    assert query(
        loaded,
        "select day::varchar, week::varchar, month::varchar, provider, batches,"
        " billed_batches, cost_nanos, cost_usd from spend_by_provider",
    ) == [  # as billed: the batch without a bill is no spend and has no row
        (
            "2026-11-02",
            "2026-11-02",
            "2026-11-01",
            "anthropic",
            1,
            1,
            1_000_000_000,
            D("1.000000000"),
        ),
        ("2026-11-02", "2026-11-02", "2026-11-01", "openai", 1, 1, 300_000_000, D("0.300000000")),
        ("2026-11-03", "2026-11-02", "2026-11-01", "openai", 1, 1, 50_000_000, D("0.050000000")),
    ]


def test_spend_by_session(loaded: Path) -> None:
    assert query(
        loaded,
        "select session_id, provider, batches, billed_batches, cost_nanos, cost_usd,"
        " first_activity_at::varchar, cost_rank from spend_by_session",
    ) == [
        ("sess_b", "anthropic", 1, 1, 1_000_000_000, D("1.000000000"), "2026-11-01 00:00:00+00", 1),
        ("sess_a", "openai", 2, 1, 300_000_000, D("0.300000000"), "2026-11-01 00:00:00+00", 2),
        ("sess_c", "openai", 1, 1, 50_000_000, D("0.050000000"), "2026-11-01 00:00:00+00", 3),
    ]


def test_spend_by_model_comes_from_request_rows_exact_to_the_nano(loaded: Path) -> None:
    assert query(
        loaded,
        "select day::varchar, provider, model, attribution, batches, requests, input_tokens,"
        " cost_nanos from spend_by_model",
    ) == [
        # no request rows: its requests are the gateway's request_counts.total
        ("2026-11-02", "anthropic", "unknown", "none", 1, 2, None, 1_000_000_000),
        ("2026-11-02", "openai", "gpt-5", "requests", 1, 2, 13, 250_000_000),
        ("2026-11-02", "openai", "gpt-5-mini", "requests", 1, 2, 0, 40_000_000),
        ("2026-11-02", "openai", "unattributed", "unattributed", 1, 0, 0, 10_000_000),
        ("2026-11-03", "openai", "unknown", "none", 1, 2, None, 50_000_000),
    ]
    assert query(loaded, "select sum(cost_nanos) from spend_by_model") == query(
        loaded, "select sum(cost_nanos) from batches"
    )
    assert query(
        loaded,
        "select model, request_status, requests, error_responses, cost_nanos"
        " from spend_by_request_status",
    ) == [
        ("gpt-5", "completed", 2, 0, 250_000_000),
        ("gpt-5-mini", "completed", 1, 0, 40_000_000),
        ("gpt-5-mini", "failed", 1, 1, 0),
    ]
    assert query(
        loaded, "select request_id, input_tokens, output_tokens from batch_requests order by 1"
    ) == [("r1", 10, 5), ("r2", 3, 1), ("r3", None, None), ("r4", None, None)]


def test_spend_by_dimension_explains_every_nano(loaded: Path) -> None:
    assert query(
        loaded,
        "select day::varchar, provider, model, dimension, batches, lines, quantity,"
        " cost_nanos from spend_by_dimension",
    ) == [
        ("2026-11-02", "anthropic", "unknown", "adjustment", 1, 1, None, 400_000_000),
        ("2026-11-02", "anthropic", "unknown", "input_text_tokens", 1, 1, 100000.0, 600_000_000),
        ("2026-11-02", "openai", "gpt-5", "batch_requests", 1, 1, 2.0, 100_000_000),
        ("2026-11-02", "openai", "gpt-5", "input_text_tokens", 1, 1, 100000.0, 200_000_000),
        ("2026-11-03", "openai", "unknown", "adjustment", 1, 1, None, 50_000_000),
    ]


def test_batch_outcomes(loaded: Path) -> None:
    assert query(
        loaded,
        "select day::varchar, provider, status, batches, requests_total,"
        " median_lifecycle_s, cost_nanos, is_unsuccessful from batch_outcomes",
    ) == [
        ("2026-11-01", "anthropic", "completed", 1, 2, 3600.0, 1_000_000_000, False),
        ("2026-11-01", "openai", "completed", 1, 2, 3600.0, 300_000_000, False),
        ("2026-11-01", "openai", "failed", 1, 2, 172800.0, 50_000_000, True),
        ("2026-11-01", "openai", "in_progress", 1, 2, None, 0, False),
    ]


def test_billing_reconciliation(loaded: Path) -> None:
    rows = query(
        loaded,
        "select batch_id, check_name, expected_nanos, actual_nanos from billing_reconciliation",
    )
    assert rows == [
        # batch 1's request rows explain 290M of its 300M bill (the gateway writes every
        # request's cost: the rows should sum to the bill)
        (batch(1)["id"], "requests_vs_cost", 300_000_000, 290_000_000),
        (batch(2)["id"], "lines_vs_cost", 1_000_000_000, 600_000_000),
    ]


def test_focus_charges_sum_exactly_to_the_bill(loaded: Path) -> None:
    rows = query(
        loaded,
        "select ResourceId, SkuId, ChargeCategory, BilledCost, EffectiveCost,"
        " BillingCurrency, ChargePeriodStart::varchar, BillingPeriodStart::varchar,"
        " PricingQuantity, PricingUnit, ConsumedUnit, PublisherName, x_SessionId"
        " from focus_charges",
    )
    assert rows == [
        (
            batch(1)["id"],
            "openai:gpt-5:batch_requests",
            "Usage",
            D("0.100000000"),
            D("0.100000000"),
            "USD",
            "2026-11-01 00:00:00+00",  # the usage day (ended Nov 1 01:00; captured Nov 2)
            "2026-11-01 00:00:00+00",
            2.0,
            "Requests",
            "Requests",
            "openai",
            "sess_a",
        ),
        (
            batch(1)["id"],
            "openai:gpt-5:input_text_tokens",
            "Usage",
            D("0.200000000"),
            D("0.200000000"),
            "USD",
            "2026-11-01 00:00:00+00",
            "2026-11-01 00:00:00+00",
            0.1,
            "1000000 Tokens",
            "Tokens",
            "openai",
            "sess_a",
        ),
        (
            batch(2)["id"],
            "anthropic:unknown:adjustment",
            "Adjustment",
            D("0.400000000"),
            D("0.400000000"),
            "USD",
            "2026-11-01 00:00:00+00",
            "2026-11-01 00:00:00+00",
            None,
            None,
            None,
            "anthropic",
            "sess_b",
        ),
        (
            batch(2)["id"],
            "anthropic:unknown:input_text_tokens",
            "Usage",
            D("0.600000000"),
            D("0.600000000"),
            "USD",
            "2026-11-01 00:00:00+00",
            "2026-11-01 00:00:00+00",
            0.1,
            "1000000 Tokens",
            "Tokens",
            "anthropic",
            "sess_b",
        ),
        (
            batch(4)["id"],
            "openai:unknown:adjustment",
            "Adjustment",
            D("0.050000000"),
            D("0.050000000"),
            "USD",
            "2026-11-03 00:00:00+00",
            "2026-11-01 00:00:00+00",
            None,
            None,
            None,
            "openai",
            "sess_c",
        ),
    ]
    assert query(loaded, "select sum(BilledCost), sum(x_CostNanos) from focus_charges") == [
        (D("1.350000000"), 1_350_000_000)
    ]


def test_query_command_prints_a_readable_table(run_cli: Any, loaded: Path) -> None:
    result = run_cli("query", "spend-by-provider", "--db", loaded, "--by", "month")
    assert result.exit_code == 0
    assert result.output == (
        "month       provider   batches  billed_batches  cost_nanos     cost_usd\n"
        "----------  ---------  -------  --------------  ----------  -----------\n"
        "2026-11-01  anthropic        1               1  1000000000  1.000000000\n"
        "2026-11-01  openai           2               2   350000000  0.350000000\n"
        "(2 rows)\n"
    )


def test_query_formats_and_date_filters(run_cli: Any, loaded: Path) -> None:
    csv = run_cli(
        "query",
        "spend-by-provider",
        "--db",
        loaded,
        "--format",
        "csv",
        "--since",
        "2026-11-02",
        "--until",
        "2026-11-03",
    )
    assert csv.output.splitlines() == [
        "day,week,month,provider,batches,billed_batches,corrections,cost_nanos,cost_usd",
        "2026-11-02,2026-11-02,2026-11-01,anthropic,1,1,0,1000000000,1.000000000",
        "2026-11-02,2026-11-02,2026-11-01,openai,1,1,0,300000000,0.300000000",
    ]
    js = json.loads(
        run_cli(
            "query", "spend-by-session", "--db", loaded, "--format", "json", "--limit", "1"
        ).output
    )
    assert js == [
        {
            "session_id": "sess_b",
            "provider": "anthropic",
            "batches": 1,
            "billed_batches": 1,
            "cost_nanos": 1000000000,
            "cost_usd": "1.000000000",
            "first_activity_at": "2026-11-01T00:00:00+00:00",
            "last_activity_at": "2026-11-02T03:04:05+00:00",
            "cost_rank": 1,
        }
    ]


def test_query_errors_are_one_line(run_cli: Any, loaded: Path, tmp_path: Path) -> None:
    unknown = run_cli("query", "spend-by-planet", "--db", loaded)
    assert unknown.exit_code == 2
    assert unknown.output == (
        "billing: error: unknown query 'spend-by-planet'; choose from: batch-outcomes, "
        "billing-reconciliation, budget-status, focus-charges, price-changes, price-checks, "
        "spend-anomalies, spend-as-used, spend-by-dimension, spend-by-model, spend-by-provider, "
        "spend-by-request-status, spend-by-session, spend-by-tag, spend-forecast, "
        "spend-restatements, spend-unbilled, spend-waste, wallet-runway, wallet-runway-status\n"
    )
    missing = run_cli("query", "spend-by-provider", "--db", tmp_path / "none.duckdb")
    assert missing.exit_code == 2
    assert "database not found" in missing.output
    write = run_cli("sql", "delete from batches", "--db", loaded)
    assert write.exit_code == 2
    assert (
        write.output
        == "billing: error: billing sql runs read-only queries only; got a DELETE statement\n"
    )
    assert query(loaded, "select count(*) from batches") == [(4,)]


def test_views_work_in_the_plain_duckdb_cli(loaded: Path) -> None:
    cli = shutil.which("duckdb") or str(Path(__import__("sys").executable).parent / "duckdb")
    if not Path(cli).exists():
        pytest.skip("duckdb CLI not installed")
    views = [
        "spend_by_provider",
        "spend_by_session",
        "spend_by_model",
        "batch_outcomes",
        "billing_reconciliation",
        "focus_charges",
    ]
    sql = " union all ".join(f"select '{v}', count(*) from {v}" for v in views)
    out = subprocess.run(
        [
            cli,
            "-readonly",
            "-csv",
            "-noheader",
            str(loaded),
            "-c",
            sql + "; select sum(BilledCost) from focus_charges;",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == [
        "spend_by_provider,3",
        "spend_by_session,3",
        "spend_by_model,5",
        "batch_outcomes,4",
        "billing_reconciliation,2",
        "focus_charges,5",
        "1.350000000",
    ]


def test_parquet_export_reads_back_with_the_same_totals(
    run_cli: Any, loaded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lake"
    assert run_cli("export", "--db", loaded, "--out", out).exit_code == 0
    stale = out / "batches" / "month=1999-01"
    stale.mkdir()
    (stale / "old.parquet").write_text("from an older export")
    # (a partition an earlier export wrote: its manifest lists it)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"].append("batches/month=1999-01/old.parquet")
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = run_cli("export", "--db", loaded, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"batches: 4 rows, $1.350000000 -> {out / 'batches'}",
        f"pricing_lines: 3 rows, $0.900000000 -> {out / 'pricing_lines'}",
        f"focus_charges: 5 rows, $1.350000000 -> {out / 'focus_charges'}",
    ]
    assert not stale.exists()  # its own earlier export is replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert sorted(str(p.relative_to(out / "batches")) for p in (out / "batches").glob("*/*")) == [
        "month=2026-11/provider_key=anthropic",
        "month=2026-11/provider_key=openai",
    ]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["datasets"]["focus_charges"] == {"rows": 5, "total_nanos": "1350000000"}
    import duckdb

    con = duckdb.connect()
    assert con.execute(
        "select provider, sum(cost_nanos) from read_parquet($1, hive_partitioning = true) group by 1 order by 1",
        [str(out / "batches" / "**" / "*.parquet")],
    ).fetchall() == [("anthropic", 1_000_000_000), ("openai", 350_000_000)]
    focus = pl.read_parquet(out / "focus_charges", hive_partitioning=True)
    assert focus["x_CostNanos"].sum() == 1_350_000_000
    assert str(focus["BilledCost"].sum()) == "1.350000000"
    assert focus.schema["BilledCost"] == pl.Decimal(38, 9)
