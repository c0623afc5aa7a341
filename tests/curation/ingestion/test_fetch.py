"""URL fetching against real local HTTP servers: safe by default, allowed only where configured."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.ingestion.fetch import FetchError, FetchOptions, blocked_reason, fetch_url
from curation.ingestion.sources import SourceError, iter_items
from tests.curation.ingestion.factories import encode, sticker_rgba

PNG = encode(sticker_rgba(3, 32), "PNG")
LOOPBACK = ("127.0.0.0/8",)
FAST = FetchOptions(timeout_s=5, retries=2, backoff_s=0, max_bytes=20_000, allow_networks=LOOPBACK)


class _Handler(BaseHTTPRequestHandler):
    hits: dict[str, int] = {}
    hosts: list[str] = []
    redirect_to = ""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        hits = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        self.hosts.append(self.headers.get("Host", ""))
        if self.path == "/ok.png":
            self._send(200, PNG)
        elif self.path == "/flaky.png":
            self._send(503 if hits == 1 else 200, b"try later" if hits == 1 else PNG)
        elif self.path == "/huge-declared.png":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
        elif self.path == "/huge-streamed.png":
            self.send_response(200)
            self.end_headers()  # no Content-Length: only the streamed count can stop it
            self.wfile.write(b"x" * 50_000)
        elif self.path == "/drip.png":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self._drip(b"x")
        elif self.path == "/drip-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self._drip(b"X-Slow: y\r\n")
        elif self.path.startswith("/redirect-to-"):
            target = {
                "file": "file:///etc/passwd",
                "ftp": "ftp://127.0.0.1/x.png",
                "loop": "/redirect-to-loop",
                "other": self.redirect_to,
            }[self.path.rsplit("-", 1)[1]]
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
        else:
            self._send(404, b"not here")

    def _drip(self, piece: bytes) -> None:
        try:
            for _ in range(200):
                self.wfile.write(piece)
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass  # the client hung up: what the test wants

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(host: str) -> Iterator[str]:
    httpd = ThreadingHTTPServer((host, 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://{host}:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server():
    _Handler.hits, _Handler.hosts = {}, []
    yield from _serve("127.0.0.1")


@pytest.fixture
def mirror():
    """A second server on another loopback address, to allow one and not the other."""
    yield from _serve("127.0.0.2")


def test_ok_404_retry_and_size_caps(server):
    assert fetch_url(f"{server}/ok.png", FAST) == PNG
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_url(f"{server}/missing.png", FAST)
    assert _Handler.hits["/missing.png"] == 1  # a 404 is not retried
    assert fetch_url(f"{server}/flaky.png", FAST) == PNG
    assert _Handler.hits["/flaky.png"] == 2
    with pytest.raises(FetchError, match="URL content is 953.7 MiB, above the 20,000 bytes limit"):
        fetch_url(f"{server}/huge-declared.png", FAST)
    with pytest.raises(FetchError, match="exceeds the .* limit"):
        fetch_url(f"{server}/huge-streamed.png", FAST)
    with pytest.raises(FetchError, match="redirect to file:///etc/passwd: only http and https"):
        fetch_url(f"{server}/redirect-to-file", FAST)
    with pytest.raises(FetchError, match="redirect to ftp://.*: only http and https"):
        fetch_url(f"{server}/redirect-to-ftp", FAST)
    with pytest.raises(FetchError, match="more than 5 redirects"):
        fetch_url(f"{server}/redirect-to-loop", FAST)


def test_loopback_private_and_metadata_addresses_are_refused_by_default(server):
    with pytest.raises(
        FetchError, match=r"refused, 127\.0\.0\.1 resolves to 127\.0\.0\.1 is a loopback"
    ):
        fetch_url(f"{server}/ok.png", FetchOptions(retries=0))
    assert _Handler.hits == {}  # not even connected
    for address, kind in [
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.100.100.200", "not publicly routable"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fd00:ec2::254", "private"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
    ]:
        assert kind in (blocked_reason(address) or ""), address
    assert blocked_reason("93.184.215.14") is None
    assert blocked_reason("10.1.2.3", ["10.0.0.0/8"]) is None


def test_every_redirect_hop_is_checked(server, mirror):
    _Handler.redirect_to = f"{server}/ok.png"
    only_mirror = FetchOptions(retries=0, allow_networks=("127.0.0.2/32",))
    with pytest.raises(FetchError, match=r"redirect to http://127\.0\.0\.1:\d+/ok\.png: refused"):
        fetch_url(f"{mirror}/redirect-to-other", only_mirror)
    assert "/ok.png" not in _Handler.hits
    assert fetch_url(f"{mirror}/redirect-to-other", FAST) == PNG


def test_connects_to_the_checked_address_and_keeps_the_name(server):
    port = server.rsplit(":", 1)[1]
    calls: list[str] = []

    def resolver(host: str, _port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    url = f"http://mirror.test:{port}/ok.png"
    assert fetch_url(url, FAST, resolver=resolver) == PNG
    assert calls == ["mirror.test"]  # resolved once; the connection used that address
    assert _Handler.hosts[-1] == f"mirror.test:{port}"


def test_proxy_variables_are_ignored(server, monkeypatch):
    with socket.socket() as probe:  # a proxy that would refuse every connection
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert fetch_url(f"{server}/ok.png", FAST) == PNG


def test_slow_servers_are_cut_at_the_deadline(server):
    quick = FetchOptions(timeout_s=5, deadline_s=1.0, retries=0, allow_networks=LOOPBACK)
    for path in ("/drip.png", "/drip-headers"):
        started = time.monotonic()
        with pytest.raises(FetchError, match="longer than 1 s"):
            fetch_url(f"{server}{path}", quick)
        # Bytes keep arriving well inside the socket timeout; only the deadline stops them.
        assert time.monotonic() - started < 4.0, path


def test_unreachable_host_fails_after_retries():
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="download failed after 3 attempts: .*refused"):
        fetch_url(f"http://127.0.0.1:{port}/x.png", FAST)


def test_url_manifest_refusals_name_the_reason(server, tmp_path):
    manifest = tmp_path / "urls.csv"
    manifest.write_text(f"url,caption\n{server}/ok.png,hello\n{server}/gone.png,\n")
    items = list(iter_items([manifest], fetch=FAST))
    assert items[0].read() == PNG and items[0].caption == "hello"
    with pytest.raises(SourceError, match="HTTP 404 Not Found"):
        items[1].read()
    [default] = list(iter_items([f"{server}/ok.png"]))
    with pytest.raises(SourceError, match="loopback address"):
        default.read()
