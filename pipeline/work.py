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
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from pipeline.extract.files import REQUEST_FILE_SUFFIXES, Chunk, LineSlice, RawRecord, kept_text
from pipeline.redaction import redact, register_secret
from pipeline.transform import (
    REC,
    RecordError,
    batch_frame,
    build_batches,
    build_lines,
    build_requests,
    line_frame,
    normalize_batch,
    request_frame,
    request_rows,
)
from pipeline.validate import split_valid

if TYPE_CHECKING:  # the fast path (and msgspec) is imported only when it is turned on
    from pipeline.fastpath import Fast

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
    requests: pl.DataFrame | None = None  # request rows (GET /batches/{id}/requests)
    request_sets: dict[str, int] = field(default_factory=dict)  # batches whose rows came
    bytes_read: int = 0  # input bytes this chunk covered (progress)
    staged: tuple[str, str] | None = None  # (batches, lines) Parquet files, when written


def _reject_row(rec: RawRecord, obj: Any, reason: str) -> tuple[Any, ...]:
    """(source, line, batch_id, reason, raw_text, source_file): redacted, size-capped."""
    real = _real_source(rec.source)
    return (rec.source, rec.line, _guess_id(obj), _clip(reason), redact(kept_text(rec.text)), real)


@lru_cache(maxsize=256)
def _real_source(source: str) -> str:
    """The input's real path, once per input (it was 10 of 22 s of a night of 500,000
    rejects: a realpath a record)."""
    return os.path.realpath(source) if os.path.exists(source) else source


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


# The column-wise fast path (pipeline/fastpath.py) takes the well-typed batch records of
# a chunk; the per-record normaliser the others. Both give the same rows
# (tests/test_fastpath.py). BILLING_FAST_PATH=0 sends every record per record (to compare,
# or to rule the fast path out when chasing a difference).
FAST_PATH = os.environ.get("BILLING_FAST_PATH", "1") != "0"


def process_chunk(
    chunk: Chunk, seq0: int, *, fast: bool = FAST_PATH, stage_dir: str | None = None
) -> ChunkOut:
    """Read (a JSONL slice), parse, flatten and validate one chunk; runs in worker processes.

    ``seq0`` numbers records across the whole run, so the latest read of a batch wins ties.
    """
    with _gc_paused():
        if isinstance(chunk, LineSlice):
            out = _process_chunk(chunk.records(), seq0, fast)
            out.bytes_read = chunk.end - chunk.start
        else:
            out = _process_chunk(chunk, seq0, fast)
            out.bytes_read = sum(len(rec.text) + 1 for rec in chunk)  # about: chars, newline
        if stage_dir is not None:
            _write_stage(out, stage_dir, seq0)
        return out


def _write_stage(out: ChunkOut, stage_dir: str, seq0: int) -> None:
    """Write the chunk's frames where the loader reads them at the merge, instead of
    sending them back: the run's process then neither unpickles nor copies them."""
    if out.batches is None or out.lines is None:
        return
    out.staged = write_stage_files(out.batches, out.lines, stage_dir, seq0)
    out.batches = out.lines = None


def write_stage_files(
    batches: pl.DataFrame, lines: pl.DataFrame, stage_dir: str, seq0: int
) -> tuple[str, str]:
    """A chunk's validated frames as the (batches, lines) Parquet files the merge reads."""
    files = []
    for name, frame in (("batches", batches), ("lines", lines)):
        path = os.path.join(stage_dir, f"{seq0:012d}.{name}.parquet")
        frame.drop(REC).write_parquet(path, compression="snappy", statistics=False)
        files.append(path)
    return files[0], files[1]


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


def is_requests_record(rec: RawRecord) -> bool:
    """Request rows, not batches: an API archive's requests envelope, or a file named
    ``*.requests.jsonl`` / ``*.requests.json`` (rows carrying ``batch_id``, or a saved
    ``{"object": "list", "batch_id": ..., "data": [...]}`` response)."""
    return rec.kind == "requests" or rec.source.lower().endswith(REQUEST_FILE_SUFFIXES)


def _requests_of(obj: Any) -> tuple[str, list[Any] | None]:
    """(batch id, rows) of a request-rows record; raises RecordError."""
    if not isinstance(obj, dict):
        raise RecordError(f"not a request row or list: got a JSON {type(obj).__name__}")
    batch_id = obj.get("batch_id")
    if not isinstance(batch_id, str) or not batch_id.strip():
        raise RecordError("batch_id is missing (request rows name their batch)")
    if obj.get("object") == "list":
        data = obj.get("data")
        if not isinstance(data, list):
            raise RecordError("a request list without a data array")
        return batch_id.strip(), data
    return batch_id.strip(), [obj]


def _fast(chunk: list[RawRecord], enabled: bool) -> Fast | None:
    """The column-wise fast path over the chunk's batch records still to be parsed."""
    if not enabled:
        return None
    todo = [i for i, r in enumerate(chunk) if r.pending and not is_requests_record(r)]
    if not todo:
        return None
    from pipeline import fastpath

    return fastpath.flatten(todo, [chunk[i].text for i in todo])


def _obj(objs: dict[int, Any], chunk: list[RawRecord], i: int) -> Any:
    """The parsed record (for its id in a quarantine row); fast-path records are parsed
    only when they are quarantined."""
    if i in objs:
        return objs[i]
    try:
        return orjson.loads(chunk[i].text)
    except orjson.JSONDecodeError:
        return None


def _process_chunk(chunk: list[RawRecord], seq0: int, fast: bool = True) -> ChunkOut:
    _real_source.cache_clear()  # per chunk: a worker lives across runs, links can change
    rows: list[tuple[Any, ...]] = []
    line_rows: list[tuple[Any, ...]] = []
    request_rows_: list[tuple[Any, ...]] = []
    recs: list[int] = []
    line_recs: list[int] = []
    request_recs: list[int] = []
    request_sets: dict[str, int] = {}  # batch id -> the record that delivered its rows
    rejects: list[tuple[Any, ...]] = []
    drift: dict[str, tuple[str, str | None]] = {}
    objs: dict[int, Any] = {}
    unreadable: list[str] = []
    taken = _fast(chunk, fast)
    notes = list(taken.drift) if taken else []  # (record, field path, note, batch id)
    fast_recs = taken.taken if taken else set()
    for i, raw in enumerate(chunk):
        if i in fast_recs:
            continue
        rec = raw.parsed()
        objs[i] = rec.obj
        if rec.error is not None:
            rejects.append(_reject_row(rec, None, rec.error))
            if rec.unreadable:
                unreadable.append(rec.source)
            continue
        try:
            if is_requests_record(rec):
                batch_id, raw_rows = _requests_of(rec.obj)
                found, errors = request_rows(batch_id, raw_rows)
                norm = None
            else:
                norm = normalize_batch(rec.obj)
                batch_id, found, errors = norm.batch[0], norm.requests, norm.request_errors
        except RecordError as exc:
            rejects.append(_reject_row(rec, rec.obj, str(exc)))
            continue
        except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as exc:
            # one odd record must never sink the night: quarantine it with the cause
            reason = f"could not be flattened ({type(exc).__name__}: {exc})"
            rejects.append(_reject_row(rec, rec.obj, reason))
            continue
        for reason, text in errors:
            rejects.append(_reject_row(replace(rec, text=text), {"id": batch_id}, reason))
        if found is not None:
            request_sets[batch_id] = i
            request_rows_.extend(found)
            request_recs.extend([i] * len(found))
        if norm is None:
            continue
        rows.append(norm.batch)
        recs.append(i)
        line_rows.extend(norm.lines)
        line_recs.extend([i] * len(norm.lines))
        notes.extend((i, path, note, norm.batch[0]) for path, note in norm.drift.items())
    for _, path, note, batch_id in sorted(notes, key=lambda n: n[0]):  # first record first
        field_path = redact(_INDEX.sub("[]", path))[:MAX_REASON]
        drift.setdefault(field_path, (note, redact(batch_id)[:200]))
    meta = chunk_meta(chunk, seq0)
    requests = None
    if request_sets:
        requests = build_requests(request_frame(request_rows_, request_recs), meta)
    if not rows and not fast_recs:
        return ChunkOut(len(chunk), None, None, rejects, drift, unreadable, requests, request_sets)
    flat_batches, flat_lines = batch_frame(rows, recs), line_frame(line_rows, line_recs)
    if taken:
        flat_batches = pl.concat([flat_batches, taken.batches])
        flat_lines = pl.concat([flat_lines, taken.lines])
    batches = build_batches(flat_batches, meta)
    lines = build_lines(flat_lines, meta)
    batches, lines, bad = split_valid(batches, lines)
    for rec_index, reason in sorted(bad.items()):
        rejects.append(_reject_row(chunk[rec_index], _obj(objs, chunk, rec_index), reason))
    if bad and requests is not None:  # a rejected batch takes its request rows with it
        requests = requests.filter(~pl.col(REC).is_in(list(bad)))
        request_sets = {k: v for k, v in request_sets.items() if v not in bad}
    return ChunkOut(len(chunk), batches, lines, rejects, drift, unreadable, requests, request_sets)


def process_numbered(args: tuple[Chunk, int, str]) -> ChunkOut:
    chunk, seq0, stage_dir = args
    return process_chunk(chunk, seq0, stage_dir=stage_dir)


def worker_init(parent: int, secrets: list[str]) -> None:
    """Worker start-up: Ctrl-C is the parent's to handle (one line, not one traceback per
    worker); the parent's registered secrets are redacted here too; and the worker ends
    when the run that started it is gone (kill -9)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for secret in secrets:
        register_secret(secret)
    exit_with_parent(parent)


def exit_with_parent(parent: int) -> None:
    """End this worker when the run that started it is gone (kill -9). The run is not
    always the worker's parent (workers fork from a fork server), so its pid is watched:
    gone, or a zombie waiting to be reaped, ends the worker."""

    def alive() -> bool:
        try:
            with open(f"/proc/{parent}/stat", "rb") as fh:
                return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
        except FileNotFoundError:
            return False
        except OSError:  # no /proc: ask the kernel whether the pid exists
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                return False
            return True

    def watch() -> None:
        while alive():
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
