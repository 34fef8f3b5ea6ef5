"""The peer: dlt loading the same JSONL into DuckDB with its default nested normalization
(batches, and child tables such as batches__pricing_lines).

usage: python benchmarks/peer_dlt.py INPUT.jsonl DB WORKDIR
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import orjson


def main(src: str, db: str, workdir: str) -> None:
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    os.environ["DLT_DATA_DIR"] = workdir
    os.environ["DLT_PROJECT_DIR"] = workdir
    import dlt

    def rows() -> Iterator[dict[str, Any]]:
        with open(src, "rb") as fh:
            for line in fh:
                if line.strip():
                    yield orjson.loads(line)

    pipeline = dlt.pipeline(
        pipeline_name="peer",
        destination=dlt.destinations.duckdb(db),
        dataset_name="peer",
        pipelines_dir=os.path.join(workdir, "pipelines"),
    )
    pipeline.run(rows(), table_name="batches", write_disposition="replace")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
