"""Wire the stages: records -> chunks -> frames -> validation -> one DuckDB transaction.

The input is streamed in chunks (JSONL files as byte slices that each worker reads
itself; see :mod:`pipeline.work`), at most two per worker in flight, so memory stays
flat however large the night is. ``execute_api`` first fetches
from the gateway into a raw archive, then loads that archive the same way.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any

import httpx

from pipeline import __version__, account
from pipeline.config import ApiConfig, RunConfig
from pipeline.extract import (
    Chunk,
    Client,
    FetchReport,
    LineSlice,
    chunked,
    fetch_to_archive,
    list_ids,
    read_archive,
)
from pipeline.extract.api import fetch_requests_to_archive
from pipeline.load import Loader, MergeStats
from pipeline.redaction import redact, registered_secrets
from pipeline.work import ChunkOut, process_chunk, process_numbered, worker_init

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
LoadProgress = Callable[[int, int], None]  # (records, input bytes) done in a chunk


class StrictFailure(Exception):
    """--strict and the run found rejects, mismatches or missing input: rolled back."""


# --------------------------------------------------------------------------- Ctrl-C

_interrupted = threading.Event()
_committing = threading.Event()


def _on_sigint(signum: int, frame: object) -> None:
    _interrupted.set()
    if not _committing.is_set():
        raise KeyboardInterrupt


@contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C during a run: nothing is committed, however deep in the run it lands (even
    inside a database call that swallows it), and once the commit has begun it finishes
    (the run is then committed, and says so)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _commit(ldr: Loader) -> None:
    if _interrupted.is_set():
        raise KeyboardInterrupt
    _committing.set()
    try:
        ldr.commit()
    finally:
        _committing.clear()
    if _interrupted.is_set():
        log.warning("interrupted while committing: the run was committed")


@dataclass
class RunResult:
    run_id: str
    source: str
    status: str = "ok"
    records_read: int = 0
    rejected: int = 0
    reject_samples: list[tuple[str, int, str]] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    not_fetched: list[tuple[str, str]] = field(default_factory=list)  # (id, cause), 404s too
    unreadable: list[str] = field(default_factory=list)  # inputs that could not be read
    stats: MergeStats = field(default_factory=MergeStats)
    duration_s: float = 0.0
    committed: bool = False
    notes: list[str] = field(default_factory=list)  # said, not failures (a route not served)

    @property
    def incomplete(self) -> bool:
        """Something asked for is missing: a batch not fetched, an input not read."""
        return bool(self.not_fetched or self.unreadable)


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def _numbered(chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, int]]:
    seq = 0
    for chunk in chunks:
        yield chunk, seq
        seq += chunk.lines if isinstance(chunk, LineSlice) else len(chunk)


def _chunk_outputs(chunks: Iterable[Chunk], workers: int, stage_dir: str) -> Iterator[ChunkOut]:
    """Chunks in input order; with workers > 1, transformed in a process pool.

    At most ``2 * workers`` chunks are in flight, so memory stays flat. An input of one
    chunk never starts the pool.
    """
    chunks = iter(chunks)
    head = list(islice(chunks, 2))
    numbered = _numbered(chain(head, chunks))
    if workers <= 1 or len(head) < 2:
        yield from (process_chunk(chunk, seq, stage_dir=stage_dir) for chunk, seq in numbered)
        return
    # never a plain fork of a process running polars and DuckDB threads: workers fork from
    # a server process that imported the pipeline once (spawn imported it in each worker
    # of each run: about a second of CPU per worker); spawn where there is no forkserver
    ctx = multiprocessing.get_context(
        "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    )
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["pipeline.work"])
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=worker_init,
        initargs=(os.getpid(), registered_secrets()),
    )
    pending: deque[Future[ChunkOut]] = deque()
    try:
        for chunk, seq in numbered:
            pending.append(pool.submit(process_numbered, (chunk, seq, stage_dir)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def execute(
    chunks: Iterable[Chunk],
    cfg: RunConfig,
    source: str,
    *,
    loader: Loader | None = None,
    run_id: str | None = None,
    progress: LoadProgress | None = None,
    not_fetched: list[tuple[str, str]] | None = None,
    not_found: list[str] | None = None,
) -> RunResult:
    """Run one load. Commits only if everything succeeded (and --strict is satisfied).

    ``chunks`` come from :func:`pipeline.extract.read_chunks` (files) or
    :func:`pipeline.extract.chunked` (any stream of records).
    """
    started = time.monotonic()
    started_at = datetime.now(UTC)
    ldr = loader or Loader(
        cfg.db_path,
        run_id or new_run_id(started_at),
        wait_s=cfg.wait_for_lock_s,
        memory_limit=cfg.memory_limit,
        keep_snapshots=cfg.keep_snapshots,
        settings=cfg.settings,
    )
    result = RunResult(
        run_id=ldr.run_id,
        source=redact(source),
        not_found=list(not_found or []),
        not_fetched=list(not_fetched or []),
    )
    try:
        outputs = _chunk_outputs(chunks, cfg.workers, str(ldr.stage_dir))
        for n, out in enumerate(outputs, start=1):
            if out.staged is not None:
                ldr.stage_files(*out.staged)
            ldr.stage_requests(out.requests, list(out.request_sets))
            ldr.reject(out.rejects)
            ldr.note_drift(out.drift)
            result.records_read += out.records
            result.rejected += len(out.rejects)
            result.unreadable.extend(out.unreadable)
            for rej in out.rejects[: 5 - len(result.reject_samples)]:
                result.reject_samples.append((rej[0], rej[1], rej[3]))
            log.debug(
                "staged chunk %d (%d records)", n, out.records, extra={"fields": {"chunk": n}}
            )
            if progress is not None:
                progress(out.records, out.bytes_read)
        result.stats = ldr.merge()
        if result.rejected:
            result.status = "ok_with_rejects"
        if result.stats.reconciliation_issues:
            result.status = (
                "ok_with_mismatches" if result.status == "ok" else result.status + "_mismatches"
            )
        if result.incomplete:
            result.status = "incomplete"
        if cfg.strict and (
            result.rejected or result.stats.reconciliation_issues or result.incomplete
        ):
            raise StrictFailure(
                f"--strict: {result.rejected} rejected record(s), "
                f"{result.stats.reconciliation_issues} reconciliation mismatch(es), "
                f"{len(result.not_fetched)} batch(es) not fetched and "
                f"{len(result.unreadable)} unreadable input(s); nothing was committed"
            )
        result.duration_s = time.monotonic() - started
        s = result.stats
        ldr.record_run(
            {
                "run_id": result.run_id,
                "started_at": started_at,
                "finished_at": datetime.now(UTC),
                "duration_s": round(result.duration_s, 3),
                "source": result.source,
                "status": result.status,
                "pipeline_version": __version__,
                "records_read": result.records_read,
                "batches_loaded": s.loaded,
                "batches_new": s.new,
                "batches_updated": s.updated,
                "batches_unchanged": s.unchanged,
                "batches_reread": s.reread,
                "focus_corrections": s.corrections,
                "batches_stale": s.stale,
                "duplicates_in_input": s.duplicates,
                "lines_loaded": s.lines_loaded,
                "rejected": result.rejected,
                "not_found": len(result.not_found),
                "not_fetched": len(result.not_fetched),
                "unreadable_inputs": len(result.unreadable),
                "cost_nanos_loaded": s.cost_nanos_loaded,
                "total_cost_nanos_before": s.total_before,
                "total_cost_nanos_after": s.total_after,
                "cost_delta_nanos": s.total_after - s.total_before,
                "reconciliation_issues": s.reconciliation_issues,
                "new_fields": s.new_fields[:20],  # the first 20; all in schema_drift
            }
        )
        _commit(ldr)
        result.committed = True
        return result
    finally:
        ldr.rollback()  # a no-op once committed


ProgressFactory = Callable[[int | None, str], AbstractContextManager[Progress]]


def _store_account(
    loader: Loader, answers: dict[str, tuple[Any, datetime]], base_url: str
) -> list[str]:
    """Record the wallet reading and the catalogue snapshot an API run fetched (in the
    run's transaction); an answer of the wrong shape is one note, not a failed night."""
    notes = []
    for path, (body, at) in answers.items():
        try:
            if path == account.CREDITS_PATH:
                account.store_credits(
                    loader.con, account.parse_credits(body), at, f"{base_url}/{path}", loader.run_id
                )
            else:
                account.store_catalogue(loader.con, body, at, f"{base_url}/{path}", loader.run_id)
        except account.BadResponse as exc:
            notes.append(f"GET /v1/{path}: {exc}; nothing recorded")
    return notes


def execute_api(
    cfg: RunConfig,
    api: ApiConfig,
    *,
    ids: Iterable[str] = (),
    list_all: bool = False,
    statuses: Iterable[str] = (),
    fetch_prices: bool = False,
    progress: ProgressFactory | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    backoff_s: float = 0.5,
) -> RunResult:
    """Fetch from the gateway into a raw archive, then load the archive in one transaction.

    Ids already in the database that are not final are refetched on every run. A fatal
    answer (401/403/501) rolls everything back and removes the partial archive.
    """
    run_id = new_run_id()
    loader = Loader(
        cfg.db_path,
        run_id,
        wait_s=cfg.wait_for_lock_s,
        memory_limit=cfg.memory_limit,
        keep_snapshots=cfg.keep_snapshots,
        settings=cfg.settings,
    )
    archive = loader.store.folder / "archive" / f"{run_id}.jsonl"  # beside the real file
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
                    report = await fetch_to_archive(unique, client, archive)
                else:
                    with progress(len(unique), "fetching batches") as advance:
                        report = await fetch_to_archive(unique, client, archive, advance)
                # request rows: for final batches, once, and again when the bill changes
                known = loader.request_fetches_of(list(report.final))
                rows_wanted = {
                    i: c for i, c in report.final.items() if i not in known or known[i] != c
                }
                for i, c in loader.request_fetch_needed(archive.parent).items():
                    rows_wanted.setdefault(i, report.final.get(i, c))
                if rows_wanted:
                    log.info("fetching request rows of %d final batches", len(rows_wanted))
                    await fetch_requests_to_archive(rows_wanted, client, archive, report)
                routes = [account.CREDITS_PATH] + ([account.PRICING_PATH] if fetch_prices else [])
                for path in routes:  # the wallet, and the catalogue when asked
                    try:
                        answers[path] = (await account.fetch(client, path), account.now_utc())
                    except account.RouteUnavailable as exc:
                        notes.append(str(exc))
                        log.info("%s", exc)
                return report

        answers: dict[str, tuple[Any, datetime]] = {}
        notes: list[str] = []
        report = asyncio.run(fetch())
        notes.extend(_store_account(loader, answers, api.base_url))
        loader.fetch_errors(report.errors)
        loader.record_request_fetches(report.request_sets)
        source = f"{api.base_url} ({report.fetched} fetched, archive {archive})"
        result = execute(
            chunked(read_archive(archive), cfg.chunk_size),
            cfg,
            source,
            loader=loader,
            not_fetched=report.not_fetched,
            not_found=report.not_found,
        )
        result.notes.extend(notes)
        return result
    except BaseException:
        loader.rollback()
        archive.unlink(missing_ok=True)
        if archive.parent.exists() and not any(archive.parent.iterdir()):
            archive.parent.rmdir()
        raise
