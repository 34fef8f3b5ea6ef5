"""The nightly job: atomic, incremental, audited, safe to rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import psutil
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import RunConfig
from pipeline.extract import read_chunks
from pipeline.runner import execute
from tests.helpers import batch, billing, query, scalar, start_big_run, write_jsonl


def test_kill_9_mid_load_commits_nothing(db: Path, tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "first.jsonl", [batch(1), batch(2, cost_nanos=5)])
    subprocess.run(
        billing("run", "--input", first, "--db", db, "-q"), check=True, capture_output=True
    )
    before = (
        query(db, "select * from load_runs"),
        query(db, "select id, cost_nanos from batches order by id"),
        scalar(db, "select count(*) from pricing_lines"),
    )
    proc = start_big_run(tmp_path, db)  # mid-load: three chunks staged, more to come
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert len(workers) >= 2  # two transform workers (and multiprocessing's resource tracker)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert alive == []  # workers do not outlive a killed run
    after = (
        query(db, "select * from load_runs"),
        query(db, "select id, cost_nanos from batches order by id"),
        scalar(db, "select count(*) from pricing_lines"),
    )
    assert after == before
    # and the database still takes the next run
    done = subprocess.run(
        billing("run", "--input", first, "--db", db, "-q"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _hold(code: str, *args: str | Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_second_run_cannot_write_while_one_holds_the_database(db: Path, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    subprocess.run(billing("run", "--input", f, "--db", db, "-q"), check=True, capture_output=True)
    writer = _hold(
        "import sys, time; from pathlib import Path; from pipeline.store import Store, WriterLock;"
        " WriterLock(Store(Path(sys.argv[1])), 'RUN-A', 0); print('held', flush=True); time.sleep(2)",
        db,
    )
    second = subprocess.run(
        billing("run", "--input", f, "--db", db, "-q"), capture_output=True, text=True, check=False
    )
    assert second.returncode == 1
    assert second.stderr.startswith(
        f"billing: error: database {db} is being written by another billing run (writer pid {writer.pid}, run RUN-A, started "
    )
    assert second.stderr.endswith("): try again later or pass --wait SECONDS\n")
    waited = subprocess.run(
        billing("run", "--input", f, "--db", db, "-q", "--wait", "60"),
        capture_output=True,
        text=True,
        check=False,
    )
    writer.wait(timeout=30)
    assert waited.returncode == 0, waited.stderr
    assert scalar(db, "select count(*) from load_runs") == 2
    assert (
        sorted(p.name for p in db.parent.iterdir() if p.name.startswith(".")) == []
    )  # no lock or work file left


def test_a_process_writing_the_published_file_is_named_and_a_reader_is_not_in_the_way(
    db: Path, tmp_path: Path
) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    subprocess.run(billing("run", "--input", f, "--db", db, "-q"), check=True, capture_output=True)
    rw = _hold(
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(2)",
        db,
    )
    second = subprocess.run(
        billing("run", "--input", f, "--db", db, "-q"), capture_output=True, text=True, check=False
    )
    assert second.returncode == 1
    assert second.stderr == (
        f"billing: error: database {db} is in use by another process (pid {rw.pid} has it open for writing, "
        "not read-only): readers must open it read-only; try again later or pass --wait SECONDS\n"
    )
    rw.wait(timeout=30)
    ro = _hold(
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); print('held', flush=True);"
        " time.sleep(30)",
        db,
    )
    try:
        third = subprocess.run(
            billing("run", "--input", f, "--db", db, "-q"),
            capture_output=True,
            text=True,
            check=False,
        )
        assert third.returncode == 0, third.stderr
    finally:
        ro.kill()
        ro.wait()


def test_restated_bill_shows_in_history_and_load_runs(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    first = batch(1)
    restated = batch(1, cost_nanos=250_000_000)
    restated["billing"]["finalized_at"] = "2026-11-03T00:00:00Z"
    restated["pricing_lines"] = restated["pricing_lines"][:1]
    restated["pricing_lines"][0].update(line_nanos=250_000_000, line_cost_usd="0.250000000")
    first_run = run_cli(
        "run", "--input", write_jsonl(tmp_path / "a.jsonl", [first, batch(2)]), "--db", db
    )
    assert first_run.exit_code == 0, first_run.output
    result = run_cli("run", "--input", write_jsonl(tmp_path / "b.jsonl", [restated]), "--db", db)
    assert result.exit_code == 0, result.output
    assert "(0 new, 1 updated, 0 unchanged)" in result.output
    assert "total cost  $0.550000000 in the database (-$0.050000000 this run)" in result.output
    assert query(
        db,
        "select batch_id, change, previous_cost_nanos, cost_nanos, cost_delta_nanos"
        " from batch_history where change = 'restated'",
    ) == [(first["id"], "restated", 300_000_000, 250_000_000, -50_000_000)]
    # the old lines are gone as a whole: no orphan, no duplicate
    assert query(
        db, "select line_index, line_nanos from pricing_lines where batch_id = $1", [first["id"]]
    ) == [(0, 250_000_000)]
    assert query(
        db,
        "select batches_updated, cost_delta_nanos, total_cost_nanos_after from load_runs"
        " order by started_at",
    ) == [(0, 600_000_000, 600_000_000), (1, -50_000_000, 550_000_000)]
    # replaying the older snapshot later does not undo the restatement
    stale = run_cli("run", "--input", write_jsonl(tmp_path / "c.jsonl", [first]), "--db", db)
    assert stale.exit_code == 0
    assert "stale       1 older snapshots skipped (the database is newer)" in stale.output
    assert scalar(db, "select cost_nanos from batches where id = $1", [first["id"]]) == 250_000_000


def test_reconciliation_mismatches_are_reported_and_strict_fails(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    off = batch(1)
    off["pricing_lines"][0]["line_nanos"] = 200_000_001  # lines now sum to 300000001
    off["billing"]["cost_usd"] = 0.31
    f = write_jsonl(tmp_path / "in.jsonl", [off, batch(2)])
    strict = run_cli("run", "--input", f, "--db", db, "--strict")
    assert strict.exit_code == 1
    assert (
        "--strict: 0 rejected record(s), 3 reconciliation mismatch(es), 0 batch(es) not fetched and 0 unreadable input(s); nothing was committed"
        in strict.output
    )
    assert not db.exists()
    result = run_cli("run", "--input", f, "--db", db)
    assert result.exit_code == 0
    assert "mismatches  3 (see view billing_reconciliation)" in result.output
    assert query(
        db, "select batch_id, check_name, expected_nanos, actual_nanos from billing_reconciliation"
    ) == [
        (off["id"], "api_usd_vs_nanos", 300_000_000, 310_000_000),
        (off["id"], "line_usd_vs_nanos", 300_000_001, 300_000_000),
        (off["id"], "lines_vs_cost", 300_000_000, 300_000_001),
    ]
    assert scalar(db, "select count(*) from reconciliation_results") == 3
    assert scalar(db, "select status from load_runs") == "ok_with_mismatches"


def test_new_fields_are_kept_and_announced_once(run_cli: Any, db: Path, tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "in.jsonl", [batch(1, shiny={"a": 1}), batch(2, request_counts=[1, 2])]
    )
    first = run_cli("run", "--input", f, "--db", db)
    assert first.exit_code == 0
    assert (
        "new fields  request_counts, shiny (first seen; loaded, see schema_drift)" in first.output
    )
    second = run_cli("run", "--input", f, "--db", db)
    assert second.exit_code == 0
    assert "new fields" not in second.output
    assert query(db, "select field, note from schema_drift order by field") == [
        ("request_counts", "expected object, got list"),
        ("shiny", "new field"),
    ]
    assert (
        scalar(db, "select extra->>'$.shiny.a' from batches where id = $1", [batch(1)["id"]]) == "1"
    )


def test_json_logs_and_runs_listing(run_cli: Any, db: Path, tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "in.jsonl", [batch(1)])
    proc = subprocess.run(
        billing("run", "--input", f, "--db", db, "-v", "--log-format", "json"),
        capture_output=True,
        text=True,
        check=True,
    )
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert events[-1]["message"] == "run finished" and events[-1]["status"] == "ok"
    listing = run_cli("runs", "--db", db, "--format", "json")
    runs = json.loads(listing.output)
    assert [(r["run_id"], r["batches_loaded"], r["total_cost_usd"]) for r in runs] == [
        (events[-1]["run_id"], 1, "0.300000000")
    ]


# --------------------------------------------------------------------------- property


def snapshots(n: int, cost_a: int, cost_b: int, restate: bool) -> list[dict[str, Any]]:
    """Snapshots of one batch in lifecycle order; the last one is the truth."""
    running = batch(n, status="in_progress", billing=None, pricing_lines=[])
    done = batch(n, completed_at=1793494800, billing=None, pricing_lines=[])
    final = batch(n, cost_nanos=cost_a, pricing_lines=[])
    out = [running, done, final]
    if restate:
        again = batch(n, cost_nanos=cost_b, pricing_lines=[])
        again["billing"]["finalized_at"] = "2026-11-05T00:00:00Z"
        out.append(again)
    return out


@settings(  # 7 orders in make test (about 1 s each); PROPERTY_EXAMPLES=200 for a long hunt
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "7")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.data(),
    specs=st.lists(
        st.tuples(st.integers(0, 2**62), st.integers(0, 2**62), st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
def test_any_order_of_runs_gives_the_final_snapshots_totals(
    tmp_path_factory: Any, data: st.DataObject, specs: list[tuple[int, int, bool]]
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    all_snaps = [s for i, spec in enumerate(specs) for s in snapshots(i + 1, *spec)]
    truth = sum((b if r else a) for a, b, r in specs)
    order = data.draw(st.permutations(all_snaps))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(order)), max_size=3)))
    runs = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    cfg = RunConfig(db_path=tmp / "p.duckdb")
    for i, items in enumerate(runs + runs[:1]):  # and one rerun of the first night
        if items:
            path = tmp / f"run{i}.jsonl"
            path.write_bytes(b"\n".join(orjson.dumps(o) for o in items))
            execute(read_chunks([path], cfg.chunk_size), cfg, str(path))
    assert scalar(cfg.db_path, "select sum(cost_nanos) from batches") == truth
    assert scalar(cfg.db_path, "select count(*) from batches") == len(specs)
    assert scalar(cfg.db_path, "select count(*) from batches where is_final") == len(specs)
