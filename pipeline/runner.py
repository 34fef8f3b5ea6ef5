"""Wire the stages: records -> chunks -> frames -> validation -> one DuckDB transaction.

The input is streamed in chunks (transformed in worker processes when there is more than
one), so memory stays flat however large the night is. ``execute_api`` first fetches
from the gateway into a raw archive, then loads that archive the same way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any

import httpx
import polars as pl

from pipeline import __version__
from pipeline.config import ApiConfig, RunConfig
from pipeline.extract import (
    Client,
    FetchReport,
    RawRecord,
    fetch_to_archive,
    list_ids,
    read_archive,
    redact,
)
from pipeline.load import Loader, MergeStats
from pipeline.transform import RecordError, build_batches, build_lines, normalize_batch
from pipeline.validate import REC, split_valid

log = logging.getLogger(__name__)

MAX_REASON = 500
_INDEX = re.compile(r"\[\d+\]")

Progress = Callable[[int], None]


class StrictFailure(Exception):
    """--strict and the run found rejects or mismatches: rolled back."""


@dataclass
class RunResult:
    run_id: str
    source: str
    status: str = "ok"
    records_read: int = 0
    rejected: int = 0
    reject_samples: list[tuple[str, int, str]] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    stats: MergeStats = field(default_factory=MergeStats)
    duration_s: float = 0.0
    committed: bool = False


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _chunks(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


def _guess_id(obj: Any) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        return str(obj["id"])[:200]
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


def _reject_row(rec: RawRecord, obj: Any, reason: str) -> tuple[Any, ...]:
    return (rec.source, rec.line, _guess_id(obj), _clip(reason), redact(rec.text))


def process_chunk(chunk: list[RawRecord], seq0: int) -> ChunkOut:
    """Parse, flatten and validate one chunk. Pure (no I/O): runs in worker processes.

    ``seq0`` numbers records across the whole run, so the latest read of a batch wins ties.
    """
    rows: list[tuple[Any, ...]] = []
    line_rows: list[tuple[Any, ...]] = []
    meta: dict[str, list[Any]] = {REC: [], "_seq": [], "source": [], "source_line": []}
    line_meta: dict[str, list[Any]] = {REC: [], "_seq": []}
    rejects: list[tuple[Any, ...]] = []
    drift: dict[str, tuple[str, str | None]] = {}
    objs: list[Any] = [None] * len(chunk)
    for i, rec in enumerate(chunk):
        seq = seq0 + i + 1
        rec = rec.parsed()
        objs[i] = rec.obj
        if rec.error is not None:
            rejects.append(_reject_row(rec, None, rec.error))
            continue
        try:
            norm = normalize_batch(rec.obj)
        except RecordError as exc:
            rejects.append(_reject_row(rec, rec.obj, str(exc)))
            continue
        rows.append(norm.batch)
        meta[REC].append(i)
        meta["_seq"].append(seq)
        meta["source"].append(rec.source)
        meta["source_line"].append(rec.line)
        line_rows.extend(norm.lines)
        line_meta[REC].extend([i] * len(norm.lines))
        line_meta["_seq"].extend([seq] * len(norm.lines))
        for path, note in norm.drift.items():
            drift.setdefault(_INDEX.sub("[]", path), (note, norm.batch[0]))
    if not rows:
        return ChunkOut(len(chunk), None, None, rejects, drift)
    batches = build_batches(rows, meta)
    lines = build_lines(line_rows, line_meta)
    batches, lines, bad = split_valid(batches, lines)
    for rec_index, reason in sorted(bad.items()):
        rejects.append(_reject_row(chunk[rec_index], objs[rec_index], reason))
    return ChunkOut(len(chunk), batches, lines, rejects, drift)


def _process_star(args: tuple[list[RawRecord], int]) -> ChunkOut:
    return process_chunk(*args)


def _numbered(chunks: Iterable[list[RawRecord]]) -> Iterator[tuple[list[RawRecord], int]]:
    seq = 0
    for chunk in chunks:
        yield chunk, seq
        seq += len(chunk)


def _chunk_outputs(
    records: Iterable[RawRecord], chunk_size: int, workers: int
) -> Iterator[ChunkOut]:
    """Chunks in input order; with workers > 1, transformed in a process pool.

    At most ``2 * workers`` chunks are in flight, so memory stays flat. An input of one
    chunk never starts the pool.
    """
    chunks = _chunks(records, chunk_size)
    head = list(islice(chunks, 2))
    numbered = _numbered(chain(head, chunks))
    if workers <= 1 or len(head) < 2:
        yield from (process_chunk(chunk, seq) for chunk, seq in numbered)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process running polars threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: deque[Future[ChunkOut]] = deque()
        for args in numbered:
            pending.append(pool.submit(_process_star, args))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def execute(
    records: Iterable[RawRecord],
    cfg: RunConfig,
    source: str,
    *,
    loader: Loader | None = None,
    run_id: str | None = None,
    progress: Progress | None = None,
    not_found: list[str] | None = None,
) -> RunResult:
    """Run one load. Commits only if everything succeeded (and --strict is satisfied)."""
    started = time.monotonic()
    started_at = datetime.now(UTC)
    ldr = loader or Loader(
        cfg.db_path,
        run_id or new_run_id(started_at),
        wait_s=cfg.wait_for_lock_s,
        memory_limit=cfg.memory_limit,
    )
    result = RunResult(run_id=ldr.run_id, source=source, not_found=list(not_found or []))
    try:
        outputs = _chunk_outputs(records, cfg.chunk_size, cfg.workers)
        for n, out in enumerate(outputs, start=1):
            if out.batches is not None and out.lines is not None:
                ldr.stage(out.batches, out.lines)
            ldr.reject(out.rejects)
            ldr.note_drift(out.drift)
            result.records_read += out.records
            result.rejected += len(out.rejects)
            for source, line, _, reason, _ in out.rejects[: 5 - len(result.reject_samples)]:
                result.reject_samples.append((source, line, reason))
            log.debug(
                "staged chunk %d (%d records)", n, out.records, extra={"fields": {"chunk": n}}
            )
            if progress is not None:
                progress(out.records)
        result.stats = ldr.merge()
        if result.rejected:
            result.status = "ok_with_rejects"
        if result.stats.reconciliation_issues:
            result.status = (
                "ok_with_mismatches" if result.status == "ok" else result.status + "_mismatches"
            )
        if cfg.strict and (result.rejected or result.stats.reconciliation_issues):
            raise StrictFailure(
                f"--strict: {result.rejected} rejected record(s) and "
                f"{result.stats.reconciliation_issues} reconciliation mismatch(es); "
                "nothing was committed"
            )
        result.duration_s = time.monotonic() - started
        s = result.stats
        ldr.record_run(
            {
                "run_id": result.run_id,
                "started_at": started_at,
                "finished_at": datetime.now(UTC),
                "duration_s": round(result.duration_s, 3),
                "source": source,
                "status": result.status,
                "pipeline_version": __version__,
                "records_read": result.records_read,
                "batches_loaded": s.loaded,
                "batches_new": s.new,
                "batches_updated": s.updated,
                "batches_unchanged": s.unchanged,
                "batches_stale": s.stale,
                "duplicates_in_input": s.duplicates,
                "lines_loaded": s.lines_loaded,
                "rejected": result.rejected,
                "not_found": len(result.not_found),
                "cost_nanos_loaded": s.cost_nanos_loaded,
                "total_cost_nanos_before": s.total_before,
                "total_cost_nanos_after": s.total_after,
                "cost_delta_nanos": s.total_after - s.total_before,
                "reconciliation_issues": s.reconciliation_issues,
                "new_fields": s.new_fields,
            }
        )
        ldr.commit()
        result.committed = True
        return result
    finally:
        ldr.rollback()  # a no-op once committed


ProgressFactory = Callable[[int | None, str], AbstractContextManager[Progress]]


def execute_api(
    cfg: RunConfig,
    api: ApiConfig,
    *,
    ids: Iterable[str] = (),
    list_all: bool = False,
    statuses: Iterable[str] = (),
    progress: ProgressFactory | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    backoff_s: float = 0.5,
) -> RunResult:
    """Fetch from the gateway into a raw archive, then load the archive in one transaction.

    Ids already in the database that are not final are refetched on every run. A fatal
    answer (401/403/501) rolls everything back and removes the partial archive.
    """
    run_id = new_run_id()
    loader = Loader(cfg.db_path, run_id, wait_s=cfg.wait_for_lock_s, memory_limit=cfg.memory_limit)
    archive = cfg.db_path.parent / "archive" / f"{run_id}.jsonl"
    try:
        wanted = list(ids)
        pending = loader.pending_ids()

        async def fetch() -> FetchReport:
            async with Client(api, transport=transport, backoff_s=backoff_s) as client:
                if list_all:
                    wanted.extend(await list_ids(client, statuses))
                unique = list(dict.fromkeys([*wanted, *pending]))
                log.info("fetching %d batches (%d not yet final)", len(unique), len(pending))
                if progress is None:
                    return await fetch_to_archive(unique, client, archive)
                with progress(len(unique), "fetching batches") as advance:
                    return await fetch_to_archive(unique, client, archive, advance)

        report = asyncio.run(fetch())
        loader.fetch_errors(report.errors)
        source = f"{api.base_url} ({report.fetched} fetched, archive {archive})"
        return execute(
            read_archive(archive), cfg, source, loader=loader, not_found=report.not_found
        )
    except BaseException:
        loader.rollback()
        archive.unlink(missing_ok=True)
        if archive.parent.exists() and not any(archive.parent.iterdir()):
            archive.parent.rmdir()
        raise
