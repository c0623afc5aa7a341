"""Fixtures shared by the whole suite: users per role, API clients, worker environments."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from curation.roles import ADMIN, ANNOTATOR, DATA_LEAD, ROLES

ROOT = Path(__file__).resolve().parent.parent


def _make_user(django_user_model, role: str):
    user = django_user_model.objects.create_user(
        username=f"{role}-user", password="pw-for-tests-only", is_staff=role != ANNOTATOR
    )
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def annotator(db, django_user_model):
    return _make_user(django_user_model, ANNOTATOR)


@pytest.fixture
def data_lead(db, django_user_model):
    return _make_user(django_user_model, DATA_LEAD)


@pytest.fixture
def platform_admin(db, django_user_model):
    return _make_user(django_user_model, ADMIN)


@pytest.fixture(params=ROLES)
def role_user(request, django_user_model, db):
    return request.param, _make_user(django_user_model, request.param)


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a worker/scheduler subprocess that must use the test database."""
    from django.db import connection

    env = dict(os.environ)
    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{settings_dict['NAME']}"
    else:
        user = settings_dict.get("USER") or ""
        password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
        auth = f"{user}{password}@" if user else ""
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        env["DATABASE_URL"] = f"postgres://{auth}{host}{port}/{settings_dict['NAME']}"
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


PYTHON = sys.executable
