"""Load stage: DuckDB, one transaction per run, published as an immutable snapshot.

Readers and the nightly job never share a DuckDB file. The database path that readers
open (``data/billing.duckdb``) is a *published snapshot*: nobody writes into it. A
:class:`Loader` takes the writer lock (``.billing.duckdb.lock`` beside it, so two runs
cannot interleave), copies the published snapshot to a private working file, begins a
transaction there, stages validated frames chunk by chunk into temporary tables, merges
them into the real tables by natural key, commits and checkpoints, and then *publishes*:
the working file is renamed over the published path in one atomic step. A reader that
had the old file open keeps reading the old snapshot; a reader that opens after the
rename sees the new one. Anything that goes wrong before the rename (an error, Ctrl-C,
kill -9) leaves the published snapshot exactly as it was; the working file is removed
(or, after kill -9, by the next run).

The last ``keep_snapshots`` published states stay in ``snapshots/<name>/<run_id>.duckdb``
beside the database (hard links, so the newest costs no extra disk), answering "what did
the report say after that run".

All SQL here uses parameters for values; table and view names are constants.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from pipeline import history, schema
from pipeline.config import DEFAULT_ACCOUNT, DEFAULT_KEEP_SNAPSHOTS, FileConfig
from pipeline.night import (
    LEDGER_NEW_SQL,
    RECONCILE_SQL,
    ledger_new_sql,
    ledger_sql,
    scoped_reconciliation,
    sql_dir,
    view_over,
)
from pipeline.store import (
    SCHEMA_VERSION,
    NotABillingDatabase,
    Published,
    Store,
    WriterLock,
    check_db_path,
    create_exclusive,
    publish,
    restore_hint,
)

log = logging.getLogger(__name__)

STORAGE_COMPAT = "v1.4.0"
# The rules the FOCUS books were written by (charge date, billed money only): a database
# whose books carry another version has them re-booked once (Loader.merge).
LEDGER_VERSION = "2"

# The three fact tables come from the column spec (pipeline/schema.py), with their
# bookkeeping columns; every spec column is also added to an older database that lacks it.
BATCH_TABLE = (*schema.BATCH, *schema.DERIVED)
TABLES_DDL = f"""
create schema if not exists hot;
create table if not exists hot.batches (
    {schema.ddl_columns(BATCH_TABLE)},
    content_hash ubigint, source varchar, source_line integer,
    first_run_id varchar, run_id varchar, loaded_at timestamptz,
    captured boolean, captured_at timestamptz, capture_reason varchar
);
{schema.add_columns("hot.batches", BATCH_TABLE)}
create table if not exists hot.pricing_lines (
    {schema.ddl_columns(schema.LINE)}, run_id varchar
);
{schema.add_columns("hot.pricing_lines", schema.LINE)}
alter table hot.pricing_lines add column if not exists loaded_at timestamptz;
create table if not exists hot.batch_requests (
    {schema.ddl_columns(schema.REQUEST)}, run_id varchar, loaded_at timestamptz
);
{schema.add_columns("hot.batch_requests", schema.REQUEST)}
create table if not exists hot.batch_history (
    batch_id varchar not null, run_id varchar not null, recorded_at timestamptz,
    change varchar, status varchar, is_final boolean, billed boolean, charged boolean,
    billing_reason varchar, cost_nanos bigint, previous_cost_nanos bigint,
    cost_delta_nanos bigint, billing_finalized_at timestamptz,
    previous_billing_finalized_at timestamptz, source varchar
);
create table if not exists rejected_batches (
    run_id varchar not null, rejected_at timestamptz, source varchar, line integer,
    batch_id varchar, reason varchar not null, raw_text varchar, raw_md5 varchar,
    last_run_id varchar, times_seen integer
);
create table if not exists fetch_errors (
    run_id varchar not null, batch_id varchar, url varchar, http_status integer,
    reason varchar, occurred_at timestamptz
);
create table if not exists schema_drift (
    field varchar not null, note varchar, first_run_id varchar, first_seen_at timestamptz,
    example_batch_id varchar
);
create table if not exists reconciliation_results (
    run_id varchar not null, batch_id varchar, check_name varchar, expected_nanos hugeint,
    actual_nanos hugeint, detail varchar
);
create table if not exists load_runs (
    run_id varchar not null, started_at timestamptz, finished_at timestamptz,
    duration_s double, source varchar, status varchar, pipeline_version varchar,
    records_read bigint, batches_loaded bigint, batches_new bigint, batches_updated bigint,
    batches_unchanged bigint, batches_stale bigint, duplicates_in_input bigint,
    lines_loaded bigint, rejected bigint, not_found bigint,
    cost_nanos_loaded hugeint, total_cost_nanos_before hugeint,
    total_cost_nanos_after hugeint, cost_delta_nanos hugeint,
    reconciliation_issues bigint, new_fields varchar[]
);
create table if not exists pipeline_meta (key varchar, value varchar);
create table if not exists request_fetches (
    batch_id varchar not null, cost_nanos bigint, rows bigint, run_id varchar,
    fetched_at timestamptz
);
alter table hot.batches add column if not exists captured boolean;
alter table hot.batches add column if not exists captured_at timestamptz;
alter table hot.batches add column if not exists capture_reason varchar;
alter table rejected_batches add column if not exists source_file varchar;
alter table fetch_errors add column if not exists kind varchar;
alter table load_runs add column if not exists not_fetched bigint;
alter table load_runs add column if not exists batches_reread bigint;
alter table load_runs add column if not exists unreadable_inputs bigint;
alter table load_runs add column if not exists focus_corrections bigint;
create table if not exists budgets (
    name varchar, period varchar, limit_nanos bigint, provider varchar, model varchar,
    session_id varchar, tag_key varchar, tag_value varchar
);
create table if not exists price_list (
    provider varchar, model varchar, dimension varchar, pricing_plan varchar,
    unit_size bigint, unit_price_nanos bigint, effective_from date, effective_to date,
    source varchar
);
alter table budgets add column if not exists kind varchar;
alter table budgets add column if not exists thresholds integer[];
alter table budgets add column if not exists min_days decimal(9, 1);
create table if not exists attribution_keys (tag_key varchar);
create table if not exists notifications (
    finding_key varchar not null, endpoint varchar not null, kind varchar, subject varchar,
    period_start date, threshold_pct integer, status varchar, attempts integer,
    nights integer, first_tried_at timestamptz, last_tried_at timestamptz,
    sent_at timestamptz, http_status integer, error varchar, body varchar, run_id varchar
);
create table if not exists catalogue_snapshots (
    snapshot_id varchar not null, taken_at timestamptz not null, source varchar,
    entries bigint, unreadable_entries bigint, content_md5 varchar, run_id varchar
);
create table if not exists catalogue_prices (
    snapshot_id varchar not null, provider varchar, model varchar, endpoint varchar,
    display_name varchar, meter varchar, unit varchar, unit_size bigint,
    price_per_unit varchar, unit_price decimal(38, 18), unit_price_attousd hugeint,
    currency varchar,
    conditions varchar, billing_timestamp_basis varchar, time_windows varchar
);
create table if not exists credit_readings (
    recorded_at timestamptz not null, source varchar, balance_nanos bigint,
    reserved_nanos bigint, available_nanos bigint, remaining varchar,
    thirty_day_usage varchar, thirty_day_requests bigint, run_id varchar
);
create table if not exists hot.charge_ledger (
    batch_id varchar not null, charge_kind varchar not null, provider varchar,
    model varchar, dimension varchar, unit_size double, unit_price_usd decimal(38, 9),
    pricing_plan varchar, service_tier varchar,
    quantity double, billable_units double, charge_nanos bigint not null,
    charge_period_at timestamptz, billing_period_at timestamptz, charge_class varchar,
    billing_reason varchar, charged boolean, run_id varchar, recorded_at timestamptz
);
{history.HISTORY_DDL}"""

_REJECT_SCHEMA = {
    "source": pl.String,
    "line": pl.Int32,
    "batch_id": pl.String,
    "reason": pl.String,
    "raw_text": pl.String,
    "source_file": pl.String,
}

STAGE_DDL = """
create or replace temp table stage_batches as
    select * exclude (first_run_id, run_id, loaded_at, captured, captured_at, capture_reason),
        0::bigint as _seq
    from batches limit 0;
create or replace temp table stage_lines as
    select * exclude (run_id, loaded_at), 0::bigint as _seq from pricing_lines limit 0;
create or replace temp table stage_requests as
    select * exclude (run_id, loaded_at), 0::bigint as _seq from batch_requests limit 0;
create or replace temp table stage_request_sets (batch_id varchar);
create or replace temp table stage_rejects (
    source varchar, line integer, batch_id varchar, reason varchar, raw_text varchar,
    source_file varchar
);
"""

# Every GET of a finished batch re-runs the gateway's finalization: the first answers
# charged=true ("charged:captured"), every later one charged=false, "already_billed", a
# new finalized_at and the same money. Such a re-read is not a change: the capture (its
# reason and time) is kept, nothing is rewritten and no history is written. A change of
# cost_nanos is a restatement (history with its delta).
#
# Snapshot order: a final snapshot beats a non-final one, then a capture beats a re-read
# of the same money, then the later billing finalisation, then the later lifecycle event,
# then the further status. Ties go to the snapshot read later, so a restatement with the
# same timestamps still replaces.
CAPTURES_SQL = """
create or replace temp table captures as
    select id,
        arg_min(cost_nanos, _seq) as capture_cost,
        arg_min(billing_finalized_at, _seq) as captured_at,
        arg_min(billing_reason, _seq) as capture_reason
    from stage_batches where charged group by id
"""

# Each id read once (the usual night): every staged snapshot is the incoming one, read
# in place instead of copied.
UNIQUE_SQL = "create or replace temp view incoming as select * from stage_batches"

DEDUPE_SQL = """
create or replace temp table winners as
    select id, _seq from (
        select s.id, s._seq, row_number() over (
            partition by s.id
            order by s.is_final desc,
                     coalesce(s.billing_reason_base = 'already_billed'
                              and s.cost_nanos is not distinct from c.capture_cost, false) asc,
                     s.billing_finalized_at desc nulls last,
                     s.last_event_at desc nulls last, s.status_rank desc, s._seq desc
        ) as _rn
        from stage_batches s left join captures c on c.id = s.id
    ) where _rn = 1;

create or replace temp table incoming as
    select s.* from stage_batches s semi join winners w on w.id = s.id and w._seq = s._seq
"""

MERGE_SQL = """
create or replace temp table decisions as
    select i.id, i._seq,
        case
            when e.id is null then 'new'
            when i.billing_reason_base = 'already_billed' and e.is_final
                 and i.cost_nanos is not distinct from e.cost_nanos then 'reread'
            when (i.is_final::int, coalesce(i.billing_finalized_at, 'epoch'::timestamptz),
                  coalesce(i.last_event_at, 'epoch'::timestamptz), i.status_rank)
               < (e.is_final::int, coalesce(e.billing_finalized_at, 'epoch'::timestamptz),
                  coalesce(e.last_event_at, 'epoch'::timestamptz), e.status_rank) then 'stale'
            when i.content_hash = e.content_hash then 'unchanged'
            else 'updated'
        end as action,
        e.cost_nanos as previous_cost_nanos,
        e.billing_finalized_at as previous_billing_finalized_at,
        e.first_run_id as previous_first_run_id,
        coalesce(e.captured, false) or c.id is not null or coalesce(i.charged, false)
            or coalesce(i.billing_reason_base = 'already_billed', false) as captured,
        coalesce(e.captured_at, c.captured_at,
                 case when i.charged then i.billing_finalized_at end) as captured_at,
        coalesce(e.capture_reason, c.capture_reason,
                 case when i.charged then i.billing_reason end) as capture_reason,
        (e.id is null
         or i.cost_nanos is distinct from e.cost_nanos
         or i.billing_finalized_at is distinct from e.billing_finalized_at
         or i.billed is distinct from e.billed
         or i.charged is distinct from e.charged
         or i.billing_reason is distinct from e.billing_reason
         or i.status is distinct from e.status) as billing_changed
    from incoming i left join stored_batches e on e.id = i.id left join captures c on c.id = i.id
"""

# The night's writes, into the head tables (pipeline/history.py): a settled batch the
# night changes was taken back into them first.
WRITE_SQL = """
insert into hot.batch_history
    select i.id, $run_id, $now,
        case
            when d.action = 'new' then 'new'
            when i.cost_nanos is distinct from d.previous_cost_nanos
                 and d.previous_billing_finalized_at is not null then 'restated'
            when d.previous_billing_finalized_at is null
                 and i.billing_finalized_at is not null then 'finalized'
            else 'changed'
        end,
        i.status, i.is_final, i.billed, i.charged, i.billing_reason, i.cost_nanos,
        d.previous_cost_nanos,
        coalesce(i.cost_nanos, 0) - coalesce(d.previous_cost_nanos, 0),
        i.billing_finalized_at, d.previous_billing_finalized_at, i.source
    from incoming i join decisions d on d.id = i.id
    where d.action in ('new', 'updated') and d.billing_changed;

delete from hot.pricing_lines
    where batch_id in (select id from decisions where action = 'updated');
delete from hot.batches
    where id in (select id from decisions where action = 'updated');

insert into hot.batches by name
    select i.* exclude (_seq),
        coalesce(d.previous_first_run_id, $run_id) as first_run_id,
        $run_id as run_id, $now as loaded_at,
        d.captured, d.captured_at, d.capture_reason
    from incoming i join decisions d on d.id = i.id
    where d.action in ('new', 'updated');

insert into hot.pricing_lines by name
    select l.* exclude (_seq), $run_id as run_id, $now as loaded_at
    from stage_lines l join decisions d on d.id = l.batch_id and d._seq = l._seq
    where d.action in ('new', 'updated');
"""

# Request rows come as a batch's whole set (a batch object's "requests", a saved list, an
# API fetch of every page): a set replaces that batch's rows; within a run the latest
# read of a (batch_id, request_id) wins.
REQUESTS_SQL = """
delete from hot.batch_requests where batch_id in (select batch_id from stage_request_sets);

insert into hot.batch_requests by name
    select * exclude (_seq, _rn), $run_id as run_id, $now as loaded_at
    from (
        select *, row_number() over (
            partition by batch_id, request_id order by _seq desc) as _rn
        from stage_requests
    ) where _rn = 1
"""

# A record quarantined again by a rerun is not a new reject: same file (however its path
# was spelled), line and text. Within one run the same reject counts once.
REJECTS_SQL = """
create or replace temp table run_rejects as
    select distinct on (coalesce(source_file, source), line, md5(raw_text))
        source, line, batch_id, reason, raw_text, md5(raw_text) as raw_md5,
        coalesce(source_file, source) as source_file
    from stage_rejects;

update rejected_batches r
    set last_run_id = $run_id, times_seen = r.times_seen + 1
    from run_rejects s
    where coalesce(r.source_file, r.source) is not distinct from s.source_file
      and r.line is not distinct from s.line and r.raw_md5 = s.raw_md5;

insert into rejected_batches by name
    select $run_id as run_id, $now as rejected_at, s.source, s.line, s.batch_id, s.reason,
        s.raw_text, s.raw_md5, $run_id as last_run_id, 1 as times_seen, s.source_file
    from run_rejects s
    where not exists (
        select 1 from rejected_batches r
        where coalesce(r.source_file, r.source) is not distinct from s.source_file
          and r.line is not distinct from s.line and r.raw_md5 = s.raw_md5
    )
"""


class LoadError(Exception):
    """The load failed; nothing was committed."""


def view_files() -> list[Path]:
    base = sql_dir()
    layers = ("macros", "staging", "intermediate", "marts")  # each layer reads only the ones before
    return [path for layer in layers for path in sorted((base / layer).glob("*.sql"))]


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create every view, unless the database already has this version's: the key
    (a hash of the tables' DDL and every view's SQL) is kept in pipeline_meta. Binding
    the views costs ~70 ms a run, paid only after an upgrade."""
    paths = view_files()
    texts = [path.read_text() for path in paths]
    key = hashlib.sha256("\0".join([TABLES_DDL, *texts]).encode()).hexdigest()
    row = con.execute(
        "select (select max(value) from pipeline_meta where key = 'views_key'),"
        " (select count(*) from duckdb_views() where not internal and view_name in $names)",
        {"names": [p.stem for p in paths if p.parent.name != "macros"]},
    ).fetchone()
    if row and row[0] == key and row[1] == sum(p.parent.name != "macros" for p in paths):
        return
    for text in texts:
        con.execute(text)
    # (a total kept by the last run was summed by the views it had)
    con.execute("delete from pipeline_meta where key in ('views_key', 'billed_total')")
    con.execute("insert into pipeline_meta values ('views_key', $1)", [key])


def new_database_template() -> Path | None:
    """An empty database with this version's tables and views, built once per version in
    the user's cache folder ($XDG_CACHE_HOME/billing or ~/.cache/billing) and reused for
    every new database; None where no cache folder can be written (then the views are
    created in the new database itself, as always)."""
    texts = [path.read_text() for path in view_files()]
    key = hashlib.sha256(
        "\0".join([TABLES_DDL, *texts, duckdb.__version__, STORAGE_COMPAT]).encode()
    ).hexdigest()[:24]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "billing"
    path = folder / f"empty-{key}.duckdb"
    if path.is_file() and not path.is_symlink():
        return path
    tmp = folder / f".empty-{key}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        con = connect(tmp)
        try:
            con.execute(TABLES_DDL)
            history.create_views(con, None)
            create_views(con)
            con.execute("checkpoint")
        finally:
            con.close()
        os.replace(tmp, path)
        for old in sorted(folder.glob("empty-*.duckdb"), key=lambda p: p.stat().st_mtime)[:-3]:
            old.unlink(missing_ok=True)  # earlier versions' templates: the newest 3 stay
    except (OSError, duckdb.Error) as exc:
        log.debug("no new-database template (%s): views are created in place", exc)
        return None
    finally:
        for leftover in (tmp, Path(f"{tmp}.wal")):
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
    return path


WRITER_ALIAS = "billing_work"
WRITER_ROW_GROUP_SIZE = 61_440


sql_string = history.sql_path  # a path as the inside of a SQL string literal


def connect(
    db_path: Path,
    *,
    read_only: bool = False,
    memory_limit: str = "1GB",
    sandbox: bool = False,
    writer: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file. New files are created owner-only (0600): they hold billing data.

    ``writer`` (the loader's working file) writes row groups of
    :data:`WRITER_ROW_GROUP_SIZE` rows: a night's insert then fills several row groups,
    which DuckDB compresses and writes on all threads, not one partial group written at
    commit. Half DuckDB's default (122,880): about a third less time writing 100k-200k
    batches, files within 5% of the size (``benchmarks/RESULTS.md``).

    ``sandbox`` (read-only use by people: ``billing query``/``sql``) turns off every file
    and network access but the database itself, and locks that setting.
    """
    # new files stay readable by DuckDB 1.4+ (an analyst's stock CLI may be older)
    config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": memory_limit}
    if not read_only:
        config["storage_compatibility_version"] = STORAGE_COMPAT
    old_umask = os.umask(0o077)
    try:
        if writer:
            # the row group size is an ATTACH option only: the file is attached to an
            # in-memory instance (spilling where DuckDB spills for a file: beside it)
            config["temp_directory"] = f"{db_path}.tmp"
            # rows need no order on disk (every reader orders what it shows): without it,
            # inserts from a large view stream instead of buffering to keep the order
            config["preserve_insertion_order"] = False
            con = duckdb.connect(":memory:", config=config)
            con.execute(
                f"attach '{sql_string(db_path)}' as {WRITER_ALIAS}"
                f" (row_group_size {WRITER_ROW_GROUP_SIZE})"
            )
            con.execute(f"use {WRITER_ALIAS}")
        else:
            con = duckdb.connect(str(db_path), read_only=read_only, config=config)
    finally:
        os.umask(old_umask)
    con.execute("set TimeZone = 'UTC'")
    if sandbox:
        # the database's own history files (its views read them) and nothing else
        allowed = {history.folder_of(Path(os.path.realpath(db_path))), *history.recorded(con)}
        con.execute("set allowed_directories = $1", [sorted(f"{p}{os.sep}" for p in allowed)])
        con.execute("set enable_external_access = false")
        con.execute("set lock_configuration = true")
    return con


@dataclass
class MergeStats:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    reread: int = 0  # a GET of a captured bill: same money, not a change
    stale: int = 0
    incoming: int = 0
    staged: int = 0
    lines_loaded: int = 0
    lines_written: int = 0
    cost_nanos_loaded: int = 0
    total_before: int = 0
    total_after: int = 0
    reconciliation_issues: int = 0
    corrections: int = 0  # FOCUS correction rows booked
    new_fields: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return self.new + self.updated + self.unchanged + self.reread

    @property
    def duplicates(self) -> int:
        return self.staged - self.incoming


class Loader:
    """One run's write transaction. Use as a context manager; call :meth:`commit` last."""

    def __init__(
        self,
        db_path: Path,
        run_id: str,
        *,
        wait_s: float = 0.0,
        memory_limit: str = "1GB",
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
        settings: FileConfig | None = None,
    ) -> None:
        self.db_path = db_path
        self.settings = settings
        self.run_id = run_id
        self.keep_snapshots = keep_snapshots
        self.store = Store(db_path)
        self.now = datetime.now(UTC)
        self._done = False
        self._drift: dict[str, tuple[str, str | None]] = {}
        self.rejected = 0
        check_db_path(db_path)
        self._lock = WriterLock(self.store, run_id, wait_s)
        self.work = self.store.work(run_id)
        self.history = history.folder_of(self.store.db)
        self.stage_dir = Path(f"{self.work}.stage")  # chunks staged by the workers
        self._stage_files: list[tuple[str, str]] = []
        self._held: Published | None = None
        try:
            killed: set[str] = set()
            for stale in self.store.stale_work():  # left by a killed run
                killed.add(self.store.run_of(stale))
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            if self.store.db.exists():
                # held read-only until published: no other process can open it read-write
                with timed("working copy"):
                    self._held = Published(self.store.db, self.work, time.monotonic() + wait_s)
            elif (template := new_database_template()) is not None:
                # a new database starts as a copy of an empty one with this version's
                # tables and views (binding the views is most of a small first run)
                fd = create_exclusive(self.work)
                with os.fdopen(fd, "wb") as out, template.open("rb") as src:
                    shutil.copyfileobj(src, out)
            self.stage_dir.mkdir(mode=0o700)
            self.con = connect(self.work, memory_limit=memory_limit, writer=True)
            self.con.execute("begin transaction")
            self.con.execute(TABLES_DDL)
            history.migrate(self.con)  # (a database from before the history: once)
            history.remove_runs(self.con, self.history, killed)  # (files they wrote, if any)
            history.create_views(self.con, self.history)
            self.con.execute(STAGE_DDL)
        except BaseException:
            self._discard()
            raise

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.rollback()

    # -- reads used before the load -------------------------------------------------
    def pending_ids(self) -> list[str]:
        """Refetched on every API run: ids loaded but not final, and ids an earlier run
        could not fetch that have not loaded since (never silently missing)."""
        rows = self.con.execute(
            "select id from batches where not is_final"
            " union select batch_id from fetch_errors"
            " where coalesce(kind, '') <> 'invalid_id' and batch_id is not null"
            " and batch_id not in (select id from batches)"
            " order by 1"
        ).fetchall()
        return [r[0] for r in rows]

    def _total_before(self) -> int:
        """The billed total the last run left (kept with its run id in pipeline_meta),
        else (a database from an earlier version, new views, a run that wrote no total)
        every billed nano, summed once."""
        row = self.con.execute(
            "select (select max(value) from pipeline_meta where key = 'billed_total'),"
            " (select arg_max(run_id, started_at) from load_runs)"
        ).fetchone()
        if row and row[0] and row[1]:
            run_id, _, nanos = str(row[0]).partition(" ")
            if run_id == row[1] and nanos.lstrip("-").isdigit():
                return int(nanos)
        return self.total_cost_nanos()

    def _night_billed(self) -> int:
        """The billed nanos of the batches this night writes (new, updated) as the head
        holds them now: before its writes (their rows taken back), and after."""
        rows = (
            "(select * from hot.batches where id in"
            " (select id from decisions where action in ('new', 'updated'))) as batches"
        )
        body = view_over("staging", "stg_batches", {"batches": rows})
        return _scalar(self.con, f"select coalesce(sum(billed_nanos), 0) from ({body})")  # noqa: S608

    def total_cost_nanos(self) -> int:
        """Every billed nano in the database (money priced but not billed is not spend)."""
        row = self.con.execute("select coalesce(sum(billed_nanos), 0) from stg_batches").fetchone()
        return int(row[0]) if row else 0

    # -- staging ---------------------------------------------------------------------
    def stage_files(self, batches: str, lines: str) -> None:
        """A chunk a worker wrote to Parquet in :attr:`stage_dir` (read at the merge)."""
        self._stage_files.append((batches, lines))

    def _read_stage_files(self) -> None:
        if not self._stage_files:
            return
        started = time.monotonic()
        for table, files in (
            ("stage_batches", [b for b, _ in self._stage_files]),
            ("stage_lines", [ln for _, ln in self._stage_files]),
        ):
            # read where the workers wrote them (no copy held in memory); the empty
            # tables stand in when a run staged no chunk
            listed = ", ".join(f"'{sql_string(f)}'" for f in files)  # beside the --db file
            self.con.execute(f"drop table {table}")
            self.con.execute(
                f"create temp view {table} as select * from read_parquet([{listed}])"  # noqa: S608 - quoted
            )
        log.debug("%.2fs read %d staged chunks", time.monotonic() - started, len(self._stage_files))
        self._stage_files.clear()

    def stage_requests(self, requests: pl.DataFrame | None, sets: Sequence[str]) -> None:
        """Append request rows, and the batches whose whole set of rows they are."""
        if sets:
            self.con.executemany("insert into stage_request_sets values ($1)", [(b,) for b in sets])
        if requests is not None and requests.height:
            r = requests.drop("_rec", strict=False)  # noqa: F841 - referenced by name in SQL
            self.con.execute("insert into stage_requests by name select * from r")

    def record_request_fetches(self, rows: Sequence[tuple[str, int | None, int]]) -> None:
        """(batch_id, cost_nanos at fetch time, rows) for request sets fetched from the API."""
        if rows:
            self.con.executemany(
                "delete from request_fetches where batch_id = $1", [(r[0],) for r in rows]
            )
            self.con.executemany(
                "insert into request_fetches values ($1, $2, $3, $4, $5)",
                [(*r, self.run_id, self.now) for r in rows],
            )

    def request_fetch_needed(self, archive_dir: Path) -> dict[str, int | None]:
        """Final batches loaded from this database's API archive whose request rows were
        never fetched, or were fetched for another cost (restated): id -> current cost."""
        rows = self.con.execute(
            "select b.id, b.cost_nanos from batches b left join request_fetches f"
            " on f.batch_id = b.id where b.is_final and starts_with(b.source, $1)"
            " and (f.batch_id is null or f.cost_nanos is distinct from b.cost_nanos)",
            [f"{archive_dir}{os.sep}"],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def request_fetches_of(self, ids: Sequence[str]) -> dict[str, int | None]:
        """The cost at which each of ``ids`` last had its request rows fetched."""
        if not ids:
            return {}
        rows = self.con.execute(
            "select batch_id, cost_nanos from request_fetches"
            " where batch_id in (select unnest($1::varchar[]))",
            [list(ids)],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def reject(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Quarantine (source, line, batch_id, reason, raw_text, source_file) rows."""
        if not rows:
            return
        # one insert from a frame: executemany costs ~60 us a row (a night that rejects
        # everything would spend a minute a million rows here)
        frame = pl.DataFrame(rows, schema=_REJECT_SCHEMA, orient="row")  # noqa: F841 - in SQL
        self.con.execute("insert into stage_rejects by name select * from frame")
        self.rejected += len(rows)

    def fetch_errors(self, rows: Sequence[tuple[str, str, int | None, str, str]]) -> None:
        """Record (batch_id, url, http_status, reason, kind) of ids the API could not give."""
        if rows:
            self.con.executemany(
                "insert into fetch_errors (run_id, batch_id, url, http_status, reason, kind,"
                " occurred_at) values ($1, $2, $3, $4, $5, $6, $7)",
                [(self.run_id, *r, self.now) for r in rows],
            )

    def note_drift(self, fields: dict[str, tuple[str, str | None]]) -> None:
        for k, v in fields.items():
            self._drift.setdefault(k, v)

    # -- merge + commit --------------------------------------------------------------
    def merge(self) -> MergeStats:
        con, params = self.con, {"run_id": self.run_id, "now": self.now}
        with timed("read stage files"):
            self._read_stage_files()
        with timed("views"):
            create_views(con)  # this version's views (the billed total reads stg_batches)
        with timed("total before"):
            stats = MergeStats(total_before=self._total_before())
        run_script(con, CAPTURES_SQL, params)
        unique = _scalar(
            con, "select count(*) = count(distinct id) from stage_batches"
        )  # an empty stage counts as unique
        run_script(con, UNIQUE_SQL if unique else DEDUPE_SQL, params)
        with timed("stored rows of the night's ids"):
            history.stored_batches(con, self.history, "incoming")
        run_script(con, MERGE_SQL, params)
        with timed("take back from the history"):
            history.take_back(
                con,
                self.history,
                "select id from decisions where action = 'updated'"
                " union all (select batch_id from stage_request_sets"
                " except select id from decisions where action = 'new')",
                self.run_id,
                self.now,
            )
        with timed("night's bills before"):
            night_before = self._night_billed()
        run_script(con, WRITE_SQL, params)
        run_script(con, REQUESTS_SQL, params)
        run_script(con, REJECTS_SQL, params)
        for action, n, cost in con.execute(
            "select d.action, count(*), coalesce(sum(i.cost_nanos), 0)"
            " from decisions d join incoming i on i.id = d.id group by all"
        ).fetchall():
            setattr(stats, action, int(n))
            if action != "stale":
                stats.cost_nanos_loaded += int(cost)
        with timed("merge counts"):
            self._count(stats)
        with timed("total after"):  # the total before, moved by the night's own batches
            stats.total_after = stats.total_before + self._night_billed() - night_before
        con.execute("delete from pipeline_meta where key = 'billed_total'")
        con.execute(
            "insert into pipeline_meta values ('billed_total', $1)",
            [f"{self.run_id} {stats.total_after}"],
        )
        stats.new_fields = self._record_drift()
        self._store_account()
        self._store_settings()
        first = not _scalar(con, "select count(*) from (select 1 from charge_ledger limit 1)")
        if not first and self._ledger_outdated():
            # books written by a version with another charge-date rule (the time of a read)
            # or that counted unbilled money: booked again, once, by this version's rules
            log.warning(
                "re-dating the FOCUS books (charge_ledger) once by this version's charge-date"
                " rule: billed money only, dated by capture or end time, not read time"
            )
            if history.has_history(con):
                raise LoadError(
                    "the FOCUS books need booking again by this version's rules, but part"
                    " of them is in the history files: load with the version that wrote them"
                )
            con.execute("delete from hot.charge_ledger")
            first = True
        con.execute("delete from pipeline_meta where key = 'ledger_version'")
        con.execute("insert into pipeline_meta values ('ledger_version', $1)", [LEDGER_VERSION])
        if first:  # a database without books yet: book everything as it stands
            run_script(con, LEDGER_NEW_SQL.replace("{where}", ""), params)
        else:  # only what the night brought (nothing new or changed: nothing to book)
            if stats.new:
                new_ids = "select id as batch_id from decisions where action = 'new'"
                run_script(con, ledger_new_sql(new_ids), params)
            if stats.updated:
                scope = "select id as batch_id from decisions where action = 'updated'"
                run_script(con, ledger_sql(scope), params)
                stats.corrections = _scalar(
                    con, "select count(*) from ledger_delta where charge_class = 'Correction'"
                )
        with timed("reconciliation"):
            if first:  # a new database, or books written again: every batch
                con.execute(RECONCILE_SQL, {"run_id": self.run_id})
            elif (
                stats.new
                or stats.updated
                or _scalar(con, "select count(*) from stage_request_sets")
            ):  # the batches this run wrote (`billing reconcile` checks them all)
                night = (
                    "select id as batch_id from decisions where action in ('new', 'updated')"
                    " union select batch_id from stage_request_sets"
                )
                run_script(con, scoped_reconciliation(night), params)
        stats.reconciliation_issues = _scalar(
            con, "select count(*) from reconciliation_results where run_id = $1", [self.run_id]
        )
        return stats

    def _count(self, stats: MergeStats) -> None:
        con = self.con
        stats.incoming = _scalar(con, "select count(*) from incoming")
        stats.staged = _scalar(con, "select count(*) from stage_batches")
        stats.lines_written = _scalar(  # the run's own rows: older row groups are skipped
            con, "select count(*) from hot.pricing_lines where loaded_at = $1", [self.now]
        )
        stats.lines_loaded = _scalar(
            con,
            "select count(*) from stage_lines l join decisions d"
            " on d.id = l.batch_id and d._seq = l._seq where d.action <> 'stale'",
        )

    def _ledger_outdated(self) -> bool:
        row = self.con.execute(
            "select max(value) from pipeline_meta where key = 'ledger_version'"
        ).fetchone()
        return (row[0] if row else None) != LEDGER_VERSION

    def _store_settings(self) -> None:
        """The config file's budgets, price list and attribution keys (the parts it sets;
        the others stay as an earlier run stored them)."""
        cfg = self.settings
        if cfg is None:
            return
        store_settings(self.con, cfg, temp=False)

    def _store_account(self) -> None:
        """The FOCUS account names: the config file's when one was given, else what an
        earlier run stored, else the defaults."""
        stored = dict(
            self.con.execute(
                "select key, value from pipeline_meta where key like 'account.%'"
            ).fetchall()
        )
        given = dict(self.settings.account) if self.settings is not None else {}
        rows = {f"account.{k}": v for k, v in DEFAULT_ACCOUNT.items()}
        rows.update(stored)
        rows.update({f"account.{k}": v for k, v in given.items()})
        self.con.execute("delete from pipeline_meta where key like 'account.%'")
        self.con.executemany("insert into pipeline_meta values ($1, $2)", sorted(rows.items()))

    def _record_drift(self) -> list[str]:
        if not self._drift:
            return []
        known = {r[0] for r in self.con.execute("select field from schema_drift").fetchall()}
        new = sorted(set(self._drift) - known)
        if not new:
            return []
        self.con.executemany(
            "insert into schema_drift values ($1, $2, $3, $4, $5)",
            [(f, self._drift[f][0], self.run_id, self.now, self._drift[f][1]) for f in new],
        )
        return new

    def record_run(self, row: dict[str, Any]) -> None:
        cols = list(row)
        placeholders = ", ".join(f"${i + 1}" for i in range(len(cols)))
        self.con.execute(
            f"insert into load_runs ({', '.join(cols)}) values ({placeholders})",  # noqa: S608 - fixed column names
            list(row.values()),
        )

    def commit(self) -> None:
        """Commit, checkpoint, and publish the working file as the new snapshot."""
        self.con.execute("delete from pipeline_meta where key = 'schema_version'")
        self.con.execute(
            "insert into pipeline_meta values ('schema_version', $1)", [str(SCHEMA_VERSION)]
        )
        with timed("commit"):
            self.con.execute("commit")
        with timed("settle history"):
            keep, at_least = history.limits()
            settled = history.settle(
                self.con, self.history, self.run_id, self.now, keep=keep, at_least=at_least
            )
            if settled.files:
                history.create_views(self.con, self.history)
        with timed("checkpoint"):
            self.con.execute("checkpoint")
        if settled.files:
            with timed("compact"):
                self._compact()
        self.con.close()
        self._done = True
        try:
            with timed("publish"):
                publish(self.store, self.work, self.run_id, self.keep_snapshots, self._held)
        finally:
            self._discard()

    def _compact(self) -> None:
        """After rows moved into the history the file keeps their space (DuckDB marks
        deleted rows and never shrinks a file), so the working file is rewritten whole
        into a new one (tables, views, macros; the same rows): the next nights copy only
        the head. A move is rare (every few weeks) and the head small, so this is cheap."""
        compact = Path(f"{self.work}.compact")
        fd = create_exclusive(compact)
        os.close(fd)
        compact.unlink()  # (the name is ours: DuckDB makes the file)
        self.con.execute(
            f"attach '{sql_string(compact)}' as billing_compact"
            f" (row_group_size {WRITER_ROW_GROUP_SIZE})"
        )
        self.con.execute(f"copy from database {WRITER_ALIAS} to billing_compact")
        self.con.execute("detach billing_compact")
        self.con.execute("use memory")
        self.con.execute(f"detach {WRITER_ALIAS}")
        before = self.work.stat().st_size
        os.chmod(compact, 0o600)  # (as every new file of ours; a published mode is kept)
        os.rename(compact, self.work)  # (the working file: nobody else has it open)
        log.info(
            "compacted the database file: %.1f MB -> %.1f MB",
            before / 2**20,
            self.work.stat().st_size / 2**20,
        )

    def rollback(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self.con.execute("rollback")
        except duckdb.Error:
            pass
        self.con.close()
        self._discard()

    def _discard(self) -> None:
        """Remove the working file (if it was not published) and release the lock."""
        for suffix in ("", ".wal"):
            Path(f"{self.work}{suffix}").unlink(missing_ok=True)
        # A worker may still be writing a chunk (Ctrl-C does not wait for it): moved aside
        # first, the folder can gain no file after it is listed for removal.
        gone = self.stage_dir.with_name(f"{self.stage_dir.name}.gone")
        with contextlib.suppress(OSError):  # (already gone: nothing to move)
            self.stage_dir.rename(gone)
        for folder in (gone, self.stage_dir):
            shutil.rmtree(folder, ignore_errors=True)
        if self._held is not None:
            self._held.close()
        self._lock.release()


def store_settings(con: duckdb.DuckDBPyConnection, cfg: FileConfig, *, temp: bool) -> None:
    """Write the parts of ``cfg`` it sets into the settings tables. ``temp`` (read
    commands given --config) shadows the stored tables for this connection only."""
    parts: dict[str, list[tuple[object, ...]] | None] = {
        "budgets": None if cfg.budgets is None else [b.row() for b in cfg.budgets],
        "price_list": None if cfg.prices is None else [p.row() for p in cfg.prices],
        "attribution_keys": None if cfg.tags is None else [(t,) for t in cfg.tags],
    }
    for table, rows in parts.items():
        if rows is None:
            continue
        if temp:
            con.execute(
                f"create or replace temp table {table} as "  # noqa: S608 - fixed names
                f"select * from main.{table} limit 0"
            )
        else:
            con.execute(f"delete from {table}")  # noqa: S608 - fixed names
        if rows:
            marks = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
            con.executemany(f"insert into {table} values ({marks})", rows)  # noqa: S608


@contextmanager
def timed(label: str) -> Iterator[None]:
    """Debug-log how long a step took (`billing run -v`)."""
    started = time.monotonic()
    try:
        yield
    finally:
        log.debug("%.2fs %s", time.monotonic() - started, label)


def run_script(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> None:
    """Run ';'-separated statements, each with just the named parameters it uses (each
    timed in the debug log: `billing run -v` shows where a slow merge spends its time)."""
    for statement in (part.strip() for part in sql.split(";")):
        if statement:
            used = {k: v for k, v in params.items() if f"${k}" in statement}
            started = time.monotonic()
            con.execute(statement, used or None)
            log.debug("%.2fs %s", time.monotonic() - started, " ".join(statement.split())[:90])


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


@contextmanager
def reader(db_path: Path, *, sandbox: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the published snapshot (never blocks, never waits).

    ``sandbox`` (people's queries: ``billing query``/``sql``/``runs``) allows no file or
    network access beyond the database, and locks that setting.
    """
    if not db_path.exists():
        raise FileNotFoundError(f"database not found: {db_path} (run `billing run` first)")
    if not db_path.is_file():
        raise FileNotFoundError(f"{db_path} is not a database file")
    try:
        con = connect(db_path, read_only=True, sandbox=sandbox)
    except duckdb.Error as exc:
        raise NotABillingDatabase(
            f"cannot open {db_path}: {str(exc).splitlines()[0]}{restore_hint(db_path)}"
        ) from None
    found = con.execute(
        "select count(*) from duckdb_tables() where table_name = 'pipeline_meta'"
    ).fetchone()
    if not found or not found[0]:
        con.close()
        raise NotABillingDatabase(
            f"{db_path} is not a billing database (no pipeline_meta table): "
            "pass the file `billing run` writes"
        )
    try:
        yield con
    finally:
        con.close()
