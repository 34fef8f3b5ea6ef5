"""Fetch batch objects from the gateway API into a raw archive (JSONL on disk).

Every response body is archived before any transformation, one envelope a line
(``{"batch_id", "url", "status", "fetched_at", "body"}``, credentials redacted), so a load
can be replayed with ``billing run --replay FILE`` without refetching.

Faults: 429 waits ``Retry-After``; 5xx, timeouts, connection errors and truncated bodies
retry with exponential backoff and jitter (tenacity), a bounded number of times. Every
attempt has a total deadline (``--timeout``, the whole response, not each read) and a
body cap (:data:`MAX_BODY_BYTES`, counted after decompression, so a gzip bomb stops at
the cap). A 200 must be a batch object with the id that was asked for. Any id that is
not fetched in the end (404, another error status, retries exhausted, an oversize or
wrong body, an id that is not one) is recorded with its cause and kind, and the run
says it is incomplete. 401, 403 and 501 stop the run (:class:`FatalFetchError`).
The token only ever travels in the ``Authorization`` header; it is never logged, and
any echo of it in a response is redacted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from pipeline.config import ApiConfig, ConfigError
from pipeline.extract import ROWS_REASON
from pipeline.extract.files import (
    MAX_RECORD_BYTES,
    EndlessLine,
    RawRecord,
    iter_lines,
    kept_text,
    unreadable,
)
from pipeline.redaction import redact, redact_json
from pipeline.transform import lifecycle_group

log = logging.getLogger(__name__)

MAX_LIST_PAGES = 10_000
POOL_SHARD_SIZE = 8
MAX_BODY_BYTES = MAX_RECORD_BYTES  # one batch object; a list page may be 4x this
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,199}")


def valid_id(batch_id: str) -> bool:
    """A batch id we may put in a URL path: letters, digits, ``_ . : -``, no dot segments."""
    return _ID.fullmatch(batch_id) is not None and batch_id.strip(".") != ""


@dataclass(frozen=True)
class Answer:
    """A whole HTTP response, read within its deadline and size cap."""

    status: int
    headers: httpx.Headers
    body: bytes
    url: str

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="backslashreplace")

    def json(self) -> Any:
        return orjson.loads(self.body)


class BodyTooLarge(Exception):
    """The response body (after decompression) is over the cap: not retried."""


class FatalFetchError(Exception):
    """The gateway refused the whole run (bad token, feature off, routes disabled)."""


class _Transient(Exception):
    """A retryable answer (429/5xx); ``retry_after`` is the server's wish in seconds."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


@dataclass
class FetchReport:
    archive: Path
    fetched: int = 0
    # (batch_id, url, http_status, reason, kind): kind is not_found, http_error, failed,
    # too_large, wrong_body or invalid_id
    errors: list[tuple[str, str, int | None, str, str]] = field(default_factory=list)
    final: dict[str, int | None] = field(default_factory=dict)  # final batch id -> cost_nanos
    request_sets: list[tuple[str, int | None, int]] = field(default_factory=list)  # fetched

    @property
    def not_found(self) -> list[str]:
        return [e[0] for e in self.errors if e[2] == 404]

    @property
    def not_fetched(self) -> list[tuple[str, str]]:
        return [(e[0], e[3]) for e in self.errors]

    def error(self, batch_id: str, url: str, status: int | None, reason: str, kind: str) -> None:
        reason = redact(reason)
        self.errors.append((redact(batch_id), redact(url), status, reason, kind))
        log.warning("could not fetch %s: %s", batch_id, reason)


def _error_reason(resp: Answer) -> str:
    try:
        body = resp.json()
    except ValueError:
        return redact(resp.text[:200])
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return redact(str(err.get("reason") or err.get("type") or err)[:200])
    reason = body.get("reason") if isinstance(body, dict) else None
    return redact(f"{err}: {reason}" if reason else str(err or body)[:200])


def _fatal(resp: Answer) -> FatalFetchError | None:
    reason = _error_reason(resp)
    if resp.status == 401:
        return FatalFetchError(
            f"the gateway rejected the API token (401 {reason}); check PHASEO_API_KEY"
        )
    if resp.status == 403:
        return FatalFetchError(
            f"the API token may not use the batch API (403 {reason}); "
            "ask for the batch feature to be enabled on this key"
        )
    if resp.status == 501:
        return FatalFetchError(
            "the gateway's batch routes are disabled (501 not_implemented: "
            f"{reason.removeprefix('not_implemented: ')}); "
            "nothing was fetched or committed, try again once the gateway enables them"
        )
    return None


def _retry_after(resp: Answer, cap: float) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return None if math.isnan(seconds) else max(0.0, min(seconds, cap))  # NaN: no wish


class DeadlinePassed(Exception):
    """The run's API deadline (``--api-deadline``) passed: nothing more is asked."""

    def __init__(self, deadline_s: float) -> None:
        super().__init__(
            f"the run's API deadline ({deadline_s:g} s, --api-deadline) passed before it was"
            " fetched"
        )


def _is_transient(exc: BaseException) -> bool:
    return isinstance(
        exc, _Transient | httpx.TimeoutException | httpx.TransportError | TimeoutError
    )


def _cause(state: RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome else None
    if exc is None:
        return "?"
    return str(exc) or type(exc).__name__


def _decoder(encoding: str) -> Any:
    """A streaming decompressor for a Content-Encoding (None for identity)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise httpx.DecodingError(f"unsupported Content-Encoding {encoding!r}")


class Client:
    """A small async client over httpx; ``transport`` is swappable for tests."""

    def __init__(
        self,
        api: ApiConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_s: float = 0.5,
    ) -> None:
        self.api = api
        self._backoff = wait_exponential_jitter(multiplier=backoff_s, max=30.0)
        self._deadline = time.monotonic() + api.deadline_s  # reset on entering
        # httpcore's pool scans every connection for every request (quadratic at high
        # concurrency), so connections are spread over shards of POOL_SHARD_SIZE each.
        shards = -(-api.concurrency // POOL_SHARD_SIZE)
        per_shard = -(-api.concurrency // shards)
        self._shards = [
            httpx.AsyncClient(
                base_url=api.base_url + "/",
                headers={
                    "Authorization": f"Bearer {api.token.reveal()}",
                    "Accept": "application/json",
                    "Accept-Encoding": "gzip, deflate",
                },
                timeout=httpx.Timeout(api.timeout_s),
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                transport=transport,
                event_hooks={"request": [self._log_request]},
            )
            for _ in range(shards)
        ]

    async def _log_request(self, request: httpx.Request) -> None:
        log.debug("GET %s (authorization header not logged)", request.url)

    async def __aenter__(self) -> Client:
        self._deadline = time.monotonic() + self.api.deadline_s
        return self

    def _left(self) -> float:
        """Seconds left before the run's API deadline; DeadlinePassed when none are."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise DeadlinePassed(self.api.deadline_s)
        return left

    async def __aexit__(self, *exc: object) -> None:
        for http in self._shards:
            await http.aclose()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        wish = (
            exc.retry_after
            if isinstance(exc, _Transient) and exc.retry_after is not None
            else float(self._backoff(state))
        )
        return min(wish, max(self._deadline - time.monotonic(), 0.0))  # never past it

    async def _read(self, http: httpx.AsyncClient, path: str, params: Any, cap: int) -> Answer:
        """One attempt: the whole response within the deadline, at most ``cap`` bytes of
        body after decompression (decompressed here, bounded, not by httpx)."""
        async with asyncio.timeout(self.api.timeout_s):
            request = http.build_request("GET", path, params=params)
            resp = await http.send(request, stream=True)
            try:
                decoder = _decoder(resp.headers.get("content-encoding", ""))
                body = bytearray()
                too_large = BodyTooLarge(f"response body over the {cap // 1024 // 1024} MiB limit")
                async for raw in resp.aiter_raw():  # a truncated body raises: retried
                    data = decoder.decompress(raw, cap + 1 - len(body)) if decoder else raw
                    body += data
                    if len(body) > cap or (decoder is not None and decoder.unconsumed_tail):
                        raise too_large
                if decoder is not None:
                    body += decoder.flush(cap + 1 - len(body))
                    if len(body) > cap:
                        raise too_large
            except zlib.error as exc:
                raise httpx.DecodingError(f"bad compressed body: {exc}") from None
            finally:
                await resp.aclose()
        return Answer(resp.status_code, resp.headers, bytes(body), str(resp.request.url))

    async def get(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        shard: int = 0,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> Answer:
        """GET with retries on transient faults; returns the final non-transient answer."""

        async def attempt() -> Answer:
            http = self._shards[shard % len(self._shards)]
            try:
                async with asyncio.timeout(self._left()):
                    resp = await self._read(http, path, params, max_bytes)
            except TimeoutError:
                self._left()  # the run's deadline, not this request's: DeadlinePassed
                raise
            if resp.status == 429 or (resp.status >= 500 and resp.status != 501):
                raise _Transient(resp.status, _retry_after(resp, self.api.max_retry_after_s))
            return resp

        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.api.max_retries + 1),
            wait=self._wait,
            reraise=True,
            before_sleep=lambda s: log.info("retrying %s after %s", path, _cause(s)),
        )
        async for try_ in retrying:
            with try_:
                return await attempt()
        raise AssertionError("unreachable")  # pragma: no cover


LIST_LIMIT = 100


async def list_ids(client: Client, statuses: Iterable[str] = ()) -> list[str]:
    """Ids from ``GET /batches``. The gateway's list has no cursor (``has_more`` is always
    false, ``after`` ignored): one call sees at most the 100 most recently updated
    batches, so a full page is announced as possibly incomplete. ``has_more``/``after``
    are still followed, while they make progress, should a later gateway page."""
    ids: list[str] = []
    wanted: list[str | None] = [*statuses] or [None]
    for status in wanted:
        after: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params: dict[str, Any] = {"limit": 100}
            if status:
                params["status"] = status
            if after:
                params["after"] = after
            try:
                resp = await client.get("batches", params, max_bytes=4 * MAX_BODY_BYTES)
            except DeadlinePassed as exc:
                raise FatalFetchError(f"listing batches: {exc}") from None
            if (fatal := _fatal(resp)) is not None:
                raise fatal
            if resp.status != 200:
                raise FatalFetchError(
                    f"listing batches failed: HTTP {resp.status} {_error_reason(resp)}"
                )
            try:
                page = resp.json()
            except orjson.JSONDecodeError:
                raise FatalFetchError("listing batches failed: the answer is not JSON") from None
            if not isinstance(page, dict):
                raise FatalFetchError("listing batches failed: the answer is not a list object")
            data = page.get("data") or []
            if not isinstance(data, list):
                raise FatalFetchError("listing batches failed: the answer has no data array")
            ids.extend(str(item["id"]) for item in data if isinstance(item, dict) and "id" in item)
            last = page.get("last_id") or (data[-1].get("id") if data else None)
            if not page.get("has_more") or not data or not last or last == after:
                if len(data) >= LIST_LIMIT and not page.get("has_more"):
                    log.warning(
                        "GET /batches%s returned a full page of %d: the gateway lists only the "
                        "%d most recently updated batches, so older ones may be missing from "
                        "--list (use --ids-file; batches already loaded and not final are "
                        "refetched anyway)",
                        f"?status={status}" if status else "",
                        len(data),
                        LIST_LIMIT,
                    )
                break  # no cursor, or a cursor that does not move: stop safely
            after = last
    return ids


def final_cost(body: dict[str, Any]) -> tuple[bool, int | None]:
    """(is the batch final: terminal, by the same rule as the load, and its billing
    finalized; its billing.cost_nanos)."""
    bill = body.get("billing")
    if not isinstance(bill, dict) or not bill.get("finalized_at"):
        return False, None
    terminal = lifecycle_group(body.get("status"), body.get("lifecycle_status")) == "terminal"
    cost = bill.get("cost_nanos")
    return terminal, cost if isinstance(cost, int) and not isinstance(cost, bool) else None


def _check_body(batch_id: str, resp: Answer) -> tuple[dict[str, Any] | None, str | None]:
    """(the batch object, None), or (None, why the 200 body is not the batch asked for)."""
    try:
        body = resp.json()
    except orjson.JSONDecodeError as exc:
        return None, f"response body is not JSON: {exc}"
    if not isinstance(body, dict):
        return None, "response body is not a batch object"
    if "id" not in body and "error" in body:
        return None, f"the gateway answered 200 with an error body ({_error_reason(resp)})"
    got = body.get("id")
    if not isinstance(got, str):
        return None, "response body is not a batch object (no id)"
    if got.strip() != batch_id:
        return None, (
            f"the gateway answered with batch {redact(got[:200])!r} instead of {batch_id!r}"
        )
    return body, None


def _envelope(batch_id: str, resp: Answer, error: str | None) -> bytes:
    env: dict[str, Any] = {
        "batch_id": batch_id,
        "url": redact(resp.url),
        "status": resp.status,
        "fetched_at": datetime.now(UTC).isoformat(),
        "body": redact_json(resp.text),
    }
    if error is not None:
        env["error"] = error
    return orjson.dumps(env)


async def fetch_to_archive(
    ids: Iterable[str],
    client: Client,
    archive: Path,
    progress: Callable[[int], None] | None = None,
) -> FetchReport:
    """Fetch every id (bounded concurrency) and archive each 200 body as it arrives."""
    unique = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    report = FetchReport(archive)
    for bad in [i for i in unique if not valid_id(i)]:
        report.error(bad, "", None, f"not a valid batch id: {bad[:200]!r}", "invalid_id")
    unique = [i for i in unique if valid_id(i)]
    archive.parent.mkdir(parents=True, exist_ok=True)
    pending = iter(unique)  # shared by the workers: bounded concurrency, no task per id
    with archive.open("wb") as fh:
        archive.chmod(0o600)

        async def one(batch_id: str, shard: int) -> None:
            url = f"batches/{quote(batch_id, safe='')}"
            try:
                resp = await client.get(url, shard=shard)
            except BodyTooLarge as exc:
                report.error(batch_id, url, 200, str(exc), "too_large")
                return
            except (_Transient, httpx.HTTPError, TimeoutError, DeadlinePassed) as exc:
                status = exc.status if isinstance(exc, _Transient) else None
                report.error(batch_id, url, status, _gave_up(client, exc), "failed")
                return
            if (fatal := _fatal(resp)) is not None:
                raise fatal
            if resp.status == 200:
                body, problem = _check_body(batch_id, resp)
                fh.write(_envelope(batch_id, resp, problem) + b"\n")
                if body is not None:
                    report.fetched += 1
                    final, cost = final_cost(body)
                    if final:
                        report.final[batch_id] = cost
                else:
                    report.error(batch_id, url, 200, str(problem), "wrong_body")
            elif resp.status == 404:
                reason = f"batch not found ({_error_reason(resp)})"
                report.error(batch_id, url, 404, reason, "not_found")
            else:
                reason = f"HTTP {resp.status}: {_error_reason(resp)}"
                if 300 <= resp.status < 400:
                    where = redact(resp.headers.get("location", "")[:200])
                    reason = (
                        f"HTTP {resp.status} redirect to {where!r} (not followed; check --base-url)"
                    )
                report.error(batch_id, url, resp.status, reason, "http_error")

        async def worker(shard: int) -> None:
            for batch_id in pending:
                await one(batch_id, shard)
                if progress is not None:
                    progress(1)

        await _in_parallel(worker, min(client.api.concurrency, len(unique)))
    return report


async def _in_parallel(worker: Callable[[int], Coroutine[Any, Any, None]], n: int) -> None:
    """Run ``n`` workers (each given its shard number) sharing one iterator of ids; a
    fatal answer in any of them stops them all and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as tg:
            for shard in range(n):
                tg.create_task(worker(shard))
    except ExceptionGroup as group:
        fatal_group = group.subgroup(FatalFetchError)
        if fatal_group is not None:
            raise fatal_group.exceptions[0] from None
        raise


REQUEST_PAGE = 1000
MAX_REQUEST_PAGES = 10_000
# one batch's request rows, all pages: held to be archived as one envelope (the gateway
# keeps up to 50,000 rows a batch, about 25 MiB)
MAX_REQUEST_ROWS_BYTES = 128 * 1024 * 1024


async def _request_rows(client: Client, batch_id: str, shard: int) -> tuple[list[Any], str | None]:
    """Every request row of a batch. The route pages with ``limit``/``offset`` and says
    neither ``has_more`` nor a total: ask for pages of 1,000 and stop at an empty page, or
    at a page shorter than an earlier one (a gateway that caps ``limit`` lower is still
    read to the end). (rows, None) or (partial rows, why not all)."""
    rows: list[Any] = []
    url = f"batches/{quote(batch_id, safe='')}/requests"
    largest = held = 0
    for _ in range(MAX_REQUEST_PAGES):
        params = {"limit": REQUEST_PAGE, "offset": len(rows)}
        try:
            resp = await client.get(url, params, shard=shard, max_bytes=4 * MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            return rows, str(exc)
        except (_Transient, httpx.HTTPError, TimeoutError, DeadlinePassed) as exc:
            return rows, _gave_up(client, exc)
        if (fatal := _fatal(resp)) is not None:
            raise fatal
        if resp.status != 200:
            return rows, f"HTTP {resp.status}: {_error_reason(resp)}"
        try:
            page = resp.json()
        except orjson.JSONDecodeError as exc:
            return rows, f"request rows are not JSON: {exc}"
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            return rows, "not a list object"
        owner = page.get("batch_id")
        if owner is not None and owner != batch_id:
            return rows, f"request rows of batch {redact(str(owner)[:200])!r}, not {batch_id!r}"
        held += len(resp.body)
        if held > MAX_REQUEST_ROWS_BYTES:
            return rows, f"more than {MAX_REQUEST_ROWS_BYTES:,} bytes of request rows"
        rows.extend(data)
        if not data or len(data) < largest:
            return rows, None
        largest = max(largest, len(data))
    return rows, f"more than {MAX_REQUEST_PAGES} pages of request rows"


async def fetch_requests_to_archive(
    wanted: dict[str, int | None], client: Client, archive: Path, report: FetchReport
) -> None:
    """Each final batch's request rows, archived as one ``requests`` envelope a batch (a
    whole set, or nothing: a batch whose pages did not all arrive is a fetch error and
    is asked again by the next run)."""
    pending = iter(sorted(wanted))
    with archive.open("ab") as fh:

        async def worker(shard: int) -> None:
            for batch_id in pending:
                rows, problem = await _request_rows(client, batch_id, shard)
                url = f"batches/{quote(batch_id, safe='')}/requests"
                if problem is not None:
                    report.error(batch_id, url, None, ROWS_REASON + problem, "requests")
                    continue
                body = orjson.dumps({"object": "list", "batch_id": batch_id, "data": rows})
                env = {
                    "batch_id": batch_id,
                    "kind": "requests",
                    "url": redact(f"{client.api.base_url}/{url}"),
                    "status": 200,
                    "fetched_at": datetime.now(UTC).isoformat(),
                    "body": redact_json(body.decode()),
                }
                fh.write(orjson.dumps(env) + b"\n")
                report.request_sets.append((batch_id, wanted[batch_id], len(rows)))

        await _in_parallel(worker, min(client.api.concurrency, len(wanted)))


def _gave_up(client: Client, exc: BaseException) -> str:
    """Why an id was not fetched: after every retry for a transient fault, at once else."""
    cause = str(exc) or type(exc).__name__
    if isinstance(exc, DeadlinePassed):
        return cause
    if isinstance(exc, TimeoutError):
        cause = f"no whole response within {client.api.timeout_s:g} s"
    if _is_transient(exc):
        return f"gave up after {client.api.max_retries + 1} attempts: {cause}"
    return cause


MAX_ARCHIVE_LINE_BYTES = 2 * MAX_REQUEST_ROWS_BYTES  # one envelope: a body, escaped


def read_archive(path: Path) -> Iterator[RawRecord]:
    """Replay an archive: each envelope's body becomes a raw record (source = archive).
    Read a block at a time: a line over MAX_ARCHIVE_LINE_BYTES is kept aside by its head,
    and one with no end (``/dev/zero``) stops the replay as unreadable."""
    source = str(path)
    with path.open("rb") as fh:
        try:
            yield from _archive_records(source, iter_lines(fh, limit=MAX_ARCHIVE_LINE_BYTES))
        except EndlessLine as exc:
            yield unreadable(source, str(exc))


def _archive_records(source: str, lines: Iterator[tuple[bytes, int, int]]) -> Iterator[RawRecord]:
    for n, (line, _, size) in enumerate(lines, start=1):
        if size > MAX_ARCHIVE_LINE_BYTES:
            text = kept_text(line.decode("utf-8", errors="backslashreplace"))
            limit = MAX_ARCHIVE_LINE_BYTES // 2**20
            yield RawRecord(
                source, n, text, None, f"archive line is {size:,} bytes, over {limit} MiB"
            )
            continue
        if not line.strip():
            continue
        try:
            env = orjson.loads(line)
            body = env["body"]
            if not isinstance(body, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            text = kept_text(line.decode("utf-8", errors="backslashreplace").strip())
            yield RawRecord(source, n, text, None, "archive line is not a response envelope")
            continue
        error = env.get("error")
        if isinstance(error, str):
            yield RawRecord(source, n, kept_text(body), None, error)
            continue
        kind = "requests" if env.get("kind") == "requests" else "batch"
        try:
            yield RawRecord(source, n, body, orjson.loads(body), kind=kind)
        except orjson.JSONDecodeError as exc:
            reason = f"response body is not JSON: {exc}"
            yield RawRecord(source, n, kept_text(body), None, reason)


MAX_IDS_FILE_BYTES = 64 * 1024 * 1024  # about 1.5 million ids
IDS_FILE_DEADLINE_S = 60.0  # a pipe (``<(cmd)``, a FIFO) must be written and closed by then


class IdsFileError(ConfigError):
    """The ids file cannot be read whole: too large, or a pipe nobody finishes."""


def _read_capped(path: Path, cap: int, deadline_s: float) -> bytes:
    """At most ``cap`` bytes (one more tells it is over), within ``deadline_s``: a FIFO
    with no writer blocks in ``open`` and ``/dev/zero`` never ends, so the read runs in a
    daemon thread the caller stops waiting for."""
    box: dict[str, Any] = {}

    def read() -> None:
        try:
            with path.open("rb") as fh:
                box["data"] = fh.read(cap + 1)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=read, name="ids-file", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise IdsFileError(
            f"{path}: nothing finished writing it within {deadline_s:g} s (a pipe with no"
            " writer, or one that never closes)"
        )
    if "error" in box:
        raise box["error"]
    data: bytes = box["data"]
    if len(data) > cap:
        raise IdsFileError(f"{path}: over {cap // 2**20} MiB of ids: split it into several runs")
    return data


def read_ids_file(path: Path) -> list[str]:
    """One id a line; blank lines and ``#`` comments are ignored. Bytes that are not UTF-8
    are kept visible (``\\xff``), so such an id is recorded as invalid, not guessed. At
    most MAX_IDS_FILE_BYTES, read within IDS_FILE_DEADLINE_S."""
    data = _read_capped(path, MAX_IDS_FILE_BYTES, IDS_FILE_DEADLINE_S)
    text = data.decode("utf-8", errors="backslashreplace").lstrip("\ufeff")
    ids = []
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            ids.append(item)
    return ids
