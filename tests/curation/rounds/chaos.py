"""A webhook relay that loses, duplicates, reorders and restarts, between Label Studio and the
platform: what an unreliable network and a platform restart look like from Label Studio."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from curation.labelstudio import server


@dataclass(frozen=True)
class _Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class ChaosRelay:
    def __init__(
        self,
        target: str,
        *,
        seed: int,
        drop: float = 0.3,
        hold: float = 0.2,
        duplicate: float = 0.15,
    ) -> None:
        self.target = target.rstrip("/")
        self.rng = random.Random(seed)
        self.drop, self.hold, self.duplicate = drop, hold, duplicate
        self.port = server.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[_Delivery] = []
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _forward(self, item: _Delivery) -> None:
        httpx.post(self.target + item.path, content=item.body, headers=item.headers, timeout=5)
        self.counts["forwarded"] += 1

    def _handle(self, item: _Delivery) -> None:
        with self._lock:
            self.counts["received"] += 1
            roll = self.rng.random()
            if roll < self.drop:
                self.counts["dropped"] += 1
                return
            if roll < self.drop + self.hold:
                self.held.append(item)  # delivered later, after newer events
                self.counts["held"] += 1
            else:
                self._forward(item)
            if self.rng.random() < self.duplicate:
                self.held.append(item)
                self.counts["duplicated"] += 1
            if self.held and self.rng.random() < 0.3:
                self._forward(self.held.pop(self.rng.randrange(len(self.held))))

    def start(self) -> ChaosRelay:
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                keep = {k: v for k, v in self.headers.items() if k.lower().startswith("x-")}
                keep["Content-Type"] = "application/json"
                relay._handle(_Delivery(self.path, keep, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """The platform's receiver is down: Label Studio's posts fail and are never retried."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.counts["restarts"] += 1

    def flush(self) -> None:
        with self._lock:
            self.rng.shuffle(self.held)
            while self.held:
                self._forward(self.held.pop())
