"""The floor: DuckDB's own read_json + unnest into the same two tables, no validation.

usage: python benchmarks/floor_duckdb.py INPUT.jsonl DB
"""

from __future__ import annotations

import sys

import duckdb


def main(src: str, db: str) -> None:
    con = duckdb.connect(db)
    con.execute("begin")
    con.execute(
        """
        create table raw as select * from read_json($1, format = 'newline_delimited',
            maximum_object_size = 16777216, sample_size = -1)
        """,
        [src],
    )
    con.execute(
        """
        create table batches as
        select id, status, provider, session_id, endpoint,
            to_timestamp(created_at) as created_at, to_timestamp(completed_at) as completed_at,
            request_counts.total as request_counts_total,
            billing.billed as billed, billing.charged as charged, billing.reason as billing_reason,
            billing.cost_nanos::bigint as cost_nanos,
            billing.finalized_at::timestamptz as billing_finalized_at,
            metadata::json as metadata, webhook.url as webhook_url
        from raw
        """
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
