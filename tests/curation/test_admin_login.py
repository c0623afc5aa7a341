"""The admin's login page tells an annotator where they rate instead of "wrong password"."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _login(client, username: str, password: str) -> str:
    response = client.post(
        reverse("admin:login"), {"username": username, "password": password, "next": "/admin/"}
    )
    assert response.status_code == 200  # the form again, never a redirect into the admin
    return response.content.decode()


def test_annotator_is_sent_to_label_studio(client, settings, annotator):
    settings.LABEL_STUDIO_URL = "http://labelstudio.example:8089"
    annotator.email = "ann@example.com"
    annotator.save()
    page = _login(client, "annotator-user", "pw-for-tests-only")
    assert "Annotators rate in Label Studio" in page
    assert "http://labelstudio.example:8089/user/login/" in page
    assert "with the e-mail ann@example.com" in page
    # A wrong password (or the Label Studio password, typed here) gets the address, not the e-mail.
    page = _login(client, "ann@example.com", "not-the-password")
    assert "http://labelstudio.example:8089/user/login/" in page
    assert "ann@example.com" not in page.replace('value="ann@example.com"', "")


def test_others_still_get_the_usual_refusal(client, data_lead):
    page = _login(client, "data_lead-user", "wrong")
    assert "Label Studio" not in page and "correct username and password" in page
    page = _login(client, "nobody", "wrong")
    assert "Label Studio" not in page
