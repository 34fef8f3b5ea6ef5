"""The settled history in Parquet beside the head (pipeline/history.py): every figure the
same whichever side a row is on, restatements of settled batches, kill -9, snapshots,
copies and databases from before the split."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.helpers import (
    SAMPLE,
    batch,
    billing,
    load,
    query,
    rebilled,
    scalar,
    write_jsonl,
)

FACTS = ("batches", "pricing_lines", "batch_requests", "batch_history", "charge_ledger")

# every figure a reader sees, by the views in sql/ and the fact tables themselves
FIGURES = {
    "facts": " union all ".join(f"select '{t}', count(*) from {t}" for t in FACTS),
    "billed": "select sum(billed_nanos), sum(unbilled_nanos) from stg_batches",
    "by_provider": "select provider, cost_nanos from spend_by_provider order by all",
    "focus": "select BillingPeriodStart, sum(x_CostNanos), count(*) from focus_charges"
    " group by all order by all",
    "reconciliation": "select count(*) from billing_reconciliation",
    "by_model": "select * from spend_by_model order by all",
}


def figures(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    return {name: query(db, sql) for name, sql in FIGURES.items()}


@pytest.fixture(autouse=True)
def _default_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped limits, whatever the shell says (the suite may run with all settled)."""
    monkeypatch.delenv("BILLING_HISTORY_KEEP_BATCHES", raising=False)
    monkeypatch.delenv("BILLING_HISTORY_MIN_BATCHES", raising=False)


@pytest.fixture
def settle_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every final batch moves into the history at the end of each run."""
    monkeypatch.setenv("BILLING_HISTORY_KEEP_BATCHES", "0")
    monkeypatch.setenv("BILLING_HISTORY_MIN_BATCHES", "1")


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


def test_a_small_database_keeps_everything_in_the_head(run_cli: Any, db: Path) -> None:
    assert run_cli("run", SAMPLE, "--db", db, "-q").exit_code == 0
    assert not (db.parent / "billing.history").exists()
    assert scalar(db, "select count(*) from history_parts") == 0
    assert scalar(db, "select count(*) from hot.batches") == 324


def test_settled_batches_move_to_parquet_and_every_figure_stays(
    run_cli: Any, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_cli("run", SAMPLE, "--db", db, "-q").exit_code == 0
    before = figures(db)
    monkeypatch.setenv("BILLING_HISTORY_KEEP_BATCHES", "10")
    monkeypatch.setenv("BILLING_HISTORY_MIN_BATCHES", "1")
    assert run_cli("run", SAMPLE, "--db", db, "-q").exit_code == 0
    assert figures(db) == before
    folder = tmp_path / "billing.history"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
    run_id = scalar(db, "select arg_max(run_id, started_at) from load_runs")
    assert {f.split("/")[0] for f in files} == set(FACTS)
    assert all(f.endswith(f"/{run_id}-0000.parquet") for f in files)
    assert {f.split("/")[1] for f in files} == {"month=2026-10", "month=2026-11"}
    # the head keeps the 10 newest batches; every other one is in the files
    newest = query(db, "select id from batches order by created_at desc, id desc limit 10")
    assert sorted(query(db, "select id from hot.batches")) == sorted(newest)
    assert scalar(db, "select sum(rows) from history_parts where table_name = 'batches'") == 314
    # people's sandboxed SQL reads the files (and still nothing else)
    total = run_cli(
        "sql", "select sum(cost_nanos) as t from batches", "--db", db, "--format", "csv"
    )
    assert (total.exit_code, total.output) == (0, "t\n690661169561\n")
    peek = run_cli("sql", "select count(*) from read_csv('/etc/passwd')", "--db", db)
    assert peek.exit_code != 0
    # a night of one new batch writes no file (one batch is not worth a move), adds just it
    monkeypatch.setenv("BILLING_HISTORY_MIN_BATCHES", "50")
    night = write_jsonl(tmp_path / "night.jsonl", [batch(1, created_at=1797000000)])
    assert run_cli("run", "--input", night, "--db", db, "-q").exit_code == 0
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")) == files
    assert scalar(db, "select sum(cost_nanos) from batches") == 690661169561 + 300000000


@pytest.mark.usefixtures("settle_all")
def test_a_restated_settled_batch_comes_back_once_and_its_month_files_stay(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    first, other = batch(1), batch(2)
    load(run_cli, db, tmp_path / "a.jsonl", [first, other])
    folder = tmp_path / "billing.history"
    kept = digests(folder)
    assert len(kept) == 4  # batches, lines, history and books of November
    assert scalar(db, "select count(*) from hot.batches") == 0
    restated = rebilled(first, 400000000, "2026-12-03T10:00:00.000Z", reason="charged:restated")
    restated["pricing_lines"][0].update(
        quantity=150000, billable_units=0.15, line_cost_usd="0.300000000", line_nanos=300000000
    )
    result = run_cli("run", "--input", write_jsonl(tmp_path / "b.jsonl", [restated]), "--db", db)
    assert result.exit_code == 0, result.output
    assert "  corrections 1 FOCUS correction rows for changed bills" in result.output
    # the closed month's files are as they were; the change is in new files and the head
    now = digests(folder)
    assert {k: v for k, v in now.items() if k in kept} == kept
    assert query(db, "select id, cost_nanos from batches order by id") == [
        (first["id"], 400000000),
        (other["id"], 300000000),
    ]
    assert scalar(db, "select count(*) from pricing_lines where batch_id = $1", [first["id"]]) == 2
    assert scalar(db, "select count(*) from history_tombstones") == 4
    assert query(
        db,
        "select strftime(BillingPeriodStart, '%Y-%m'), sum(x_CostNanos) from focus_charges"
        " group by 1 order by 1",
    ) == [("2026-11", 600000000), ("2026-12", 100000000)]
    assert scalar(db, "select count(*) from billing_reconciliation") == 0
    assert query(db, "select change from batch_history where batch_id = $1 order by recorded_at",
                 [first["id"]]) == [("new",), ("restated",)]  # fmt: skip
    # and the same restated bill again: nothing new anywhere
    again = run_cli("run", "--input", tmp_path / "b.jsonl", "--db", db, "-q")
    assert again.exit_code == 0
    assert digests(folder) == now
    assert scalar(db, "select sum(x_CostNanos) from focus_charges") == 700000000


@pytest.mark.usefixtures("settle_all")
def test_snapshots_and_copies_read_the_history_they_were_published_with(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    load(
        run_cli,
        db,
        tmp_path / "a.jsonl",
        [batch(1), batch(2, cost_nanos=5)],
        "--keep-snapshots",
        "5",
    )
    snapshot = next((tmp_path / "snapshots" / "billing").iterdir())
    restated = rebilled(batch(1), 400000000, "2026-12-03T10:00:00.000Z", reason="charged:restated")
    load(run_cli, db, tmp_path / "b.jsonl", [restated], "--keep-snapshots", "5")
    assert scalar(db, "select sum(cost_nanos) from batches") == 400000005
    assert scalar(snapshot, "select sum(cost_nanos) from batches") == 300000005
    # a copy of the file elsewhere reads its original's files, and writes its own
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / "copy.duckdb"
    shutil.copyfile(db, copy)
    out = run_cli(
        "sql", "select sum(cost_nanos) as t from batches", "--db", copy, "--format", "csv"
    )
    assert (out.exit_code, out.output) == (0, "t\n400000005\n")
    original = digests(tmp_path / "billing.history")
    load(run_cli, copy, tmp_path / "c.jsonl", [batch(3, cost_nanos=7)])
    assert scalar(copy, "select sum(cost_nanos) from batches") == 400000012
    assert digests(tmp_path / "billing.history") == original
    assert sorted(p.name for p in elsewhere.iterdir() if p.is_dir()) == [
        "copy.history",
        "snapshots",
    ]


def test_a_database_from_before_the_split_moves_into_the_head_once(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    assert run_cli("run", SAMPLE, "--db", db, "-q").exit_code == 0
    before = figures(db)
    con = duckdb.connect(str(db))  # as the previous version left it: tables in main
    for table in FACTS:
        con.execute(f"create table main.old_{table} as select * from hot.{table}")
        con.execute(f"drop view main.{table}")
        con.execute(f"alter table main.old_{table} rename to {table}")
        con.execute(f"drop table hot.{table}")
    con.execute("drop schema hot")
    con.close()
    assert figures(db) == before
    assert run_cli("run", SAMPLE, "--db", db, "-q").exit_code == 0
    assert figures(db) == before
    kinds = query(
        db,
        "select table_schema, table_type, count(*) from information_schema.tables"
        f" where table_name in {FACTS} group by all order by all",
    )
    assert kinds == [("hot", "BASE TABLE", 5), ("main", "VIEW", 5)]


KILL = """
import os, signal, sys
import pipeline.history as history
where = sys.argv[1]
real_sync, real_rename = history._sync, os.rename
def sync(paths):
    real_sync(paths)
    if where == "files-written":
        os.kill(os.getpid(), signal.SIGKILL)
def rename(src, dst, *args, **kwargs):
    if where == "compacting" and str(src).endswith(".compact"):
        os.kill(os.getpid(), signal.SIGKILL)
    real_rename(src, dst, *args, **kwargs)
history._sync = sync
os.rename = rename
from pipeline.cli import main
sys.argv = ["billing", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("where", ["files-written", "compacting"])
def test_kill_9_while_batches_move_into_the_history_commits_nothing(
    db: Path, tmp_path: Path, where: str
) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", [batch(1), batch(2, cost_nanos=5)])
    subprocess.run(billing("run", "--input", first, "--db", db, "-q"), check=True)
    before = figures(db)
    env = {**os.environ, "BILLING_HISTORY_KEEP_BATCHES": "0", "BILLING_HISTORY_MIN_BATCHES": "1"}
    second = write_jsonl(tmp_path / "b.jsonl", [batch(3, cost_nanos=7)])
    proc = subprocess.run(
        [sys.executable, "-c", KILL, where, "run", "--input", str(second), "--db", str(db), "-q"],
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    folder = tmp_path / "billing.history"
    assert len(list(folder.rglob("*.parquet"))) == 4  # written, named by no head
    assert figures(db) == before
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".billing.duckdb.")]) >= 2
    again = subprocess.run(
        billing("run", "--input", second, "--db", db, "-q"),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    run_id = scalar(db, "select arg_max(run_id, started_at) from load_runs")
    assert sorted({p.name for p in folder.rglob("*.parquet")}) == [f"{run_id}-0000.parquet"]
    assert scalar(db, "select sum(cost_nanos) from batches") == 300000012
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert db.stat().st_mode & 0o777 == 0o600  # (the compact file is ours as any other)


@pytest.mark.usefixtures("settle_all")
def test_a_history_path_that_is_not_a_folder_fails_the_run_and_commits_nothing(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    (tmp_path / "billing.history").write_text("not a folder")
    result = run_cli("run", "--input", write_jsonl(tmp_path / "a.jsonl", [batch(1)]), "--db", db)
    assert result.exit_code == 1
    assert "billing.history is not a folder" in result.output
    assert "nothing was committed" in result.output
    assert not db.exists()
    assert (tmp_path / "billing.history").read_text() == "not a folder"


@pytest.mark.usefixtures("settle_all")
def test_db_pointed_at_the_history_folder_is_refused_and_changes_nothing(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    load(run_cli, db, tmp_path / "a.jsonl", [batch(1)])
    folder = tmp_path / "billing.history"
    kept = digests(folder)
    run = run_cli("run", "--input", tmp_path / "a.jsonl", "--db", folder)
    assert (run.exit_code, run.output) == (
        2,
        f"billing: error: --db {folder} is a folder, not a database file\n",
    )
    sql = run_cli("sql", "select 1", "--db", folder)
    assert (sql.exit_code, sql.output) == (2, f"billing: error: {folder} is not a database file\n")
    assert digests(folder) == kept
    assert scalar(db, "select count(*) from batches") == 1
