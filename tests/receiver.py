"""A real HTTP server on loopback that receives notifications, with scripted answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import orjson

from tests.gateway import _QuietServer  # the gateway's: daemon threads, no tracebacks


@dataclass
class Answer:
    status: int = 200
    delay_s: float = 0.0  # sleep before answering (a hanging receiver)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Receiver:
    script: list[Answer] = field(default_factory=list)  # consumed in order, then 200s
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    stop: threading.Event = field(default_factory=threading.Event)

    def bodies(self, path: str | None = None) -> list[Any]:
        with self.lock:
            return [orjson.loads(b) for p, _, b in self.posts if path is None or p == path]


def _handler(rx: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with rx.lock:
                rx.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                answer = rx.script.pop(0) if rx.script else Answer()
            if answer.delay_s:
                rx.stop.wait(answer.delay_s)  # ends early when the test is over
            try:
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass

    return Handler


@contextmanager
def receive(rx: Receiver | None = None) -> Iterator[Receiver]:
    rx = rx or Receiver()
    server = _QuietServer(("127.0.0.1", 0), _handler(rx))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rx.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rx
    finally:
        rx.stop.set()
        server.shutdown()
        server.server_close()
