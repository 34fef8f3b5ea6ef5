"""Where the time goes: each stage of one load, timed separately, in one process.

usage: python -m benchmarks.profile_stages INPUT.jsonl [CHUNK_SIZE]

The stages are the ones a worker runs on each chunk (``pipeline.work.process_chunk``)
and the ones the main process runs (stage, merge, commit), with GC paused as in a worker.
Steps 2-3 are the default route: the column-wise fast path, then the per-record
normaliser for the records it leaves. What ``BILLING_FAST_PATH=0`` does instead (every
record parsed and normalised one by one) is timed on the same chunks, outside the total.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson
import polars as pl

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

# BILLING_FAST_PATH=0: every record through steps 2-3 per record (timed, not in the total)
_PER_RECORD_PARSE = "(per-record only: parse every record with orjson, not in total)"
_PER_RECORD_NORMALIZE = "(per-record only: normalize_batch every record, not in total)"


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
            fast = fastpath.flatten(list(range(len(recs))), [r.text for r in recs])
            s = tick("2 fast path: decode (msgspec) and read column-wise", s)
            rest = [i for i in range(len(recs)) if i not in fast.taken]
            norms = [normalize_batch(orjson.loads(recs[i].text)) for i in rest]
            s = tick("3 per-record path for the records left (parse + normalize)", s)
            meta = chunk_meta(recs, seq)
            seq += chunk.lines
            flat = batch_frame([x.batch for x in norms], rest)
            flat_lines = line_frame(
                [ln for x in norms for ln in x.lines],
                [i for i, x in zip(rest, norms, strict=True) for _ in x.lines],
            )
            batches = build_batches(pl.concat([flat, fast.batches]), meta)
            lines = build_lines(pl.concat([flat_lines, fast.lines]), meta)
            s = tick("4 typed frames + content hash (polars)", s)
            batches, lines, _ = split_valid(batches, lines)
            s = tick("5 validate (pandera)", s)
            objs = [orjson.loads(r.text) for r in recs]
            s = tick(_PER_RECORD_PARSE, s)
            for obj in objs:
                normalize_batch(obj)
            s = tick(_PER_RECORD_NORMALIZE, s)
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
        t["total"] = time.perf_counter() - total - t[_PER_RECORD_PARSE] - t[_PER_RECORD_NORMALIZE]
    return dict(t)


if __name__ == "__main__":
    res = main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10_000)
    for stage, seconds in sorted(res.items()):
        print(f"| {stage} | {seconds:.2f} | {100 * seconds / res['total']:.0f}% |")
