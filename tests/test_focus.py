"""FOCUS 1.2: the official validator, corrections for restated bills, the account names
from the config file, and `billing export --format focus`."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import Result

from tests import focus_validator
from tests.helpers import SAMPLE, batch, load, query, rebilled, scalar, write_jsonl

Cli = Callable[..., Result]


def _restated(base: dict[str, Any]) -> dict[str, Any]:
    """The gateway re-bills batch 1 in December: 50,000 more input tokens (+$0.10)."""
    obj = rebilled(base, 400000000, "2026-12-03T10:00:00.000Z", reason="charged:restated")
    obj["pricing_lines"][0].update(
        quantity=150000, billable_units=0.15, line_cost_usd="0.300000000", line_nanos=300000000
    )
    return obj


def _focus(db: Path, where: str = "true") -> list[dict[str, Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        cur = con.execute(f"select * from focus_charges where {where}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def _validator_or_skip() -> None:
    if focus_validator.VALIDATOR.exists():
        return
    if focus_validator.python312() is None:
        pytest.skip("the FOCUS validator needs Python 3.12, which this machine lacks")
    pytest.fail("Python 3.12 is here but the FOCUS validator is not: run `make focus-validator`")


def _assert_conformant(statuses: dict[str, str]) -> None:
    failed = {rule for rule, status in statuses.items() if status == "fail"}
    assert failed == focus_validator.KNOWN_VALIDATOR_ARTEFACT
    assert statuses["InvoiceId-C-003-C"] == "pass"  # the rule the artefact is an arm of
    for rule in (
        "BilledCost-C-000-M",
        "ProviderName-C-000-M",
        "PublisherName-C-000-M",
        "InvoiceIssuerName-C-000-M",
        "BillingAccountId-C-000-M",
        "PricingUnit-C-000-M",
        "ChargeFrequency-C-000-O",
        "ServiceSubcategory-C-000-O",
        "ChargeClass-C-000-M",
    ):
        assert statuses[rule] == "pass", rule
    assert sum(s == "pass" for s in statuses.values()) >= 130


def test_sample_export_passes_the_official_focus_validator(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    _validator_or_skip()
    assert run_cli("run", "--input", SAMPLE, "--db", db, "-q").exit_code == 0
    out = tmp_path / "focus"
    result = run_cli("export", "--db", db, "--format", "focus", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output == f"focus_charges: 539 rows, $690.661169561 -> {out / 'focus_charges'}\n"
    files = sorted((out / "focus_charges").glob("billing_period=*/*.parquet"))
    assert [f.parent.name for f in files] == ["billing_period=2026-10", "billing_period=2026-11"]
    for n, file in enumerate(files):
        _assert_conformant(focus_validator.validate(file, tmp_path / f"report{n}.xml"))


def test_sample_focus_rows_mean_something(run_cli: Cli, db: Path) -> None:
    assert run_cli("run", "--input", SAMPLE, "--db", db, "-q").exit_code == 0
    rows = _focus(db)
    assert len(rows) == 539
    assert sum(r["x_CostNanos"] for r in rows) == scalar(db, "select sum(cost_nanos) from batches")
    assert sum(r["BilledCost"] for r in rows) == Decimal("690.661169561")
    assert {r["ProviderName"] for r in rows} == {"Phaseo"}
    assert {r["InvoiceIssuerName"] for r in rows} == {"Phaseo"}
    assert {r["PublisherName"] for r in rows} == {
        "anthropic",
        "google-vertex",
        "groq",
        "mistral",
        "openai",
    }
    assert {(r["BillingAccountId"], r["BillingAccountName"]) for r in rows} == {
        ("default", "Phaseo gateway account")
    }
    assert {r["ChargeFrequency"] for r in rows} == {"Usage-Based"}
    assert {r["ServiceSubcategory"] for r in rows} == {"Generative AI"}
    assert {r["ChargeClass"] for r in rows} == {None}
    units = {(r["x_UnitPriceUsd"] is None, r["PricingUnit"], r["ConsumedUnit"]) for r in rows}
    assert units == {(False, "1000000 Tokens", "Tokens"), (True, "Requests", "Requests")}
    token_row = next(r for r in rows if r["PricingUnit"] == "1000000 Tokens")
    assert token_row["PricingQuantity"] == token_row["ConsumedQuantity"] / 1_000_000
    assert json.loads(token_row["Tags"]).keys() == {"team", "model"}


def test_a_restated_bill_becomes_a_correction_row_and_rows_already_reported_stay(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    first = batch(1)
    other = batch(2)
    load(run_cli, db, tmp_path / "a.jsonl", [first])
    before = _focus(db)
    assert [(r["SkuId"], r["x_CostNanos"], r["ChargeClass"]) for r in before] == [
        ("openai:unknown:batch_requests", 100000000, None),
        ("openai:unknown:input_text_tokens", 200000000, None),
    ]

    restated = _restated(first)
    second = run_cli(
        "run", "--input", write_jsonl(tmp_path / "b.jsonl", [restated, other]), "--db", db
    )
    assert second.exit_code == 0, second.output
    assert "  corrections 1 FOCUS correction rows for changed bills" in second.output
    after = _focus(db)
    run1 = {r["x_RecordedByRun"] for r in before}
    assert [r for r in after if r["x_RecordedByRun"] in run1] == before  # never rewritten
    corrections = [r for r in after if r["ChargeClass"] == "Correction"]
    assert len(corrections) == 1
    fix = corrections[0]
    assert fix["x_CostNanos"] == 100000000
    assert fix["BilledCost"] == Decimal("0.100000000")
    assert fix["ConsumedQuantity"] == 50000
    assert fix["SkuId"] == "openai:unknown:input_text_tokens"
    assert str(fix["ChargePeriodStart"].date()) == "2026-11-01"  # the corrected usage's day
    assert str(fix["BillingPeriodStart"].date()) == "2026-12-01"  # billed when restated
    assert fix["ChargeDescription"].startswith("correction of input_text_tokens for batch ")
    # November stays as reported; the sum is the current bill to the nano
    by_period = dict(
        query(
            db,
            "select strftime(BillingPeriodStart, '%Y-%m'), sum(x_CostNanos)"
            " from focus_charges group by 1",
        )
    )
    assert by_period == {"2026-11": 300000000 + 300000000, "2026-12": 100000000}
    assert (
        sum(r["x_CostNanos"] for r in after)
        == scalar(db, "select sum(cost_nanos) from batches")
        == 700000000
    )

    # the same restated bill read again: nothing new
    again = run_cli("run", "--input", tmp_path / "b.jsonl", "--db", db)
    assert again.exit_code == 0
    assert "corrections" not in again.output
    assert len(_focus(db)) == len(after)
    assert query(db, "select focus_corrections from load_runs order by started_at") == [
        (0,),
        (1,),
        (0,),
    ]

    if focus_validator.VALIDATOR.exists():
        out = tmp_path / "focus"
        assert run_cli("export", "--db", db, "--format", "focus", "--out", out).exit_code == 0
        december = next((out / "focus_charges" / "billing_period=2026-12").glob("*.parquet"))
        _assert_conformant(focus_validator.validate(december, tmp_path / "r.xml"))


def test_a_new_price_is_booked_as_the_old_line_taken_back_and_the_new_one_added(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    first = batch(1)
    load(run_cli, db, tmp_path / "a.jsonl", [first])
    repriced = rebilled(first, 250000000, "2026-11-05T00:00:00.000Z")
    repriced["pricing_lines"][0].update(
        unit_price_usd="1.500000000", line_cost_usd="0.150000000", line_nanos=150000000
    )
    load(run_cli, db, tmp_path / "b.jsonl", [repriced])
    fixes = query(
        db,
        "select x_UnitPriceUsd, x_CostNanos, ConsumedQuantity from focus_charges"
        " where ChargeClass = 'Correction' order by x_CostNanos",
    )
    assert fixes == [
        (Decimal("2.000000000"), -200000000, -100000.0),
        (Decimal("1.500000000"), 150000000, 100000.0),
    ]
    assert scalar(db, "select sum(x_CostNanos) from focus_charges") == 250000000


def test_a_bill_taken_back_entirely_is_reversed_by_corrections(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    first = batch(1)
    load(run_cli, db, tmp_path / "a.jsonl", [first])
    refunded = rebilled(first, 0, "2026-11-09T00:00:00.000Z", reason="refunded")
    refunded["pricing_lines"] = []
    load(run_cli, db, tmp_path / "b.jsonl", [refunded])
    rows = query(
        db, "select ChargeClass, x_CostNanos from focus_charges order by x_RecordedAt, x_CostNanos"
    )
    assert sorted(n for _, n in rows) == [-200000000, -100000000, 100000000, 200000000]
    assert [c for c, n in rows if n < 0] == ["Correction", "Correction"]
    assert scalar(db, "select sum(x_CostNanos) from focus_charges") == 0


def test_an_existing_database_without_books_is_booked_once_on_its_next_run(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    assert run_cli("run", "--input", SAMPLE, "--db", db, "-q").exit_code == 0
    con = duckdb.connect(str(db))
    con.execute("delete from hot.charge_ledger")  # as a database from before the books
    con.close()
    assert run_cli("run", "--input", SAMPLE, "--db", db, "-q").exit_code == 0
    assert query(
        db, "select count(*), sum(x_CostNanos), count(ChargeClass) from focus_charges"
    ) == [(539, 690661169561, 0)]


def test_the_billing_account_comes_from_the_config_file_and_is_kept(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "billing.toml"
    cfg.write_text(
        '[account]\nbilling_account_id = "acme-001"\nbilling_account_name = "ACME Research"\n'
    )
    data = write_jsonl(tmp_path / "a.jsonl", [batch(1)])
    assert run_cli("run", "--input", data, "--db", db, "--config", cfg, "-q").exit_code == 0
    expected = [("acme-001", "ACME Research", "Phaseo", "Phaseo")]
    sql = (
        "select distinct BillingAccountId, BillingAccountName, InvoiceIssuerName,"
        " ProviderName from focus_charges"
    )
    assert query(db, sql) == expected
    # a later run without --config keeps the stored names; $BILLING_CONFIG is read too
    assert run_cli("run", "--input", data, "--db", db, "-q").exit_code == 0
    assert query(db, sql) == expected
    cfg.write_text('[account]\ninvoice_issuer_name = "Phaseo Inc."\n')
    result = run_cli("run", "--input", data, "--db", db, "-q", env={"BILLING_CONFIG": str(cfg)})
    assert result.exit_code == 0
    assert query(db, sql) == [("default", "Phaseo gateway account", "Phaseo Inc.", "Phaseo")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[account]\nbilling_account = 'x'\n", "unknown key account.billing_account (known: "),
        ("[budgetz]\n", "unknown table(s) budgetz"),
        ("[account\n", "is not valid TOML"),
        ("[account]\nbilling_account_id = ''\n", "must be a non-empty string"),
        ("[account]\nbilling_account_id = 7\n", "must be a non-empty string"),
        (
            '[account]\nbilling_account_name = "sk-proj-abcdefghijklmnopqrstuvwx"\n',
            "looks like a credential",
        ),
        ("account = 3\n", "[account] must be a table"),
    ],
)
def test_a_bad_config_file_is_refused_before_anything_is_read(
    run_cli: Cli, db: Path, tmp_path: Path, text: str, message: str
) -> None:
    cfg = tmp_path / "billing.toml"
    cfg.write_text(text)
    result = run_cli("run", "--input", SAMPLE, "--db", db, "--config", cfg)
    assert result.exit_code == 2
    assert message in result.output
    assert "sk-proj-abcdefghijklmnopqrstuvwx" not in result.output
    assert not db.exists()


def test_a_missing_config_file_is_named(run_cli: Cli, db: Path, tmp_path: Path) -> None:
    result = run_cli("run", "--input", SAMPLE, "--db", db, "--config", tmp_path / "nope.toml")
    assert result.exit_code == 2
    assert f"config file {tmp_path / 'nope.toml'} does not exist or is not a file" in result.output


def test_focus_export_as_csv_and_parquet_carries_the_version(
    run_cli: Cli, db: Path, tmp_path: Path
) -> None:
    assert run_cli("run", "--input", SAMPLE, "--db", db, "-q").exit_code == 0
    pq_out, csv_out = tmp_path / "pq", tmp_path / "csv"
    assert run_cli("export", "--db", db, "--format", "focus", "--out", pq_out).exit_code == 0
    assert run_cli("export", "--db", db, "--format", "focus-csv", "--out", csv_out).exit_code == 0
    for out, suffix in ((pq_out, "parquet"), (csv_out, "csv")):
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["focus_version"] == "1.2"
        assert manifest["file_type"] == suffix
        assert manifest["datasets"] == {
            "focus_charges": {"rows": 539, "total_nanos": "690661169561"}
        }
        files = sorted((out / "focus_charges").glob(f"*/*.{suffix}"))
        assert len(files) == 2
    meta = pq.read_metadata(
        files[0].parent.parent.parent.parent
        / "pq"
        / "focus_charges"
        / files[0].parent.name
        / "data_0.parquet"
    ).metadata
    assert meta[b"focus_version"] == b"1.2"
    columns = pq.read_schema(next(pq_out.glob("focus_charges/*/*.parquet"))).names
    assert "billing_period" not in columns
    assert columns[:3] == ["BillingAccountId", "BillingAccountName", "BilledCost"]
    con = duckdb.connect()
    total = con.execute(
        f"select sum(x_CostNanos), count(*) from read_csv('{csv_out}/focus_charges/*/*.csv')"
    ).fetchone()
    assert total == (690661169561, 539)
    # an export folder is replaced whole, the other kind included
    assert run_cli("export", "--db", db, "--out", csv_out).exit_code == 0
    assert not list(csv_out.glob("focus_charges/*/*.csv"))


@pytest.mark.parametrize(
    ("metadata", "tags"),
    [
        (
            {"team": "a", "deep": {"x": [1]}, "n": 3, 'q"k': None},
            {"team": "a", "deep": '{"x":[1]}', "n": 3, 'q"k': None},
        ),
        ({}, {}),
        (["a", "b"], {}),
        ("just text", {}),
        (None, {}),
    ],
)
def test_tags_are_flat_key_values_whatever_shape_metadata_has(
    run_cli: Cli, db: Path, tmp_path: Path, metadata: Any, tags: dict[str, Any]
) -> None:
    data = write_jsonl(tmp_path / "a.jsonl", [batch(1, metadata=metadata)])
    result = run_cli("run", "--input", data, "--db", db, "-q")
    assert result.exit_code == 0, result.output
    assert {
        json.dumps(json.loads(t), sort_keys=True)
        for (t,) in query(db, "select Tags from focus_charges")
    } == {json.dumps(tags, sort_keys=True)}
    assert scalar(db, "select sum(x_CostNanos) from focus_charges") == 300000000
