"""Fetch batch objects from the gateway API into a raw archive (JSONL on disk).

Every response body is archived before any transformation, one envelope a line
(``{"batch_id", "url", "status", "fetched_at", "body"}``, credentials redacted), so a load
can be replayed with ``billing run --replay FILE`` without refetching.

Faults: 429 waits ``Retry-After``; 5xx, timeouts, connection errors and truncated bodies
retry with exponential backoff and jitter (tenacity), a bounded number of times. 404 is
recorded and the run goes on. 401, 403 and 501 stop the run (:class:`FatalFetchError`).
The token only ever travels in the ``Authorization`` header; it is never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from pipeline.config import ApiConfig
from pipeline.extract.files import RawRecord
from pipeline.redaction import redact

log = logging.getLogger(__name__)

MAX_LIST_PAGES = 10_000
POOL_SHARD_SIZE = 8


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
    errors: list[tuple[str, str, int | None, str]] = field(default_factory=list)

    @property
    def not_found(self) -> list[str]:
        return [e[0] for e in self.errors if e[2] == 404]


def _error_reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("reason") or err.get("type") or err)
    reason = body.get("reason") if isinstance(body, dict) else None
    return f"{err}: {reason}" if reason else str(err or body)[:200]


def _fatal(resp: httpx.Response) -> FatalFetchError | None:
    reason = _error_reason(resp)
    if resp.status_code == 401:
        return FatalFetchError(
            f"the gateway rejected the API token (401 {reason}); check PHASEO_API_KEY"
        )
    if resp.status_code == 403:
        return FatalFetchError(
            f"the API token may not use the batch API (403 {reason}); "
            "ask for the batch feature to be enabled on this key"
        )
    if resp.status_code == 501:
        return FatalFetchError(
            "the gateway's batch routes are disabled (501 not_implemented: "
            f"{reason.removeprefix('not_implemented: ')}); "
            "nothing was fetched or committed, try again once the gateway enables them"
        )
    return None


def _retry_after(resp: httpx.Response, cap: float) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), cap))
    except ValueError:
        return None


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _Transient | httpx.TimeoutException | httpx.TransportError)


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
                },
                timeout=httpx.Timeout(api.timeout_s),
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
                transport=transport,
                event_hooks={"request": [self._log_request]},
            )
            for _ in range(shards)
        ]

    async def _log_request(self, request: httpx.Request) -> None:
        log.debug("GET %s (authorization: Bearer [REDACTED])", request.url)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for http in self._shards:
            await http.aclose()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return exc.retry_after
        return float(self._backoff(state))

    async def get(
        self, path: str, params: dict[str, Any] | None = None, *, shard: int = 0
    ) -> httpx.Response:
        """GET with retries on transient faults; returns the final non-transient response."""

        async def attempt() -> httpx.Response:
            resp = await self._shards[shard % len(self._shards)].get(path, params=params)
            await resp.aread()  # a truncated body raises here and is retried
            if resp.status_code == 429 or (resp.status_code >= 500 and resp.status_code != 501):
                raise _Transient(resp.status_code, _retry_after(resp, self.api.max_retry_after_s))
            return resp

        retrying = AsyncRetrying(
            retry=retry_if_exception(_is_transient),
            stop=stop_after_attempt(self.api.max_retries + 1),
            wait=self._wait,
            reraise=True,
            before_sleep=lambda s: log.info(
                "retrying %s after %s", path, s.outcome.exception() if s.outcome else "?"
            ),
        )
        async for try_ in retrying:
            with try_:
                return await attempt()
        raise AssertionError("unreachable")  # pragma: no cover


async def list_ids(client: Client, statuses: Iterable[str] = ()) -> list[str]:
    """Ids from ``GET /batches``, following ``has_more``/``after`` while it makes progress."""
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
            resp = await client.get("batches", params)
            if (fatal := _fatal(resp)) is not None:
                raise fatal
            if resp.status_code != 200:
                raise FatalFetchError(
                    f"listing batches failed: HTTP {resp.status_code} {_error_reason(resp)}"
                )
            page = resp.json()
            data = page.get("data") or []
            ids.extend(str(item["id"]) for item in data if isinstance(item, dict) and "id" in item)
            last = page.get("last_id") or (data[-1].get("id") if data else None)
            if not page.get("has_more") or not data or not last or last == after:
                break  # no cursor, or a cursor that does not move: stop safely
            after = last
    return ids


def _envelope(batch_id: str, resp: httpx.Response) -> bytes:
    return orjson.dumps(
        {
            "batch_id": batch_id,
            "url": str(resp.request.url),
            "status": resp.status_code,
            "fetched_at": datetime.now(UTC).isoformat(),
            "body": redact(resp.text),
        }
    )


async def fetch_to_archive(
    ids: Iterable[str],
    client: Client,
    archive: Path,
    progress: Callable[[int], None] | None = None,
) -> FetchReport:
    """Fetch every id (bounded concurrency) and archive each 200 body as it arrives."""
    unique = list(dict.fromkeys(i.strip() for i in ids if i.strip()))
    report = FetchReport(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    pending = iter(unique)  # shared by the workers: bounded concurrency, no task per id
    with archive.open("wb") as fh:
        archive.chmod(0o600)

        async def one(batch_id: str, shard: int) -> None:
            url = f"batches/{batch_id}"
            try:
                resp = await client.get(url, shard=shard)
            except (_Transient, httpx.HTTPError) as exc:
                reason = f"gave up after {client.api.max_retries + 1} attempts: {exc}"
                status = exc.status if isinstance(exc, _Transient) else None
                report.errors.append((batch_id, url, status, reason))
                log.warning("could not fetch %s: %s", batch_id, reason)
                return
            if (fatal := _fatal(resp)) is not None:
                raise fatal
            if resp.status_code == 200:
                fh.write(_envelope(batch_id, resp) + b"\n")
                report.fetched += 1
            else:
                reason = _error_reason(resp)
                if resp.status_code == 404:
                    reason = f"batch not found ({reason})"
                report.errors.append((batch_id, url, resp.status_code, reason))

        async def worker(shard: int) -> None:
            for batch_id in pending:
                await one(batch_id, shard)
                if progress is not None:
                    progress(1)

        try:
            async with asyncio.TaskGroup() as tg:
                for n in range(min(client.api.concurrency, len(unique))):
                    tg.create_task(worker(n))
        except ExceptionGroup as group:
            fatal_group = group.subgroup(FatalFetchError)
            if fatal_group is not None:
                raise fatal_group.exceptions[0] from None
            raise
    return report


def read_archive(path: Path) -> Iterator[RawRecord]:
    """Replay an archive: each envelope's body becomes a raw record (source = archive)."""
    source = str(path)
    with path.open("rb") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                env = orjson.loads(line)
                body = env["body"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                text = line.decode("utf-8", errors="replace").strip()
                yield RawRecord(source, n, text, None, "archive line is not a response envelope")
                continue
            try:
                yield RawRecord(source, n, body, orjson.loads(body))
            except orjson.JSONDecodeError as exc:
                yield RawRecord(source, n, body, None, f"response body is not JSON: {exc}")


def read_ids_file(path: Path) -> list[str]:
    """One id a line; blank lines and ``#`` comments are ignored."""
    ids = []
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            ids.append(text)
    return ids
