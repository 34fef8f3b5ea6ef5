"""Export the fact tables as Hive-partitioned Parquet (``month=YYYY-MM/provider_key=KEY``).

The export is written into a temporary sibling folder and swapped into place with
renames, so a reader never sees half an export. Money stays exact: ``BIGINT`` nanos and
``DECIMAL(38, 9)`` dollars. A ``manifest.json`` lists rows and total nanos per dataset
(as strings, so no JSON reader turns them into floats).

An export writes only what it owns: ``--out`` must be a new or empty folder, or an
earlier export of its own (its ``manifest.json`` says so and it holds nothing else).
Anything else is refused before a byte is written, and nothing else is ever deleted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipeline import __version__
from pipeline.load import sql_string

PARTITIONS = ["month", "provider_key"]
# The provider folder is a safe, bounded key (50,000 providers made 50,000 folders and a
# 300-character name failed the export): the name itself when it is short and plain,
# else 'h' + 16 hex of its md5; past the MAX_PROVIDER_FOLDERS providers with most
# batches, '_other'. The files keep the provider's own name in `provider`.
MAX_PROVIDER_FOLDERS = 64
PROVIDER_KEY_SQL = """
with data as ({sql}),

ranked as (
    select
        coalesce(provider, 'unknown') as provider,
        row_number() over (order by count(*) desc, coalesce(provider, 'unknown')) as rank
    from batches
    group by 1
)

select
    data.*,
    case
        when ranked.rank is null or ranked.rank > {cap} then '_other'
        when regexp_full_match(data.provider, '[A-Za-z0-9][A-Za-z0-9._-]{{0,62}}')
            then data.provider
        else 'h' || left(md5(data.provider), 16)
    end as provider_key
from data
left join ranked on ranked.provider = data.provider
"""


def _keyed(sql: str) -> str:
    return PROVIDER_KEY_SQL.format(sql=sql, cap=MAX_PROVIDER_FOLDERS)


# dataset -> (query, nanos column). Partition columns: the UTC month of the charge date
# and the provider ('unknown' where the batch names none).
DATASETS: dict[str, tuple[str, str]] = {
    "batches": (
        """
        select b.* exclude (content_hash, provider),
            strftime(s.charged_at at time zone 'UTC', '%Y-%m') as month,
            coalesce(b.provider, 'unknown') as provider
        from batches as b
        inner join stg_batches as s on s.batch_id = b.id
        """,
        "cost_nanos",
    ),
    "pricing_lines": (
        """
        select l.*,
            strftime(s.charged_at at time zone 'UTC', '%Y-%m') as month,
            coalesce(s.provider, 'unknown') as provider
        from pricing_lines as l
        inner join stg_batches as s on s.batch_id = l.batch_id
        """,
        "line_nanos",
    ),
    "focus_charges": (
        """
        select *,
            strftime(BillingPeriodStart at time zone 'UTC', '%Y-%m') as month,
            PublisherName as provider
        from focus_charges
        """,
        "x_CostNanos",
    ),
}


GENERATOR = "llm-gateway-billing export"


class ExportRefused(Exception):
    """``--out`` holds something the export does not own."""


def _check_out(out: Path) -> None:
    """Refuse any ``out`` but a new or empty folder or an earlier export of our own."""
    if not out.exists():
        return
    if not out.is_dir() or out.is_symlink():
        raise ExportRefused(f"--out {out} is not a folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
        shown = ", ".join(entries[:5]) + more
        raise ExportRefused(
            f"--out {out} is not empty and is not an earlier billing export ({shown}); "
            "choose a new or empty folder: an export replaces its folder whole"
        )
    foreign = [e for e in entries if e not in (*DATASETS, "manifest.json")]
    listed = manifest.get("files")
    if not foreign and isinstance(listed, list):  # every file this export wrote, by name
        foreign = sorted(set(_files(out)) - set(listed) - {"manifest.json"})
    if foreign:
        raise ExportRefused(
            f"--out {out} is an earlier export but also holds {', '.join(foreign[:5])}, "
            "which the export did not write; move it away first"
        )


@dataclass
class ExportResult:
    out: Path
    rows: dict[str, int]
    nanos: dict[str, int]


def _swap_in(out: Path, write: Callable[[Path], dict[str, object]]) -> None:
    """Build the export in a temporary sibling folder, then swap it in with renames."""
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    token = secrets.token_hex(4)
    tmp = out.parent / f".{out.name}.tmp-{token}"
    old = out.parent / f".{out.name}.old-{token}"
    try:
        tmp.mkdir()
        manifest = {
            "generator": GENERATOR,
            "exported_at": datetime.now(UTC).isoformat(),
            "pipeline_version": __version__,
            **write(tmp),
        }
        manifest["files"] = sorted(_files(tmp))  # a re-export deletes only these
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _check_out(out)  # again, just before the swap
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        if old.exists():
            shutil.rmtree(old)  # an earlier export of ours, checked above
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _files(folder: Path) -> list[str]:
    """Every file and link under ``folder`` (links not followed), relative, '/'-joined."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        here = Path(root).relative_to(folder)
        found += [(here / name).as_posix() for name in files]
        found += [(here / d).as_posix() for d in dirs if (Path(root) / d).is_symlink()]
    return found


def _remove_leftovers(out: Path) -> None:
    """The hidden copies of an export killed before it finished (``.NAME.tmp-XXXXXXXX``,
    ``.NAME.old-XXXXXXXX``, exact names), never a link or anything else."""
    mine = re.compile(re.escape(f".{out.name}.") + r"(tmp|old)-[0-9a-f]{8}")
    for p in out.parent.glob(f".{out.name}.*"):
        if mine.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _count(con: duckdb.DuckDBPyConnection, sql: str, money: str) -> tuple[int, int]:
    count_sql = f"select count(*), coalesce(sum({money}), 0) from ({sql})"  # noqa: S608
    count, total = con.execute(count_sql).fetchall()[0]
    return int(count), int(total)


def export_parquet(con: duckdb.DuckDBPyConnection, out: Path) -> ExportResult:
    """Write every dataset under ``out`` atomically (temp folder + rename)."""
    out = out.absolute()
    rows: dict[str, int] = {}
    nanos: dict[str, int] = {}

    def write(tmp: Path) -> dict[str, object]:
        for name, (sql, money) in DATASETS.items():
            rows[name], nanos[name] = _count(con, sql, money)
            if rows[name]:
                con.sql(_keyed(sql)).write_parquet(str(tmp / name), partition_by=PARTITIONS)
            else:
                (tmp / name).mkdir()
        return {
            "partitioning": "hive: " + "/".join(f"{p}=..." for p in PARTITIONS),
            "datasets": {
                name: {"rows": rows[name], "total_nanos": str(nanos[name])} for name in DATASETS
            },
        }

    _swap_in(out, write)
    return ExportResult(out, rows, nanos)


FOCUS_VERSION = "1.2"
FOCUS_DATASET = "focus_charges"
# one folder per FOCUS billing period; the files hold exactly the focus_charges columns
FOCUS_SQL = """
select *, strftime(BillingPeriodStart at time zone 'UTC', '%Y-%m') as billing_period
from focus_charges
"""


def _csv_safe(con: duckdb.DuckDBPyConnection, sql: str) -> str:
    """``sql`` with every text cell a spreadsheet would run as a formula (it starts with
    =, +, -, @, tab or CR: OWASP's CSV-injection guidance) prefixed with a single quote;
    numbers, dates and decimals are written as they are."""
    columns = con.execute(f"describe {sql}").fetchall()
    select = ", ".join(
        CSV_SAFE_CELL.format(col=_ident(name)) if str(kind).upper() == "VARCHAR" else _ident(name)
        for name, kind, *_ in columns
    )
    return f"select {select} from ({sql})"  # noqa: S608 (our own SQL and column names)


CSV_SAFE_CELL = (
    "case when regexp_matches({col}, '^[=+@\\t\\r-]') then chr(39) || {col} else {col} end as {col}"
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def export_focus(
    con: duckdb.DuckDBPyConnection, out: Path, file_type: str = "parquet"
) -> ExportResult:
    """Write the FOCUS 1.2 cost and usage dataset (``focus_charges``) for FinOps tools:
    ``focus_charges/billing_period=YYYY-MM/*.parquet`` (or ``.csv``), the FOCUS version in
    the Parquet key-value metadata and in ``manifest.json``."""
    if file_type not in ("parquet", "csv"):
        raise ValueError(f"unknown FOCUS file type {file_type!r}")
    out = out.absolute()
    rows, nanos = _count(con, FOCUS_SQL, "x_CostNanos")

    def write(tmp: Path) -> dict[str, object]:
        target = tmp / FOCUS_DATASET
        if not rows:
            target.mkdir()
        elif file_type == "parquet":
            con.execute(
                f"copy ({FOCUS_SQL}) to '{sql_string(target)}' (format parquet, "
                "partition_by (billing_period), kv_metadata {focus_version: '"
                + FOCUS_VERSION
                + "', focus_dataset: 'CostAndUsage', generator: '"
                + GENERATOR
                + "'})"
            )
        else:
            con.execute(
                f"copy ({_csv_safe(con, FOCUS_SQL)}) to '{sql_string(target)}' "
                "(format csv, header, partition_by (billing_period))"
            )
        return {
            "focus_version": FOCUS_VERSION,
            "focus_dataset": "CostAndUsage",
            "file_type": file_type,
            "partitioning": "hive: billing_period=YYYY-MM",
            "datasets": {FOCUS_DATASET: {"rows": rows, "total_nanos": str(nanos)}},
        }

    _swap_in(out, write)
    return ExportResult(out, {FOCUS_DATASET: rows}, {FOCUS_DATASET: nanos})
