"""The floor: DuckDB's own read_json (default options) + unnest into the same two tables,
no validation, no redaction, no audit.

Timestamps come as Unix seconds or ISO-8601 strings (as the gateway sends them), so the
floor reads both: an ISO string casts to TIMESTAMPTZ, a number goes through to_timestamp.

usage: python benchmarks/floor_duckdb.py INPUT.jsonl DB
"""

from __future__ import annotations

import sys

import duckdb


def ts(column: str) -> str:
    """A Unix-seconds-or-ISO field as TIMESTAMPTZ (whatever type read_json inferred)."""
    text = f"trim({column}::varchar, '\"')"
    return (
        f"coalesce(try_cast({text} as timestamptz),"
        f" to_timestamp(try_cast({text} as double))) as {column.rsplit('.', maxsplit=1)[-1]}"
    )


def main(src: str, db: str) -> None:
    con = duckdb.connect(db)
    con.execute("begin")
    con.execute("create table raw as select * from read_json($1)", [src])
    con.execute(
        f"""
        create table batches as
        select id, status, provider, session_id, endpoint,
            {ts("created_at")}, {ts("completed_at")},
            request_counts.total as request_counts_total,
            billing.billed as billed, billing.charged as charged, billing.reason as billing_reason,
            billing.cost_nanos::bigint as cost_nanos,
            {ts("billing.finalized_at")},
            metadata::json as metadata, webhook.url as webhook_url
        from raw
        """  # noqa: S608 - fixed column names
    )
    con.execute(
        """
        create table pricing_lines as
        select id as batch_id, generate_subscripts(pricing_lines, 1) - 1 as line_index,
            unnest(pricing_lines, recursive := true)
        from raw
        """
    )
    con.execute("drop table raw")
    con.execute("commit")
    con.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
