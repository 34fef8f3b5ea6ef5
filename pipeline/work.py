"""What a worker process does with one chunk: read, parse, flatten, validate.

Pure (no database, no network): it takes a chunk and returns frames and quarantined rows,
so it can run in a process pool. Kept apart from :mod:`pipeline.runner` so a worker only
imports what the transform needs.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipeline.extract.files import Chunk, LineSlice, RawRecord, kept_text
from pipeline.redaction import redact, register_secret
from pipeline.transform import (
    REC,
    RecordError,
    batch_frame,
    build_batches,
    build_lines,
    line_frame,
    normalize_batch,
)
from pipeline.validate import split_valid

MAX_REASON = 500
_INDEX = re.compile(r"\[\d+\]")


def _guess_id(obj: Any) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        return redact(str(obj["id"])[:200])
    return None


def _clip(text: str) -> str:
    text = redact(text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


@dataclass
class ChunkOut:
    """What one chunk turned into: validated frames, quarantined rows, drift notes."""

    records: int
    batches: pl.DataFrame | None
    lines: pl.DataFrame | None
    rejects: list[tuple[Any, ...]]
    drift: dict[str, tuple[str, str | None]]
    unreadable: list[str]  # sources that could not be read at all


def _reject_row(rec: RawRecord, obj: Any, reason: str) -> tuple[Any, ...]:
    """(source, line, batch_id, reason, raw_text, source_file): redacted, size-capped."""
    real = os.path.realpath(rec.source) if os.path.exists(rec.source) else rec.source
    return (rec.source, rec.line, _guess_id(obj), _clip(reason), redact(kept_text(rec.text)), real)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a chunk is transformed: it creates ~100 objects a record, none
    in cycles, and the collector's passes over them cost a quarter of the time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def process_chunk(chunk: Chunk, seq0: int) -> ChunkOut:
    """Read (a JSONL slice), parse, flatten and validate one chunk; runs in worker processes.

    ``seq0`` numbers records across the whole run, so the latest read of a batch wins ties.
    """
    with _gc_paused():
        return _process_chunk(chunk.records() if isinstance(chunk, LineSlice) else chunk, seq0)


def chunk_meta(chunk: list[RawRecord], seq0: int) -> pl.DataFrame:
    """Per-record columns joined onto the frames by ``_rec``: run-wide sequence, origin."""
    return pl.DataFrame(
        {
            REC: range(len(chunk)),
            "_seq": range(seq0 + 1, seq0 + len(chunk) + 1),
            "source": [rec.source for rec in chunk],
            "source_line": [rec.line for rec in chunk],
        },
        schema={REC: pl.Int64, "_seq": pl.Int64, "source": pl.String, "source_line": pl.Int64},
    )


def _process_chunk(chunk: list[RawRecord], seq0: int) -> ChunkOut:
    rows: list[tuple[Any, ...]] = []
    line_rows: list[tuple[Any, ...]] = []
    recs: list[int] = []
    line_recs: list[int] = []
    rejects: list[tuple[Any, ...]] = []
    drift: dict[str, tuple[str, str | None]] = {}
    objs: dict[int, Any] = {}
    unreadable: list[str] = []
    for i, rec in enumerate(chunk):
        rec = rec.parsed()
        objs[i] = rec.obj
        if rec.error is not None:
            rejects.append(_reject_row(rec, None, rec.error))
            if rec.unreadable:
                unreadable.append(rec.source)
            continue
        try:
            norm = normalize_batch(rec.obj)
        except RecordError as exc:
            rejects.append(_reject_row(rec, rec.obj, str(exc)))
            continue
        except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
            # one odd record must never sink the night: quarantine it with the cause
            reason = f"could not be flattened ({type(exc).__name__}: {exc})"
            rejects.append(_reject_row(rec, rec.obj, reason))
            continue
        rows.append(norm.batch)
        recs.append(i)
        line_rows.extend(norm.lines)
        line_recs.extend([i] * len(norm.lines))
        for path, note in norm.drift.items():
            drift.setdefault(redact(_INDEX.sub("[]", path)), (note, redact(norm.batch[0])))
    if not rows:
        return ChunkOut(len(chunk), None, None, rejects, drift, unreadable)
    meta = chunk_meta(chunk, seq0)
    batches = build_batches(batch_frame(rows, recs), meta)
    lines = build_lines(line_frame(line_rows, line_recs), meta)
    batches, lines, bad = split_valid(batches, lines)
    for rec_index, reason in sorted(bad.items()):
        rejects.append(_reject_row(chunk[rec_index], objs[rec_index], reason))
    return ChunkOut(len(chunk), batches, lines, rejects, drift, unreadable)


def process_numbered(args: tuple[Chunk, int]) -> ChunkOut:
    return process_chunk(*args)


def worker_init(parent: int, secrets: list[str]) -> None:
    """Worker start-up: Ctrl-C is the parent's to handle (one line, not one traceback per
    worker); the parent's registered secrets are redacted here too; and the worker ends
    when the run that started it is gone (kill -9)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for secret in secrets:
        register_secret(secret)
    exit_with_parent(parent)


def exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (kill -9)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
