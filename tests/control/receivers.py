"""Tiny real HTTP servers on 127.0.0.1 for webhook tests (no mocks)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from abstats.control.signing import DELIVERY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Receiver:
    """Answers 500 to the first ``fail_first`` POSTs, then 200; a delivery id already processed
    is acknowledged but not processed again (what a careful receiver does)."""

    secret: str | None = None
    fail_first: int = 0
    attempts: int = 0
    processed: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    seen_deliveries: set[str] = field(default_factory=set)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        with self.lock:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return 500
            if self.secret is not None and not verify(
                body, self.secret, headers.get(SIGNATURE_HEADER.lower(), "")
            ):
                self.bad_signatures += 1
                return 401
            delivery = headers.get(DELIVERY_HEADER.lower(), "")
            if delivery and delivery in self.seen_deliveries:
                return 200
            self.seen_deliveries.add(delivery)
            self.processed.append(json.loads(body))
            return 200


@contextmanager
def serve(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = receiver.handle(body, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
