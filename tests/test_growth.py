"""A night's work reads the night's batches (#29): the books and the reconciliation of a
night equal what a whole-history pass gives, and the whole check stays on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import SAMPLE, batch, query, write_jsonl


def _books(db: Path) -> list[tuple[Any, ...]]:
    return query(
        db,
        "select * exclude (run_id, recorded_at) from charge_ledger order by all",
    )


def test_a_night_books_new_batches_exactly_as_a_first_load_books_them(
    run_cli: Any, tmp_path: Path
) -> None:
    files = sorted(SAMPLE.glob("batches-*.jsonl"))
    one, two = tmp_path / "nightly.duckdb", tmp_path / "at-once.duckdb"
    for f in files:  # night by night: each night's new batches booked from their own rows
        assert run_cli("run", f, "--db", one, "-q").exit_code == 0
    assert run_cli("run", *files, "--db", two, "-q").exit_code == 0  # all at once
    assert len(_books(one)) > 100
    assert _books(one) == _books(two)


def test_a_night_reconciles_its_own_batches_and_reconcile_checks_them_all(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    good = batch(2)
    off = batch(1)
    off["pricing_lines"][0]["line_nanos"] = 200_000_001  # the lines no longer add up
    first = write_jsonl(tmp_path / "a.jsonl", [off])
    assert run_cli("run", first, "--db", db, "-q").exit_code == 0
    second = write_jsonl(tmp_path / "b.jsonl", [good])
    assert run_cli("run", second, "--db", db, "-q").exit_code == 0
    # each night's own batches: none of the second night's is off
    issues = query(db, "select reconciliation_issues from load_runs order by started_at")
    assert issues == [(2,), (0,)]
    assert query(
        db, "select distinct batch_id, check_name from reconciliation_results order by 2"
    ) == [(off["id"], "line_usd_vs_nanos"), (off["id"], "lines_vs_cost")]
    result = run_cli("reconcile", "--db", db)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == "reconcile: 2 mismatch(es) among 2 batches"
    assert off["id"] in result.output
    result = run_cli("reconcile", "--db", db, "--format", "csv")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "check_name,batches,diff_nanos,first_batch_id",
        f"line_usd_vs_nanos,1,1,{off['id']}",
        f"lines_vs_cost,1,1,{off['id']}",
    ]


def test_reconcile_on_a_clean_history_says_so(run_cli: Any, sample_loaded: Path) -> None:
    result = run_cli("reconcile", "--db", sample_loaded)
    assert result.exit_code == 0
    assert result.output == "reconcile: all 324 batches agree with their bills\n"


def test_a_check_of_recent_days_reads_the_window_and_finds_what_the_whole_history_finds(
    run_cli: Any, db: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    """`billing check` copies only the batches charged (or restated) in the window it
    needs; on a night every 14 days of the sample's two months, budgets (monthly, daily, by tag,
    by provider) and anomalies equal those of the whole-history views."""
    from datetime import date, timedelta

    from pipeline import finance
    from pipeline.load import reader
    from tests.helpers import REPO

    cfg = REPO / "docs" / "billing.example.toml"
    assert run_cli("run", SAMPLE, "--db", db, "-q", "--config", cfg).exit_code == 0
    seen = {"budgets": 0, "anomalies": 0, "scoped": 0}
    with reader(db) as con:
        day = date(2026, 10, 2)
        while day <= date(2026, 12, 3):
            monkeypatch.setattr(finance, "RECENT_SHARE", -1.0)  # never: the whole history
            whole = finance.check(con, today=day)
            monkeypatch.setattr(finance, "RECENT_SHARE", 1.0)  # always: the window
            window = finance.check(con, today=day)
            assert window.budgets == whole.budgets, day
            assert window.anomalies == whole.anomalies, day
            seen["budgets"] += len(whole.budgets)
            seen["anomalies"] += len(whole.anomalies)
            seen["scoped"] += finance.use_recent(con, day)
            day += timedelta(days=14)
    assert seen["budgets"] > 10 and seen["anomalies"] > 0 and seen["scoped"] > 0
