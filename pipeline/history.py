"""The history, kept out of the file a night copies.

A night copies the published database before it writes (readers are never blocked, a
failed run leaves nothing), so a database that only grows would make every night copy
all of it. The fact tables are therefore split in two:

- the *head* rows, in the database's ``hot`` schema: the newest ``keep_batches``
  batches (by creation). A night writes only these, and copies only them;
- the *history*: the rows of every older batch, written once into immutable Parquet
  files beside the database, one per table, month the batches were created in and chunk
  (``<name>.history/<table>/month=YYYY-MM/<run_id>-<chunk>.parquet``), never rewritten.
  Older batches are nearly all final; one that still changes is simply taken back.

``main.<table>`` (``batches``, ``pricing_lines``, ``batch_requests``, ``batch_history``,
``charge_ledger``) is a view of both: the head rows, then the history's rows of the
batches not taken back into the head. Everything that reads (the views in ``sql/``,
``billing query``/``sql``, exports, notebooks, an analyst's own DuckDB) reads these views,
as it read the tables before.

A night that changes a batch of the history (a restatement, a late status, request rows
fetched later) first takes that batch's rows back into the head (:func:`take_back`):
copied, and *tombstoned* in the history file they came from (``history_tombstones``), so
that the view shows them once. The Parquet files are never touched: a closed month's
files stay as they were published, and every snapshot (a head that names its files)
stays readable.

Moving rows into the history (:func:`settle`) happens at the end of a write session, once
the head holds at least ``min_batches`` batches beyond the newest ``keep_batches`` (every
few weeks at a few thousand batches a night; the first run of this version on a large
database moves most of it at once). The head, and so the copy, stays bounded however long
the history grows. The files are written and synced before the head that names them is
published; a run killed before that leaves files no head names, removed by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

log = logging.getLogger(__name__)

# fact table -> the column naming its batch
FACTS: dict[str, str] = {
    "batches": "id",
    "pricing_lines": "batch_id",
    "batch_requests": "batch_id",
    "batch_history": "batch_id",
    "charge_ledger": "batch_id",
}

KEEP_BATCHES = 10_000  # batches the head keeps (the newest by creation)
MIN_BATCHES = 10_000  # batches beyond those that make a move worth its files
# (for tests and small installations: BILLING_HISTORY_KEEP_BATCHES, ..._MIN_BATCHES)

HISTORY_DDL = """
create table if not exists history_parts (
    table_name varchar not null, part varchar not null, month date, rows bigint,
    run_id varchar, written_at timestamptz, folder varchar
);
create table if not exists history_tombstones (
    batch_id varchar not null, part varchar not null, run_id varchar, recorded_at timestamptz
);
"""


class HistoryError(Exception):
    """The history folder cannot take the night's files: nothing was committed."""


# what history.<table> has beyond the table's own columns: the file a row is in, and for
# batches hash(id), written with each row (a probe of a night's ids reads 8 bytes a row)
_EXTRA = {t: "_part, _id_hash" if t == "batches" else "_part" for t in FACTS}

_MONTH = re.compile(r"\d{4}-\d{2}")
_PART_RE = r"[^/\\]+/month=[0-9-]+/[^/\\]+\.parquet$"  # a part's name, from its file's path


def folder_of(db: Path) -> Path:
    """Where a database's history lives: ``billing.duckdb`` -> ``billing.history``, any
    other name its own (``b.db`` -> ``b.db.history``)."""
    own = db.stem if db.suffix == ".duckdb" else db.name
    return db.parent / f"{own}.history"


def sql_path(path: Path | str) -> str:
    """A path as the inside of a SQL string literal (its quotes doubled): a database or
    folder name may hold a quote."""
    return str(path).replace("'", "''")


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """A database from before the split keeps its fact tables in ``main``: their rows
    move into the head tables (``hot``) once, in the run's transaction. The tables it
    moved, if any."""
    moved = []
    old = {
        r[0]
        for r in con.execute(
            "select table_name from duckdb_tables() where database_name = current_database()"
            " and schema_name = 'main' and table_name in $1",
            [list(FACTS)],
        ).fetchall()
    }
    for table in (t for t in FACTS if t in old):
        con.execute(f"insert into hot.{table} by name select * from main.{table}")  # noqa: S608
        con.execute(f"drop table main.{table}")
        moved.append(table)
    if moved:
        log.info("moved the fact tables into the head (hot schema): %s", ", ".join(moved))
    return moved


def recorded(con: duckdb.DuckDBPyConnection) -> list[Path]:
    """The folders a database's history files were written in (a copy of the database
    file, or a snapshot, reads its original's files); none for one without history."""
    try:
        rows = con.execute(
            "select distinct folder from history_parts where folder is not null"
        ).fetchall()
    except duckdb.Error:
        return []
    return [Path(r[0]) for r in rows]


def parts(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [p.name for p in _part_rows(con, table)]


@dataclass(frozen=True)
class _Part:
    name: str  # <table>/month=YYYY-MM/<run_id>-<chunk>.parquet
    folder: str | None  # where it was written


def _part_rows(con: duckdb.DuckDBPyConnection, table: str) -> list[_Part]:
    return [
        _Part(r[0], r[1])
        for r in con.execute(
            "select part, folder from history_parts where table_name = $1 order by part",
            [table],
        ).fetchall()
    ]


def _path(part: _Part, own: Path) -> Path:
    """A part is read beside the database when it is there (a database moved with its
    history folder), else where it was written (a copy of the database file)."""
    here = own / part.name
    if here.is_file() or part.folder is None:
        return here
    return Path(part.folder) / part.name


def create_views(con: duckdb.DuckDBPyConnection, folder: Path | None) -> None:
    """``main.<table>`` for each fact table: the head rows, and the history's rows of
    batches not taken back (``history.<table>``, each row with its ``_part``). Made again
    only when the files or the head's columns changed (the key of what they were made
    from is in pipeline_meta)."""
    found: dict[str, list[_Part]] = {}
    if folder is not None:
        for table, name, where in con.execute(
            "select table_name, part, folder from history_parts order by all"
        ).fetchall():
            found.setdefault(table, []).append(_Part(name, where))
    statements = ["create schema if not exists history"]
    for table, key in FACTS.items():
        if folder is None or not found.get(table):
            statements.append(f"drop view if exists history.{table}")
            plain = f"create or replace view main.{table} as select * from hot.{table}"  # noqa: S608
            statements.append(plain)
            continue
        statements.append(
            f"create or replace view history.{table} as"  # noqa: S608 - quoted paths
            f" select * exclude (filename) from ("
            f" select *, regexp_extract(filename, '{_PART_RE}') as _part"
            f" from {_read(found[table], folder, filename=True)}) as h"
            f" where not exists (select 1 from main.history_tombstones t"
            f" where t.batch_id = h.{key} and t.part = h._part)"
        )
        statements.append(
            f"create or replace view main.{table} as select * from hot.{table}"  # noqa: S608
            f" union all by name select * exclude ({_EXTRA[table]}) from history.{table}"
        )
    columns = con.execute(
        "select table_name, column_name, data_type from duckdb_columns()"
        " where database_name = current_database() and schema_name = 'hot' order by all"
    ).fetchall()
    key = hashlib.sha256(repr((statements, columns)).encode()).hexdigest()
    row = con.execute(
        "select (select max(value) from pipeline_meta where key = 'history_views_key'),"
        " (select count(*) from duckdb_views() where database_name = current_database()"
        " and schema_name = 'main' and view_name in $1)",
        [list(FACTS)],
    ).fetchone()
    if row and row[0] == key and row[1] == len(FACTS):
        return
    for statement in statements:
        con.execute(statement)
    con.execute("delete from pipeline_meta where key = 'history_views_key'")
    con.execute("insert into pipeline_meta values ('history_views_key', $1)", [key])


def _read(found: list[_Part], folder: Path, *, filename: bool = False) -> str:
    """``read_parquet`` of these files, named one by one (never a glob: a file being
    written by a later run, or left by a killed one, is never read)."""
    listed = ", ".join(f"'{sql_path(_path(p, folder))}'" for p in found)
    with_name = " filename = true," if filename else ""
    return f"read_parquet([{listed}],{with_name} union_by_name = true, hive_partitioning = false)"


def has_history(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute("select count(*) from (select 1 from history_parts limit 1)").fetchone()
    return bool(row and row[0])


def known(con: duckdb.DuckDBPyConnection, folder: Path, ids: str) -> str:
    """The temp table ``known_ids``: which of the ids in temp table ``ids`` (column
    ``id``) the history holds, found by their hash first (one 8-byte column read; the
    ids themselves only where a hash matched). Its name, for SQL."""
    con.execute("create or replace temp table known_ids (id varchar)")
    found = _part_rows(con, "batches")
    if not found:
        return "known_ids"
    files = _read(found, folder)
    con.execute(
        "create or replace temp table known_hashes as select distinct _id_hash"  # noqa: S608
        f" from {files} where _id_hash in (select hash(id) from {ids})"
    )
    row = con.execute("select count(*) from known_hashes").fetchone()
    if row and row[0]:
        con.execute(
            f"insert into known_ids select distinct id from {files}"  # noqa: S608
            " where _id_hash in (select _id_hash from known_hashes)"
            f" and id in (select id from {ids})"
        )
    return "known_ids"


def stored_batches(con: duckdb.DuckDBPyConnection, folder: Path, ids: str) -> None:
    """The temp table ``stored_batches``: the stored rows of the batches whose ids are in
    temp table ``ids`` (the head's, then the history's not taken back), reading a
    history file only for ids it holds."""
    rows = f"select * from hot.batches where id in (select id from {ids})"  # noqa: S608
    if has_history(con):
        found = known(con, folder, ids)
        rows += (
            f" union all by name select * exclude ({_EXTRA['batches']})"  # noqa: S608
            f" from history.batches where id in (select id from {found})"
        )
    con.execute(f"create or replace temp table stored_batches as {rows}")


def take_back(
    con: duckdb.DuckDBPyConnection, folder: Path, ids_sql: str, run_id: str, now: datetime
) -> int:
    """Copy every history row of the batches ``ids_sql`` names (a query of one column)
    into the head tables and tombstone them where they were: the night then changes them
    in the head as any other. The number of batches taken back."""
    if not has_history(con):
        return 0
    con.execute(f"create or replace temp table taking_back as select * from ({ids_sql}) t(id)")  # noqa: S608
    row = con.execute("select count(*) from taking_back").fetchone()
    if not row or not row[0]:
        return 0  # (the usual night: nothing to change in the history, nothing read)
    found = known(con, folder, "taking_back")
    row = con.execute(f"select count(*) from {found}").fetchone()  # noqa: S608
    n = int(row[0]) if row else 0
    if not n:
        return 0
    for table, key in FACTS.items():
        if not parts(con, table):
            continue
        con.execute(
            f"create or replace temp table taken_rows as select * from history.{table}"  # noqa: S608
            f" where {key} in (select id from {found})"
        )
        con.execute(
            f"insert into hot.{table} by name select * exclude ({_EXTRA[table]})"  # noqa: S608
            " from taken_rows"
        )
        con.execute(
            "insert into history_tombstones"  # noqa: S608
            f" select distinct {key}, _part, $1, $2 from taken_rows",
            [run_id, now],
        )
    con.execute("drop table if exists taken_rows")
    log.info("took %d batches back from the history to change them", n)
    return n


@dataclass
class Settled:
    batches: int = 0
    files: int = 0
    bytes: int = 0


def limits() -> tuple[int, int]:
    """(keep_batches, min_batches), from the environment where set."""
    out = []
    for name, default in (("KEEP", KEEP_BATCHES), ("MIN", MIN_BATCHES)):
        raw = os.environ.get(f"BILLING_HISTORY_{name}_BATCHES", "").strip()
        out.append(int(raw) if raw.isdigit() else default)
    return out[0], out[1]


CHUNK_BATCHES = 250_000  # batches per file: bounds the memory of a large move


def settle(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    run_id: str,
    now: datetime,
    *,
    keep: int = KEEP_BATCHES,
    at_least: int = MIN_BATCHES,
) -> Settled:
    """Move the head's batches but the newest ``keep`` into the history,
    one Parquet file per table, month of creation and chunk of at most
    :data:`CHUNK_BATCHES` batches, once there are at least ``at_least`` (and one) of them.
    Called on the private working copy after the night's transaction committed: each
    chunk is its own transaction (a failure anywhere discards the copy, so nothing is
    published). Files are synced before returning (the head naming them is published
    after)."""
    done = Settled()
    row = con.execute("select count(*) from hot.batches").fetchone()
    if (int(row[0]) if row else 0) - keep < max(at_least, 1):
        return done
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise HistoryError(
            f"{folder} is not a folder (the database's settled history goes there): move it"
            " aside; nothing was committed"
        )
    con.execute(
        "create or replace temp table settling as"  # noqa: S608 - a constant
        " select batch_id, month, (row_number() over (partition by month order by batch_id)"
        f" - 1) // {CHUNK_BATCHES} as chunk from ("
        " select id as batch_id,"
        " strftime(date_trunc('month', coalesce(created_at, loaded_at)), '%Y-%m') as month"
        " from hot.batches"
        " order by coalesce(created_at, loaded_at) desc, id desc offset $1)",
        [keep],
    )
    groups = con.execute(
        "select month, chunk, count(*) from settling group by all order by all"
    ).fetchall()
    written: list[Path] = []
    for month, chunk, batches in groups:
        if not _MONTH.fullmatch(month or ""):
            raise ValueError(f"unexpected month {month!r}")
        con.execute("begin transaction")  # one per chunk: a large move holds little
        con.execute(
            "create or replace temp table settling_now as select batch_id from settling"
            " where month = $1 and chunk = $2",
            [month, chunk],
        )
        for table, key in FACTS.items():
            part = f"{table}/month={month}/{run_id}-{chunk:04d}.parquet"
            path = folder / part
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            extra = ", hash(id) as _id_hash" if table == "batches" else ""
            rows = con.execute(
                f"copy (select *{extra} from hot.{table} where {key} in"  # noqa: S608
                f" (select batch_id from settling_now)) to '{sql_path(path)}'"
                " (format parquet, compression zstd, row_group_size 61440)"
            ).fetchone()
            n = int(rows[0]) if rows else 0  # (COPY answers the rows it wrote)
            if n == 0:
                path.unlink()
                continue
            gone = con.execute(
                f"delete from hot.{table} where {key} in (select batch_id from settling_now)"  # noqa: S608
            ).fetchone()
            if not gone or int(gone[0]) != n:  # the same rows, or nothing is published
                raise HistoryError(
                    f"moving {table} rows into {path}: {n} written but"
                    f" {gone[0] if gone else 0} removed from the head; nothing was committed"
                )
            con.execute(
                "insert into history_parts values ($1, $2, $3, $4, $5, $6, $7)",
                [table, part, f"{month}-01", n, run_id, now, str(folder)],
            )
            written.append(path)
        con.execute("commit")
        done.batches += int(batches)
        log.debug("settled %s chunk %d: %d batches", month, chunk, batches)
    for empty in {p.parent for p in written} ^ set(folder.glob("*/month=*")):
        with contextlib.suppress(OSError):
            empty.rmdir()  # (a folder made for a table with no rows that month)
    _sync(written)
    done.files = len(written)
    done.bytes = sum(p.stat().st_size for p in written)
    log.info(
        "moved %d batches into the history (%d files, %.1f MB)",
        done.batches,
        done.files,
        done.bytes / 2**20,
    )
    return done


def remove_runs(con: duckdb.DuckDBPyConnection, folder: Path, run_ids: Iterable[str]) -> list[Path]:
    """The files of runs killed before they published (the next run finds their working
    files; a run killed just after its publish also leaves some, but its files are named
    by the published head and stay). Only this database's own folder, only those names."""
    named = {r[0] for r in con.execute("select distinct run_id from history_parts").fetchall()}
    runs = {r for r in run_ids if r not in named}
    gone: list[Path] = []
    if not runs or not folder.is_dir() or folder.is_symlink():
        return gone
    for path in _files(folder):
        if "-".join(path.name.split("-")[:2]) in runs:
            path.unlink(missing_ok=True)
            gone.append(path)
    if gone:
        log.info("removed %d history files of runs that never published", len(gone))
    return gone


def _files(folder: Path) -> Iterable[Path]:
    for table in FACTS:
        base = folder / table
        if base.is_dir() and not base.is_symlink():
            yield from (
                p for p in base.glob("month=*/*.parquet") if p.is_file() and not p.is_symlink()
            )


def _sync(paths: list[Path]) -> None:
    folders = {p.parent for p in paths} | {p.parent.parent for p in paths}
    for path in [*paths, *sorted(folders)]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
