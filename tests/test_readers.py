"""The nightly job and its readers share one database path without blocking each other:
the job publishes immutable snapshots with an atomic rename."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.helpers import batch, billing, query, scalar, write_jsonl

HOLD = """
import duckdb, sys
con = duckdb.connect(sys.argv[1], read_only=True)
q = "select count(*), sum(cost_nanos) from batches"
print(*con.execute(q).fetchone(), flush=True)
sys.stdin.readline()
print(*con.execute(q).fetchone(), flush=True)
"""


def _ask(proc: subprocess.Popen[str], sql: str) -> str:
    """One query to a running `duckdb` CLI, its one-line answer."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(sql + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().rstrip("\n")


def test_a_reader_held_open_for_the_whole_run_neither_stops_it_nor_sees_it(
    db: Path, tmp_path: Path
) -> None:
    one = write_jsonl(tmp_path / "one.jsonl", [batch(1)])
    two = write_jsonl(tmp_path / "two.jsonl", [batch(2, cost_nanos=5)])
    subprocess.run(
        billing("run", "--input", one, "--db", db, "-q"), check=True, capture_output=True
    )
    python = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    cli = shutil.which("duckdb") or str(Path(sys.executable).parent / "duckdb")
    duck = (
        subprocess.Popen(
            [cli, "-readonly", "-csv", "-noheader", str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if Path(cli).exists()
        else None
    )
    try:
        assert python.stdout is not None and python.stdin is not None
        assert python.stdout.readline() == "1 300000000\n"
        assert duck is None or _ask(duck, "select count(*) from batches;") == "1"
        run = subprocess.run(
            billing("run", "--input", two, "--db", db, "-q"),
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        # a reader that opens now sees the new totals
        assert query(db, "select count(*), sum(cost_nanos) from batches") == [(2, 300_000_005)]
        # the open readers still see the snapshot they opened, unchanged under them
        python.stdin.write("\n")
        python.stdin.flush()
        assert python.stdout.readline() == "1 300000000\n"
        assert duck is None or _ask(duck, "select count(*) from batches;") == "1"
    finally:
        python.kill()
        if duck is not None:
            duck.kill()


def test_billing_query_never_waits_for_a_run(run_cli: Any, db: Path, tmp_path: Path) -> None:
    assert (
        run_cli(
            "run", "--input", write_jsonl(tmp_path / "in.jsonl", [batch(1)]), "--db", db
        ).exit_code
        == 0
    )
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from pipeline.store import Store, WriterLock;"
            " WriterLock(Store(Path(sys.argv[1])), 'RUN-B', 0); print('held', flush=True); time.sleep(30)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = run_cli("query", "spend-by-session", "--db", db, "--format", "csv")
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[1].startswith("sess_a,openai,1,1,300000000,0.300000000,")
    finally:
        holder.kill()
        holder.wait()


CRASH = """
import os, shutil, signal, sys
import pipeline.store as store
where = sys.argv[1]
real_replace, real_copy = os.replace, shutil.copyfileobj

def replace(src, dst):
    if where == "before-rename":
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
    if where == "after-rename":
        os.kill(os.getpid(), signal.SIGKILL)

def copy(src, dst, *args):
    real_copy(src, dst, *args)
    dst.flush()
    if where == "after-copy":
        os.kill(os.getpid(), signal.SIGKILL)

store.os.replace = replace
store.shutil.copyfileobj = copy
from pipeline.cli import main
sys.argv = ["billing", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(
    ("where", "expected", "runs"),
    [
        ("after-copy", [(1, 300_000_000)], 1),
        ("before-rename", [(1, 300_000_000)], 1),
        ("after-rename", [(2, 300_000_005)], 2),
    ],
)
def test_kill_9_at_any_moment_of_publishing_leaves_a_complete_state(
    db: Path, tmp_path: Path, where: str, expected: list[tuple[int, int]], runs: int
) -> None:
    one = write_jsonl(tmp_path / "one.jsonl", [batch(1)])
    two = write_jsonl(tmp_path / "two.jsonl", [batch(2, cost_nanos=5)])
    subprocess.run(
        billing("run", "--input", one, "--db", db, "-q"), check=True, capture_output=True
    )
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, where, "run", "--input", str(two), "--db", str(db), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    assert query(db, "select count(*), sum(cost_nanos) from batches") == expected
    assert scalar(db, "select count(*) from load_runs") == runs
    again = subprocess.run(
        billing("run", "--input", two, "--db", db, "-q"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert query(db, "select count(*), sum(cost_nanos) from batches") == [(2, 300_000_005)]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_snapshots_are_kept_pruned_and_readable(run_cli: Any, db: Path, tmp_path: Path) -> None:
    for n in range(1, 5):
        f = write_jsonl(tmp_path / f"in{n}.jsonl", [batch(n, cost_nanos=n)])
        assert run_cli("run", "--input", f, "--db", db, "--keep-snapshots", "2").exit_code == 0
    runs = [r[0] for r in query(db, "select run_id from load_runs order by started_at")]
    kept = sorted(
        (tmp_path / "snapshots" / "billing").iterdir(), key=lambda p: p.stat().st_mtime_ns
    )
    assert [p.name for p in kept] == [f"{runs[2]}.duckdb", f"{runs[3]}.duckdb"]
    assert [scalar(p, "select sum(cost_nanos) from batches") for p in kept] == [6, 10]
    assert os.stat(kept[-1]).st_ino == os.stat(db).st_ino  # the newest shares the published file
    f = write_jsonl(tmp_path / "in5.jsonl", [batch(5, cost_nanos=5)])
    assert run_cli("run", "--input", f, "--db", db, "--keep-snapshots", "0").exit_code == 0
    assert len(list((tmp_path / "snapshots" / "billing").iterdir())) == 2  # 0 keeps no new one


def test_a_stray_write_ahead_log_beside_the_published_file_is_moved_aside(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    assert (
        run_cli(
            "run", "--input", write_jsonl(tmp_path / "a.jsonl", [batch(1)]), "--db", db
        ).exit_code
        == 0
    )
    Path(f"{db}.wal").write_bytes(b"not ours")
    result = run_cli("run", "--input", write_jsonl(tmp_path / "b.jsonl", [batch(2)]), "--db", db)
    assert result.exit_code == 0, result.output
    assert not Path(f"{db}.wal").exists()
    assert [
        p.read_bytes() for p in (tmp_path / "snapshots" / "billing").glob("orphaned-*.wal")
    ] == [b"not ours"]
    assert scalar(db, "select count(*) from batches") == 2


def test_the_loaders_file_is_written_in_smaller_row_groups_readable_as_any_file(
    tmp_path: Path,
) -> None:
    from pipeline.load import WRITER_ROW_GROUP_SIZE, connect

    path = tmp_path / "it's here" / "w.duckdb"  # a quote in the path is quoted
    path.parent.mkdir()
    con = connect(path, writer=True)
    con.execute("create table t as select range as i from range(150000)")
    con.execute("checkpoint")
    con.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with duckdb.connect(str(path), read_only=True) as reader:  # as readers open it
        groups = reader.execute(
            "select row_group_id, max(count) from pragma_storage_info('t')"
            " where column_name = 'i' group by all order by 1"
        ).fetchall()
        assert reader.execute("select count(*), sum(i) from t").fetchall() == [
            (150_000, 150_000 * 149_999 // 2)
        ]
    assert [n for _, n in groups] == [WRITER_ROW_GROUP_SIZE, WRITER_ROW_GROUP_SIZE, 27_120]
    # DuckDB 1.4 (an analyst's stock CLI) can still open it: the storage version byte
    assert path.read_bytes()[12] == 0x43
    assert not Path(f"{path}.tmp").exists()
