"""The webhook receiver refuses anything without the shared secret and keeps raw payloads."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from curation.api.webhooks import SECRET_HEADER
from curation.models import WebhookEvent


@pytest.fixture
def secret(settings):
    settings.LABEL_STUDIO_WEBHOOK_SECRET = "s3cret"
    return "s3cret"


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: ""}])
def test_without_the_secret_is_403_and_nothing_stored(client, secret, headers):
    response = client.post(
        reverse("labelstudio-webhook"),
        data=json.dumps({"action": "ANNOTATION_CREATED"}),
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == 403
    assert WebhookEvent.objects.count() == 0


@pytest.mark.django_db
def test_no_configured_secret_refuses_everything(client, settings):
    settings.LABEL_STUDIO_WEBHOOK_SECRET = ""
    response = client.post(
        reverse("labelstudio-webhook"), data="{}", content_type="application/json"
    )
    assert response.status_code == 403


@pytest.mark.django_db
def test_raw_payload_is_stored_even_when_unparseable(client, secret):
    good = {"action": "ANNOTATION_CREATED", "annotation": {"id": 7}}
    response = client.post(
        reverse("labelstudio-webhook"),
        data=json.dumps(good),
        content_type="application/json",
        headers={SECRET_HEADER: secret},
    )
    assert response.status_code == 200
    bad = client.post(
        reverse("labelstudio-webhook"),
        data=b"{not json",
        content_type="application/json",
        headers={SECRET_HEADER: secret},
    )
    assert bad.status_code == 200
    events = list(WebhookEvent.objects.order_by("id"))
    assert events[0].action == "ANNOTATION_CREATED" and events[0].payload == good
    assert events[1].payload == {"unparsed_body": "{not json"}


@pytest.mark.django_db
def test_get_is_not_allowed(client, secret):
    assert (
        client.get(reverse("labelstudio-webhook"), headers={SECRET_HEADER: secret}).status_code
        == 405
    )
