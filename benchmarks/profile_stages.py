"""Where the time goes: each stage of one load, timed separately, in one process.

usage: python -m benchmarks.profile_stages INPUT.jsonl [CHUNK_SIZE]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from pipeline.load import Loader
from pipeline.runner import REC, new_run_id
from pipeline.transform import build_batches, build_lines, normalize_batch
from pipeline.validate import split_valid


def main(src: Path, chunk_size: int = 10_000) -> dict[str, float]:
    t: dict[str, float] = defaultdict(float)

    def tick(stage: str, start: float) -> float:
        now = time.perf_counter()
        t[stage] += now - start
        return now

    with tempfile.TemporaryDirectory() as tmp:
        loader = Loader(Path(tmp) / "p.duckdb", new_run_id())
        total = time.perf_counter()
        with src.open("rb") as fh:
            lines = fh.readlines()
        for at in range(0, len(lines), chunk_size):
            s = time.perf_counter()
            objs = [orjson.loads(line) for line in lines[at : at + chunk_size]]
            s = tick("1 parse JSON (orjson)", s)
            norms = [normalize_batch(o) for o in objs]
            s = tick("2 normalize (Python, per record)", s)
            meta: dict[str, list[Any]] = {REC: list(range(len(norms))), "_seq": list(range(at, at + len(norms))),
                                          "source": [str(src)] * len(norms), "source_line": list(range(len(norms)))}
            rows = [ln for n in norms for ln in n.lines]
            recs = [i for i, n in enumerate(norms) for _ in n.lines]
            batches = build_batches([n.batch for n in norms], meta)
            lines_df = build_lines(rows, {REC: recs, "_seq": [at + i for i in recs]})
            s = tick("3 build typed frames (polars)", s)
            batches, lines_df, _ = split_valid(batches, lines_df)
            s = tick("4 validate (pandera)", s)
            loader.stage(batches, lines_df)
            s = tick("5 stage into DuckDB (Arrow)", s)
        s = time.perf_counter()
        loader.merge()
        s = tick("6 merge, history, views, reconciliation", s)
        loader.commit()
        tick("7 commit + checkpoint", s)
        t["total"] = time.perf_counter() - total
    return dict(t)


if __name__ == "__main__":
    res = main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
    for stage, seconds in sorted(res.items()):
        print(f"| {stage} | {seconds:.2f} | {100 * seconds / res['total']:.0f}% |")
