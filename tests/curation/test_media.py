"""Media are served only through signed, expiring URLs."""

from __future__ import annotations

import pytest
from django.core import signing

from curation.media import signed_path
from curation.services.storage import content_key, store_bytes


@pytest.mark.django_db
def test_signed_url_serves_content_addressed_file(client, settings):
    key = store_bytes(b"\x89PNG fake bytes", "png")
    assert key == content_key(
        __import__("hashlib").sha256(b"\x89PNG fake bytes").hexdigest(), "png"
    )
    assert store_bytes(b"\x89PNG fake bytes", "png") == key  # idempotent
    response = client.get(signed_path(key))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"\x89PNG fake bytes"
    assert response["Access-Control-Allow-Origin"] == settings.LABEL_STUDIO_URL.rstrip("/")
    assert response["Content-Type"] == "image/png"


@pytest.mark.django_db
def test_tampered_or_expired_links_are_refused(client, settings):
    key = store_bytes(b"data", "png")
    path = signed_path(key)
    assert client.get(path[:-3] + "abc").status_code == 404
    assert client.get(signed_path(key, max_age=-1)).status_code == 404  # already expired
    assert client.get(signed_path(key, max_age=86400 * 60)).status_code == 200
    forged = signing.TimestampSigner(salt="other").sign_object(key)
    assert client.get(f"/media/s/{forged}").status_code == 404


def test_no_public_media_route(client):
    assert client.get("/media/images/aa/bb/x.png").status_code == 404
