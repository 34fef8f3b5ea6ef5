"""Where the time goes: each stage of one load, timed separately, in one process.

usage: python -m benchmarks.profile_stages INPUT.jsonl [CHUNK_SIZE]

The stages are the ones a worker runs on each chunk (``pipeline.work.process_chunk``)
and the ones the main process runs (stage, merge, commit), with GC paused as in a worker.
The opt-in column-wise fast path (``BILLING_FAST_PATH=1``) is timed on the same chunks
for comparison with steps 2-4, outside the total.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

from pipeline import fastpath
from pipeline.extract import read_chunks
from pipeline.extract.files import LineSlice
from pipeline.load import Loader
from pipeline.runner import new_run_id
from pipeline.transform import (
    batch_frame,
    build_batches,
    build_lines,
    line_frame,
    normalize_batch,
)
from pipeline.validate import split_valid
from pipeline.work import chunk_meta, write_stage_files


def main(src: Path, chunk_size: int = 10_000) -> dict[str, float]:
    t: dict[str, float] = defaultdict(float)

    def tick(stage: str, start: float) -> float:
        now = time.perf_counter()
        t[stage] += now - start
        return now

    with tempfile.TemporaryDirectory() as tmp:
        loader = Loader(Path(tmp) / "p.duckdb", new_run_id())
        total = time.perf_counter()
        seq = 0
        for chunk in read_chunks([src], chunk_size):
            assert isinstance(chunk, LineSlice)
            gc.disable()
            s = time.perf_counter()
            recs = chunk.records()
            s = tick("1 read and split lines", s)
            objs = [orjson.loads(r.text) for r in recs]
            s = tick("2 parse JSON (orjson)", s)
            norms = [normalize_batch(o) for o in objs]
            s = tick("3 normalize_batch (Python, per record)", s)
            n = len(norms)
            meta = chunk_meta(recs, seq)
            seq += chunk.lines
            batches = build_batches(batch_frame([x.batch for x in norms], range(n)), meta)
            lines = build_lines(
                line_frame(
                    [ln for x in norms for ln in x.lines],
                    [i for i, x in enumerate(norms) for _ in x.lines],
                ),
                meta,
            )
            s = tick("4 typed frames + content hash (polars)", s)
            batches, lines, _ = split_valid(batches, lines)
            s = tick("5 validate (pandera)", s)
            fastpath.flatten(list(range(len(recs))), [r.text for r in recs])
            s = tick("(opt-in fast path: steps 2-4 column-wise, not in total)", s)
            gc.enable()
            loader.stage_files(
                *write_stage_files(batches, lines, str(loader.stage_dir), seq - chunk.lines)
            )
            s = tick("6 write the chunk to Parquet (read in place at the merge)", s)
        s = time.perf_counter()
        loader.merge()
        s = tick("7 merge, history, views, reconciliation", s)
        loader.commit()
        tick("8 commit + checkpoint", s)
        fast = "(opt-in fast path: steps 2-4 column-wise, not in total)"
        t["total"] = time.perf_counter() - total - t[fast]
    return dict(t)


if __name__ == "__main__":
    res = main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
    for stage, seconds in sorted(res.items()):
        print(f"| {stage} | {seconds:.2f} | {100 * seconds / res['total']:.0f}% |")
