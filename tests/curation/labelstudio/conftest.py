"""Fixtures of the Django-free client tests; the session server (`ls_server`, `ls_client`) lives
in tests/conftest.py, shared with the round and loop tests."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from curation.labelstudio.receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[3]
SECRET_HEADER = "X-Platform-Webhook-Secret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET_HEADER, secrets.token_urlsafe(16)) as hook:
        yield hook
