"""A URL manifest against real local HTTP servers: refused by default, fetched when allowed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.models import Image, Refusal
from tests.curation.ingest_django.conftest import ingest_json, rgba_sticker
from tests.curation.ingestion.factories import encode

FILES = {"/a.png": encode(rgba_sticker(21), "PNG"), "/b.png": encode(rgba_sticker(22), "PNG")}


class _Handler(BaseHTTPRequestHandler):
    target = ""
    served: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.served.append(self.path)
        if self.path == "/moved.png":
            self.send_response(302)
            self.send_header("Location", f"{self.target}/b.png")
            self.end_headers()
            return
        body = FILES.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


def _serve(host: str) -> Iterator[str]:
    httpd = ThreadingHTTPServer((host, 0), _Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://{host}:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def servers(tmp_path):
    """The files on 127.0.0.1; a redirect to them from 127.0.0.2; a manifest naming both."""
    _Handler.served = []
    local, other = _serve("127.0.0.1"), _serve("127.0.0.2")
    direct, redirector = next(local), next(other)
    _Handler.target = direct
    manifest = tmp_path / "urls.csv"
    manifest.write_text(f"url\n{direct}/a.png\n{redirector}/moved.png\n")
    yield direct, redirector, manifest
    for server in (local, other):
        next(server, None)


@pytest.mark.django_db
def test_loopback_urls_and_redirects_to_them_are_refused_by_default(servers):
    direct, redirector, manifest = servers
    summary = ingest_json(str(manifest), "--source", "urls")
    assert summary["counts"]["quarantined"] == 2 and summary["counts"]["ingested"] == 0
    reasons = dict(Refusal.objects.values_list("origin", "reason"))
    assert "127.0.0.1 is a loopback address" in reasons[f"{direct}/a.png"]
    assert "127.0.0.2 is a loopback address" in reasons[f"{redirector}/moved.png"]
    assert "INGEST_URL_ALLOW_NETWORKS" in reasons[f"{direct}/a.png"]
    assert _Handler.served == [] and not Image.objects.exists()


@pytest.mark.django_db
def test_a_redirect_out_of_the_allowed_network_is_refused(servers, settings):
    direct, redirector, manifest = servers
    settings.INGEST_URL_ALLOW_NETWORKS = ["127.0.0.2/32"]
    summary = ingest_json(str(manifest), "--source", "urls")
    assert summary["counts"]["quarantined"] == 2
    reason = Refusal.objects.get(origin=f"{redirector}/moved.png").reason
    assert reason.startswith(f"redirect to {direct}/b.png: refused")
    assert _Handler.served == ["/moved.png"]  # the allowed hop only


@pytest.mark.django_db
def test_allowed_networks_are_fetched_and_ingested(servers, settings):
    _, _, manifest = servers
    settings.INGEST_URL_ALLOW_NETWORKS = ["127.0.0.0/8"]
    summary = ingest_json(str(manifest), "--source", "urls")
    assert summary["counts"]["ingested"] == 2 and summary["counts"]["quarantined"] == 0
    assert sorted(_Handler.served) == ["/a.png", "/b.png", "/moved.png"]
    assert Image.objects.count() == 2
