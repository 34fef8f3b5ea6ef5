"""The database and the files around it belong to their owner: a run never overwrites,
follows or deletes what is not the pipeline's (issue #26). Each case shows what the user
keeps, what the run refused and what it said."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from pipeline.load import Loader
from pipeline.store import ChangedDuringRun
from tests.helpers import batch, query, scalar, write_jsonl


@pytest.fixture
def loaded(run_cli: Any, db: Path, tmp_path: Path) -> Path:
    assert (
        run_cli("run", write_jsonl(tmp_path / "one.jsonl", [batch(1)]), "--db", db, "-q").exit_code
        == 0
    )
    return db


def test_while_a_run_works_nobody_else_can_open_the_database_for_writing(loaded: Path) -> None:
    """An analyst's read-write session during a night was silently replaced by the
    publish: now it cannot start, and read-only readers go on as before."""
    loader = Loader(loaded, "20261203T000000Z-aaaaaa")
    try:
        probe = (
            "import duckdb, sys\n"
            "try:\n    duckdb.connect(sys.argv[1]).execute('create table mine(x int)')\n"
            "except duckdb.Error as e:\n    print('refused:', str(e).splitlines()[0][:60])\n"
            "print(duckdb.connect(sys.argv[1], read_only=True)"
            ".execute('select count(*) from batches').fetchone()[0])\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe, str(loaded)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert out[0].startswith("refused: IO Error: Could not set lock on file")
        assert out[1] == "1"  # a reader is never in the way
    finally:
        loader.rollback()
    assert "mine" not in {r[0] for r in query(loaded, "select table_name from duckdb_tables()")}


def test_a_database_changed_or_put_in_place_during_a_run_is_not_replaced(
    loaded: Path, tmp_path: Path
) -> None:
    loader = Loader(loaded, "20261203T000000Z-bbbbbb")
    loader._held.close()  # type: ignore[union-attr]  # (let this test play the other writer)
    con = duckdb.connect(str(loaded))
    con.execute("create table analyst_notes as select 42 as answer")
    con.close()
    with pytest.raises(ChangedDuringRun, match="changed while the run worked"):
        loader.commit()
    assert scalar(loaded, "select answer from analyst_notes") == 42  # theirs, kept
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    # a first run: a file that appears at the path meanwhile is not replaced either
    fresh = tmp_path / "new.duckdb"
    first = Loader(fresh, "20261203T000000Z-cccccc")
    fresh.write_text("someone else's file")
    with pytest.raises(ChangedDuringRun, match="appeared while the run worked"):
        first.commit()
    assert fresh.read_text() == "someone else's file"


def test_a_link_planted_at_the_lock_file_is_refused_and_its_target_untouched(
    run_cli: Any, loaded: Path, tmp_path: Path
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("do not touch")
    (tmp_path / f".{loaded.name}.lock").symlink_to(target)
    result = run_cli("run", write_jsonl(tmp_path / "two.jsonl", [batch(2)]), "--db", loaded)
    assert result.exit_code == 1
    assert (
        "is a symbolic link, not billing's lock file: refusing to write through it" in result.output
    )
    assert target.read_text() == "do not touch"
    assert scalar(loaded, "select count(*) from batches") == 1


def test_cleanup_touches_only_this_databases_own_working_files(
    run_cli: Any, db: Path, tmp_path: Path
) -> None:
    """A run on b.duckdb removed the working files of a run on b.duckdb.staging."""
    other = tmp_path / f".{db.name}.staging.20261203T000000Z-dddddd.work"
    other.write_text("another run's work")
    mine = tmp_path / f".{db.name}.20261203T000000Z-eeeeee.work"
    mine.write_text("left by a killed run of this database")
    path = write_jsonl(tmp_path / "one.jsonl", [batch(1)])
    assert run_cli("run", path, "--db", db, "-q").exit_code == 0
    assert other.read_text() == "another run's work"
    assert not mine.exists()


def test_snapshots_prune_only_their_own_files_never_through_a_link(
    run_cli: Any, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "one.jsonl", [batch(1)])
    a, b = tmp_path / "billing.duckdb", tmp_path / "billing.db"
    for _ in range(3):
        assert run_cli("run", path, "--db", a, "--keep-snapshots", "1", "-q").exit_code == 0
    keep = tmp_path / "snapshots" / "billing" / "my-notes.duckdb"
    keep.write_text("a user's file")
    assert run_cli("run", path, "--db", a, "--keep-snapshots", "1", "-q").exit_code == 0
    assert run_cli("run", path, "--db", b, "--keep-snapshots", "1", "-q").exit_code == 0
    assert keep.read_text() == "a user's file"
    assert len(list((tmp_path / "snapshots" / "billing").glob("2*.duckdb"))) == 1
    assert len(list((tmp_path / "snapshots" / "billing.db").glob("2*.duckdb"))) == 1  # apart
    # a snapshots/ that is a link is never followed: nothing written or deleted there
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "20260101T000000Z-ffffff.duckdb").write_text("not ours")
    other = tmp_path / "linked"
    other.mkdir()
    (other / "snapshots").symlink_to(elsewhere)
    c = other / "c.duckdb"
    for _ in range(2):
        result = run_cli("run", path, "--db", c, "--keep-snapshots", "1")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in elsewhere.iterdir()) == ["20260101T000000Z-ffffff.duckdb"]


def test_a_shared_databases_mode_and_group_survive_a_run(
    run_cli: Any, loaded: Path, tmp_path: Path
) -> None:
    group = grp.getgrnam("nogroup").gr_gid if os.geteuid() == 0 else os.getegid()
    os.chown(loaded, -1, group)
    loaded.chmod(0o640)
    path = write_jsonl(tmp_path / "two.jsonl", [batch(2)])
    assert run_cli("run", path, "--db", loaded, "-q").exit_code == 0
    st = loaded.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, group)
    assert scalar(loaded, "select count(*) from batches") == 2


@pytest.mark.parametrize(
    ("make", "said"),
    [
        ("fifo", "is not a regular file (a pipe, device or socket): pass a database file"),
        ("devnull", "is not a regular file (a pipe, device or socket, through a link)"),
        ("under_a_file", "is a file, not a folder"),
        ("memory", "--db :memory: would load into a database nobody could read afterwards"),
        ("views_only", "is a DuckDB database but not a billing database (it holds v)"),
        ("newer", "was written by a newer version of billing (schema version 99"),
    ],
)
def test_a_db_that_is_not_ours_or_not_a_file_is_one_line(
    run_cli: Any, tmp_path: Path, make: str, said: str
) -> None:
    db = tmp_path / "x.duckdb"
    if make == "fifo":
        os.mkfifo(db)
    elif make == "devnull":
        db.symlink_to("/dev/null")
    elif make == "under_a_file":
        (tmp_path / "afile").write_text("x")
        db = tmp_path / "afile" / "b.duckdb"
    elif make == "memory":
        db = Path(":memory:")
    elif make == "views_only":
        con = duckdb.connect(str(db))
        con.execute("create view v as select 1 as x")
        con.close()
    else:
        path = write_jsonl(tmp_path / "one.jsonl", [batch(1)])
        assert run_cli("run", path, "--db", db, "-q").exit_code == 0
        con = duckdb.connect(str(db))
        con.execute("update pipeline_meta set value = '99' where key = 'schema_version'")
        con.close()
    before = db.read_bytes() if make in ("views_only", "newer") else None
    result = run_cli("run", write_jsonl(tmp_path / "two.jsonl", [batch(2)]), "--db", db)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("billing: error: ") and said in result.output
    assert len(result.output.splitlines()) == 1
    if before is not None:
        assert db.read_bytes() == before  # untouched


def test_report_out_never_replaces_a_file_it_did_not_write(
    run_cli: Any, loaded: Path, tmp_path: Path
) -> None:
    """`billing report --out data/billing.duckdb` replaced the database with HTML."""
    before = loaded.read_bytes()
    result = run_cli("report", "--db", loaded, "--out", loaded)
    assert result.exit_code == 2
    assert result.output == (
        f"billing: error: --out {loaded} exists and is a DuckDB database: refusing to replace"
        " it (pass --force to replace it, or choose another name)\n"
    )
    assert loaded.read_bytes() == before
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    assert run_cli("report", "--db", loaded, "--out", mine).exit_code == 2
    assert mine.read_text() == "<p>my notes</p>"
    # a link is replaced by the report itself with --force, its target never written
    target = tmp_path / "target.txt"
    target.write_text("keep")
    link = tmp_path / "linked.html"
    link.symlink_to(target)
    assert "is a symbolic link" in run_cli("report", "--db", loaded, "--out", link).output
    assert run_cli("report", "--db", loaded, "--out", link, "--force").exit_code == 0
    assert target.read_text() == "keep" and not link.is_symlink()
    # its own earlier report is replaced without a word
    out = tmp_path / "r.html"
    assert run_cli("report", "--db", loaded, "--out", out).exit_code == 0
    assert run_cli("report", "--db", loaded, "--out", out).exit_code == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_export_killed_midway_leaves_nothing_the_next_one_does_not_clean(
    run_cli: Any, loaded: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    left = tmp_path / ".lake.tmp-0123abcd"  # what kill -9 during an export leaves
    left.mkdir()
    (left / "batches").mkdir()
    near = tmp_path / ".lake.tmp-notours"
    near.mkdir()
    assert run_cli("export", "--db", loaded, "--out", lake, "-q").exit_code == 0
    assert not left.exists()
    assert near.exists()  # not an exact name of ours: kept


def test_a_re_export_refuses_to_delete_a_users_file_inside_its_folders(
    run_cli: Any, loaded: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    assert run_cli("export", "--db", loaded, "--out", lake, "-q").exit_code == 0
    (month,) = (lake / "batches").iterdir()
    mine = month / "my-analysis.parquet"
    mine.write_text("a user's work")
    refused = run_cli("export", "--db", loaded, "--out", lake, "-q")
    assert refused.exit_code == 2
    assert (
        f"also holds batches/{month.name}/my-analysis.parquet, which the export did not write"
        in (refused.output)
    )
    assert mine.read_text() == "a user's work"
    mine.unlink()
    assert run_cli("export", "--db", loaded, "--out", lake, "-q").exit_code == 0


def test_a_corrupt_database_is_refused_untouched_and_names_the_latest_snapshot(
    run_cli: Any, loaded: Path, tmp_path: Path
) -> None:
    snapshot = max((tmp_path / "snapshots" / "billing").glob("2*.duckdb"))
    loaded.unlink()  # (the snapshot is a hard link: it keeps the good state)
    loaded.write_bytes(b"\x00" * 4096 + b"garbage")
    before = loaded.read_bytes()
    for args in (
        ("run", write_jsonl(tmp_path / "two.jsonl", [batch(2)])),
        ("query", "spend-by-provider"),
    ):
        result = run_cli(*args, "--db", loaded)
        assert result.exit_code == 2, result.output
        assert result.output.rstrip().endswith(
            f"; the latest good snapshot is {snapshot} (copy it over billing.duckdb to restore)"
        )
        assert loaded.read_bytes() == before  # read-only stays read-only: untouched
    loaded.write_bytes(snapshot.read_bytes())
    assert scalar(loaded, "select count(*) from batches") == 1
