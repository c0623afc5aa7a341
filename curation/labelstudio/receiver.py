"""A tiny in-process webhook receiver (http.server in a thread) for tests and benchmarks.

It behaves like the platform's endpoint where it matters to Label Studio: it checks the static
secret header (403 otherwise), keeps the raw body before anything else, and answers at once
(Label Studio waits for each POST with a 1 s timeout inside the annotator's request).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time(), comparable with the sender's clock on this machine
    accepted: bool


class WebhookReceiver:
    def __init__(self, secret_header: str, secret: str, host: str = "127.0.0.1") -> None:
        self.secret_header = secret_header
        self.secret = secret
        self.received: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                given = self.headers.get(receiver.secret_header) or ""
                accepted = hmac.compare_digest(given.encode(), receiver.secret.encode())
                receiver._record(
                    Received(self.path, dict(self.headers.items()), body, time.time(), accepted)
                )
                self.send_response(200 if accepted else 403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output clean

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://{host}:{self._server.server_address[1]}/labelstudio/webhook"

    def _record(self, item: Received) -> None:
        with self._changed:
            self.received.append(item)
            self._changed.notify_all()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> bool:
        """Block until `predicate(received)` holds (woken by each arrival), or the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self.received), timeout=timeout)
