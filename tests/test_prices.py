"""Prices of the day and the wallet's runway (#28): dated catalogue snapshots checked
against each line's own charge time; credits readings with burn and runway, exact."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.gateway import TOKEN, Gateway, Reply, serve
from tests.helpers import batch, query, rebilled, write_jsonl

pytestmark = pytest.mark.timeout(60)


def priced(n: int, when: str, price: str, *, meter: str = "input_text_tokens",
           unit_size: int = 1_000_000) -> dict[str, Any]:  # fmt: skip
    """Batch n billed at ``when`` (YYYY-MM-DD): one line of 1,000,000 units of ``meter``
    at ``price`` per ``unit_size``."""
    units = Decimal(1_000_000) / unit_size
    nanos = int(Decimal(price) * units * 10**9)
    obj = rebilled(batch(n), nanos, f"{when}T10:00:00.000Z")
    obj["metadata"] = {"model": "gpt-x"}
    obj["request_counts"] = {"total": 1, "completed": 1, "failed": 0}
    obj["pricing_lines"] = [
        {
            "dimension": meter, "quantity": 1_000_000, "billable_units": float(units),
            "unit_size": unit_size, "unit_price_usd": price,
            "line_cost_usd": f"{Decimal(nanos) / 10**9:.9f}", "line_nanos": nanos,
            "pricing_plan": "batch", "service_tier": "batch",
        }
    ]  # fmt: skip
    return obj


def catalogue(batch_price: str) -> dict[str, Any]:
    """The gateway's answer: a batch and a standard price for one meter, no tier label."""

    def meter(price: str) -> dict[str, Any]:
        return {"meter": "input_text_tokens", "unit": "token", "unit_size": 1_000_000,
                "price_per_unit": price, "currency": "USD", "conditions": None,
                "billing_timestamp_basis": "request", "time_windows": None}  # fmt: skip

    return {
        "ok": True,
        "models": [
            {"provider": "openai", "model": "gpt-x", "endpoint": "/v1/responses",
             "display_name": "GPT X", "meters": [meter(batch_price), meter("4.000000000")]}
        ],
    }  # fmt: skip


LINES = [
    priced(1, "2026-11-10", "2.000000000"),  # the batch price of its day
    priced(2, "2026-11-20", "3.000000000"),  # the new batch price, after the change
    priced(3, "2026-11-20", "2.000000000"),  # the old price after the change
    priced(4, "2026-11-10", "3.000000000"),  # the new price before it was in force
    priced(5, "2026-11-20", "8.000000000", meter="output_text_tokens"),  # not listed
    priced(6, "2026-10-20", "2.000000000"),  # before the first snapshot
    priced(7, "2026-11-20", "4.000000000"),  # the standard price of the meter
    priced(8, "2026-11-20", "0.003000000", unit_size=1000),  # 3.0 per 1M, per 1,000
]


@pytest.fixture
def snapshots(run_cli: Any, db: Path, tmp_path: Path) -> Path:
    data = write_jsonl(tmp_path / "lines.jsonl", LINES)
    assert run_cli("run", data, "--db", db, "-q").exit_code == 0
    for day, price in (("2026-11-01", "2.000000000"), ("2026-11-15", "3.000000000")):
        path = tmp_path / f"catalogue-{day}.json"
        path.write_bytes(orjson.dumps(catalogue(price)))
        result = run_cli("prices", "--file", path, "--as-of", day, "--db", db)
        assert result.exit_code == 0, result.output
        assert result.output == (
            f"prices: snapshot of 2 entries at {day} 00:00 UTC from {path} -> {db}\n"
        )
    return db


def test_each_line_is_checked_against_the_catalogue_of_its_own_day(snapshots: Path) -> None:
    rows = query(
        snapshots,
        "select right(batch_id, 1), catalogue_status, status, catalogue_entry,"
        " catalogue_prices_in_force from price_checks order by batch_id",
    )
    old = "/v1/responses: 2.000000000 per 1000000 (in force from 2026-11-01)"
    new = "/v1/responses: 3.000000000 per 1000000 (in force from 2026-11-15)"
    std = "/v1/responses: 4.000000000 per 1000000 (in force from 2026-11-01)"
    after = "3.000000000 per 1000000, 4.000000000 per 1000000"
    before = "2.000000000 per 1000000, 4.000000000 per 1000000"
    assert rows == [
        ("1", "match", "ok", old, before),
        ("2", "match", "ok", new, after),
        ("3", "price_differs", "catalogue_mismatch", None, after),
        ("4", "price_differs", "catalogue_mismatch", None, before),
        ("5", "not_in_catalogue", "not_in_catalogue", None, None),
        ("6", "no_snapshot", "ok", None, None),
        ("7", "match", "ok", std, after),
        ("8", "match", "ok", new, after),
    ]


def test_price_changes_lists_what_moved_between_snapshots(run_cli: Any, snapshots: Path) -> None:
    assert query(
        snapshots,
        "select changed_at::date, previous_at::date, provider, model, meter, change,"
        " old_price_per_unit, new_price_per_unit from price_changes",
    ) == [
        (
            __import__("datetime").date(2026, 11, 15), __import__("datetime").date(2026, 11, 1),
            "openai", "gpt-x", "input_text_tokens", "changed", "2.000000000", "3.000000000",
        )
    ]  # fmt: skip
    result = run_cli("prices", "--db", snapshots, "--format", "csv")
    assert result.output.splitlines()[1].endswith(",changed,2.000000000,3.000000000")


def test_the_users_price_list_still_wins_where_it_gives_a_price(
    run_cli: Any, snapshots: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "billing.toml"
    cfg.write_text(
        '[[prices.price]]\nprovider = "openai"\nmodel = "gpt-x"\n'
        'dimension = "input_text_tokens"\nunit_size = 1000000\nunit_price_usd = "2.00"\n'
        'effective_from = "2026-11-16"\n'
    )
    data = write_jsonl(tmp_path / "none.jsonl", [])
    assert run_cli("run", data, "--db", snapshots, "--config", cfg, "-q").exit_code == 0
    rows = dict(query(snapshots, "select right(batch_id, 1), status from price_checks"))
    assert rows["1"] == "ok"  # no list entry before Nov 16: the catalogue matches
    assert rows["3"] == "ok"  # the list's price of its day, though the catalogue moved
    assert rows["2"] == "list_mismatch"
    assert rows["5"] == "not_in_catalogue"  # no list entry for the meter


CREDITS = {
    "ok": True,
    "credits": {
        "remaining": 80.5,
        "balance_nanos": 100_000_000_000,
        "reserved_nanos": 19_500_000_000,
        "available_nanos": 80_500_000_000,
        "thirty_day_usage": 12.3,
        "thirty_day_requests": 120,
    },
}


def test_runway_and_reserved_money_are_exact_in_check_json(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    items = [  # $7.00 in the 7 days before the reading, $3.00 more within 30 days
        rebilled(batch(1), 4_000_000_000, "2026-11-25T10:00:00.000Z"),
        rebilled(batch(2), 3_000_000_000, "2026-11-28T10:00:00.000Z"),
        rebilled(batch(3), 3_000_000_000, "2026-11-10T10:00:00.000Z"),
        rebilled(batch(4), 9_000_000_000, "2026-10-01T10:00:00.000Z"),  # outside both
    ]
    assert run_cli("run", write_jsonl(tmp_path / "n.jsonl", items), "--db", db, "-q").exit_code == 0
    saved = tmp_path / "credits.json"
    saved.write_bytes(orjson.dumps(CREDITS))
    result = run_cli("credits", "--file", saved, "--as-of", "2026-11-30T12:00Z", "--db", db)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "credits: $80.50 available"
    cfg = tmp_path / "billing.toml"
    cfg.write_text('[[budget]]\nname = "runway"\nkind = "runway"\nmin_days = 60\n')
    result = run_cli("check", "--db", db, "--config", cfg, "--format", "json",
                     env={"BILLING_TODAY": "2026-11-30"})  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    wallet = out["wallet"]
    assert {
        k: wallet[k]
        for k in (
            "balance_nanos",
            "reserved_nanos",
            "reserved_usd",
            "available_nanos",
            "burn_7d_nanos",
            "burn_30d_nanos",
            "runway_7d_days",
            "runway_30d_days",
        )
    } == {
        "balance_nanos": 100_000_000_000,
        "reserved_nanos": 19_500_000_000,
        "reserved_usd": "19.500000000",
        "available_nanos": 80_500_000_000,
        "burn_7d_nanos": 7_000_000_000,
        "burn_30d_nanos": 10_000_000_000,
        "runway_7d_days": "80.5",  # $80.50 at $1.00 a day
        "runway_30d_days": "241.5",  # at $1/3 a day
    }
    assert [(r["budget_name"], r["runway_days"], r["rate_basis"], r["status"])
            for r in out["runway"]] == [("runway", "80.5", "7-day", "ok")]  # fmt: skip
    cfg.write_text('[[budget]]\nname = "runway"\nkind = "runway"\nmin_days = 90\n')
    result = run_cli("check", "--db", db, "--config", cfg, env={"BILLING_TODAY": "2026-11-30"})
    assert result.exit_code == 4
    assert "CROSSED runway budget runway: 80.5 days left (7-day rate), under 90.0" in result.output
    rows = run_cli("check", "--db", db, "--config", cfg, "--format", "csv",
                   env={"BILLING_TODAY": "2026-11-30"}).output.splitlines()  # fmt: skip
    assert rows[-1] == (
        "runway,runway,reading,2026-11-30 12:00:00+00:00,wallet,crossed,80500000000,,,,"
        "2026-11-30 12:00:00+00:00,80.5 days left at the 7-day rate (minimum 90.0)"
    )
    out_html = db.parent / "report.html"
    result = run_cli("report", "--db", db, "--month", "2026-11", "--out", out_html)
    assert result.exit_code == 0, result.output
    page = out_html.read_text()
    wallet_table = page[page.index("<h2>Wallet and runway</h2>") : page.index("<h2>Price checks")]
    for cell in ("$100.000000000", "$19.500000000", "$80.500000000", "$7.000000000",
                 "$10.000000000", "80.5", "241.5", "2026-11-30 12:00:00+00:00"):  # fmt: skip
        assert f">{cell}<" in wallet_table, cell
    result = run_cli("check", "--db", db, "--config", cfg, env={"BILLING_TODAY": "2026-11-30"})
    assert (
        "wallet      $80.50 available ($100.00 balance, $19.50 held for running batches) as of"
        " 2026-11-30 12:00 UTC; runway 80.5 days at the 7-day rate, 241.5 days at the 30-day"
        " rate"
    ) in result.output


def test_an_api_run_records_the_wallet_and_the_catalogue(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    gw = Gateway(batches={"batch_00000000000000000000000001": batch(1)})
    gw.scripts["/v1/credits"] = [Reply(200, CREDITS)]
    gw.scripts["/v1/pricing/models"] = [Reply(200, catalogue("2.000000000"))]
    ids = tmp_path / "ids.txt"
    ids.write_text("batch_00000000000000000000000001\n")
    with serve(gw):
        result = run_cli("run", "--ids-file", ids, "--base-url", gw.url, "--db", db,
                         "--fetch-prices", env={"PHASEO_API_KEY": TOKEN})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note" not in result.output
    assert query(
        db, "select balance_nanos, reserved_nanos, available_nanos from credit_readings"
    ) == [(100_000_000_000, 19_500_000_000, 80_500_000_000)]
    assert query(db, "select entries, unreadable_entries from catalogue_snapshots") == [(2, 0)]
    assert TOKEN not in repr(query(db, "select * from credit_readings, catalogue_snapshots"))


@pytest.mark.parametrize(
    ("reply", "line"),
    [
        (
            Reply(403, {"error": "forbidden", "reason": "missing_scope"}),
            "note        GET /v1/pricing/models: the API key lacks the PRICING_READ scope"
            " (403 forbidden: missing_scope); nothing recorded",
        ),
        (
            Reply(404, {"error": "not_found", "reason": "route_not_found"}),
            "note        GET /v1/pricing/models: the gateway does not serve this route"
            " (404 not_found: route_not_found); nothing recorded",
        ),
        (
            Reply(501, {"error": "not_implemented", "reason": "feature_temporarily_disabled"}),
            "note        GET /v1/pricing/models: the gateway does not serve this route"
            " (501 not_implemented: feature_temporarily_disabled); nothing recorded",
        ),
    ],
)
def test_a_route_not_served_is_one_line_not_a_failed_night(
    run_cli: Any, db: Path, tmp_path: Path, reply: Reply, line: str
) -> None:
    gw = Gateway(batches={"batch_00000000000000000000000001": batch(1)})
    gw.scripts["/v1/credits"] = [Reply(200, CREDITS)]
    gw.scripts["/v1/pricing/models"] = [reply]
    ids = tmp_path / "ids.txt"
    ids.write_text("batch_00000000000000000000000001\n")
    with serve(gw):
        result = run_cli("run", "--ids-file", ids, "--base-url", gw.url, "--db", db,
                         "--fetch-prices", env={"PHASEO_API_KEY": TOKEN})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [ln.strip() for ln in result.output.splitlines() if "note" in ln] == [line]
    assert query(db, "select count(*) from batches, credit_readings") == [(1,)]
    assert query(db, "select count(*) from catalogue_snapshots") == [(0,)]


def test_a_saved_file_that_is_not_the_route_is_refused_before_anything_is_written(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"data": []}')
    result = run_cli("prices", "--file", wrong, "--db", db)
    assert result.exit_code == 2
    assert "not a GET /v1/pricing/models answer: no models list" in result.output
    result = run_cli("credits", "--file", wrong, "--db", db)
    assert result.exit_code == 2
    assert "not a GET /v1/credits answer: no credits.balance_nanos" in result.output
    assert not db.exists()


def test_prices_and_credits_fetch_by_hand_and_say_plainly_when_not_served(
    run_cli: Any, db: Path
) -> None:
    gw = Gateway()
    gw.scripts["/v1/pricing/models"] = [Reply(200, catalogue("2.000000000"))]
    gw.scripts["/v1/credits"] = [Reply(403, {"error": "forbidden", "reason": "missing_scope"})]
    environment = {"PHASEO_API_KEY": TOKEN}
    with serve(gw):
        result = run_cli("prices", "--fetch", "--base-url", gw.url, "--db", db, env=environment)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("prices: snapshot of 2 entries at ")
        assert result.output.endswith(f" UTC from {gw.url}/pricing/models -> {db}\n")
        result = run_cli("credits", "--fetch", "--base-url", gw.url, "--db", db, env=environment)
    assert result.exit_code == 3
    assert result.output == (
        "GET /v1/credits: the API key lacks the CREDITS_READ scope"
        " (403 forbidden: missing_scope); nothing recorded\n"
    )
    assert query(db, "select count(*) from credit_readings") == [(0,)]
    assert TOKEN not in result.output


def test_an_older_database_is_told_how_to_upgrade_and_a_recorded_reading_upgrades_it(
    run_cli: Any, sample_loaded: Path, tmp_path: Path
) -> None:
    import duckdb

    with duckdb.connect(str(sample_loaded)) as con:  # as an older version left it
        con.execute("drop view wallet_runway_status")
        con.execute("drop view wallet_runway")
        con.execute("drop view price_changes")
        con.execute("delete from pipeline_meta where key = 'views_key'")
    result = run_cli("prices", "--db", sample_loaded)
    assert result.exit_code == 2
    assert result.output == (
        "billing: error: this database has no price_changes (written by an older version):"
        " run `billing run` on it once (any input) to add them\n"
    )
    saved = tmp_path / "credits.json"
    saved.write_bytes(orjson.dumps(CREDITS))
    result = run_cli("credits", "--file", saved, "--as-of", "2026-11-30", "--db", sample_loaded)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "credits: $80.50 available"
