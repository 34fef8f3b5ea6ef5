"""A real HTTP server on loopback that plays the gateway, with scripted faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

TOKEN = "sk-test-SUPERSECRET-TOKEN-123"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str -> as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    truncate: bool = False  # announce a longer Content-Length, then hang up
    raw: Callable[[BaseHTTPRequestHandler], None] | None = None  # writes the whole response


NOT_IMPLEMENTED = Reply(
    501,
    {
        "error": "not_implemented",
        "reason": "feature_temporarily_disabled",
        "feature": "batches",
        "message": "Batch routes are disabled",
    },
)


@dataclass
class Gateway:
    batches: dict[str, Any] = field(default_factory=dict)
    scripts: dict[str, list[Reply]] = field(default_factory=dict)  # per path, consumed in order
    everything: Reply | None = None  # answer every request with this
    pages: list[dict[str, Any]] | None = None  # GET /v1/batches pages, by 'after'
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    refinalize: bool = False  # like the real gateway: every GET of a finished batch re-bills
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # request rows per batch
    gets: dict[str, int] = field(default_factory=dict)
    row_cap: int = 1000  # the most request rows one page gives, whatever limit asks
    # the gateway's reconciler captured every finished batch before our first GET: each
    # GET answers "already_billed" with finalized_at = the time of that GET
    reconciled: bool = False
    read_at: str = "2026-11-01T02:00:00.000Z"

    def reply_for(self, path: str, query: dict[str, list[str]], auth: str | None) -> Reply:
        with self.lock:
            self.requests.append((path, auth))
            if self.everything is not None:
                return self.everything
            if auth != f"Bearer {TOKEN}":
                return Reply(401, {"error": "unauthorised", "reason": "invalid_api_key"})
            script = self.scripts.get(path)
            if script:
                return script.pop(0)
        if path == "/v1/batches":
            return self._page(query)
        if path.endswith("/requests"):
            return self._request_rows(path.split("/")[-2], query)
        batch_id = path.rsplit("/", 1)[-1]
        if batch_id in self.batches:
            return Reply(
                200, self._finalized(batch_id) if self.refinalize else self.batches[batch_id]
            )
        return Reply(
            404,
            {"error": "not_found", "reason": "batch_not_found_or_not_owned", "batch_id": batch_id},
        )

    def _finalized(self, batch_id: str) -> dict[str, Any]:
        """The first GET of a finished batch captures it; every later GET answers charged
        false, "already_billed" and a newer finalized_at with the same money."""
        obj = orjson.loads(orjson.dumps(self.batches[batch_id]))
        bill = obj.get("billing")
        if obj.get("status") not in (
            "completed",
            "failed",
            "expired",
            "cancelled",
        ) or not isinstance(bill, dict):
            return obj
        with self.lock:
            n = self.gets[batch_id] = self.gets.get(batch_id, 0) + 1
        if self.reconciled:
            bill.update(charged=False, reason="already_billed", finalized_at=self.read_at)
        elif n > 1:
            bill.update(
                charged=False,
                reason="already_billed",
                finalized_at=f"2026-11-{10 + min(n, 18):02d}T02:15:00.000Z",
            )
        return obj

    def _request_rows(self, batch_id: str, query: dict[str, list[str]]) -> Reply:
        if batch_id not in self.batches:
            return Reply(404, {"error": "not_found", "reason": "batch_not_found_or_not_owned"})
        limit = max(1, min(self.row_cap, int(query.get("limit", ["100"])[0])))
        offset = int(query.get("offset", ["0"])[0])
        rows = self.rows.get(batch_id, [])[offset : offset + limit]
        return Reply(200, {"object": "list", "batch_id": batch_id, "data": rows})  # no has_more

    def _page(self, query: dict[str, list[str]]) -> Reply:
        if self.pages is None:  # the real route: no cursor, at most 100, newest update first
            aliases = {
                "pending": ("pending", "queued", "validating"),
                "in_progress": ("in_progress", "finalizing", "cancelling"),
            }
            known = {
                "validating",
                "queued",
                "pending",
                "in_progress",
                "finalizing",
                "cancelling",
                "completed",
                "failed",
                "expired",
                "cancelled",
                "submitting",
                "submission_unknown",
            }
            wanted = {
                v for s in query.get("status", []) if s in known for v in aliases.get(s, (s,))
            }
            data = [b for b in self.batches.values() if not wanted or b.get("status") in wanted]
            data.sort(key=lambda b: str(b.get("updated_at") or b.get("created_at")), reverse=True)
            limit = max(1, min(100, int(query.get("limit", ["20"])[0])))
            return Reply(200, {"object": "list", "data": data[:limit], "has_more": False})
        after = query.get("after", [None])[0]
        index = (
            0
            if after is None
            else next(i + 1 for i, p in enumerate(self.pages) if p["last_id"] == after)
        )
        return Reply(200, self.pages[index])


def _handler(gw: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            reply = gw.reply_for(
                parsed.path, parse_qs(parsed.query), self.headers.get("Authorization")
            )
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.raw is not None:
                try:
                    reply.raw(self)
                except OSError:
                    pass  # the client gave up on us: expected for endless bodies
                self.close_connection = True
                return
            body = reply.body
            raw = (
                body
                if isinstance(body, bytes)
                else body.encode()
                if isinstance(body, str)
                else orjson.dumps(body)
            )
            try:
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                if reply.truncate:
                    self.send_header("Content-Length", str(len(raw) + 500))
                    self.end_headers()
                    self.wfile.write(raw[: len(raw) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except OSError:
                pass

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (cancelled on a fatal answer) are expected


@contextmanager
def serve(gw: Gateway) -> Iterator[Gateway]:
    server = _QuietServer(("127.0.0.1", 0), _handler(gw))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    gw.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield gw
    finally:
        server.shutdown()
        server.server_close()
