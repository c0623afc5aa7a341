"""Fixtures shared by the whole suite: users per role, API clients, worker environments."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from curation.labelstudio import server
from curation.labelstudio.client import LabelStudioClient
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


@pytest.fixture
def no_dispatch(monkeypatch) -> list[int]:
    """Jobs are run by the test (execute_job), not handed to a task backend; returns the ids
    that would have been dispatched."""
    from curation.services import jobs as job_services

    sent: list[int] = []
    monkeypatch.setattr(job_services, "dispatch", lambda pk, run_after=None: sent.append(pk))
    return sent


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
    from django.conf import settings

    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    # The test process made its own media folder: the worker must read and write the same one.
    env["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    env["ARTIFACTS_ROOT"] = str(settings.ARTIFACTS_ROOT)
    for name in (
        "LABEL_STUDIO_URL",
        "LABEL_STUDIO_API_KEY",
        "LABEL_STUDIO_WEBHOOK_SECRET",
        "PLATFORM_PUBLIC_URL",
    ):
        env[name] = str(getattr(settings, name))
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


PYTHON = sys.executable


@pytest.fixture
def clean_redis_queues():
    """Empty the tests' own Redis database (settings.test, never a demo's) around a test."""
    import django_rq

    connection = django_rq.get_connection("default")
    connection.flushdb()
    yield
    connection.flushdb()


# One real Label Studio server per test session, shared by the client, round and loop tests.
# Skipped only where .venv-labelstudio is absent and CI is not set; in CI it is an error.
@pytest.fixture(scope="session")
def ls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.ServerHandle]:
    if server.installed_version(ROOT) is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {ROOT / server.VENV_NAME} holds no label-studio")
        pytest.skip(f"{server.VENV_NAME} is not installed (server.ensure_installed creates it)")
    run_dir = tmp_path_factory.mktemp("labelstudio")
    handle = server.start(
        ROOT,
        server.free_port(),
        run_dir / "data",
        password=secrets.token_urlsafe(12),
        run_dir=run_dir,
    )
    try:
        server.wait_healthy(handle.url, timeout=240, handle=handle)
        # `token` becomes the service account's personal access token; legacy tokens are off.
        yield server.provision(handle)
    finally:
        server.stop(ROOT, run_dir=run_dir)


@pytest.fixture(scope="session")
def ls_client(ls_server: server.ServerHandle) -> LabelStudioClient:
    return LabelStudioClient(ls_server.url, ls_server.token)


@pytest.fixture(scope="session")
def toy_world_small() -> dict:
    """The small toy world, built once and cached by its settings and code version under
    TOY_WORLD_TEST_DIR (default var/test-toy-world): the SQLite and PostgreSQL passes, and a
    second run, reuse it instead of spending CPU minutes on the same bytes."""
    import torch

    from training.engine.toy_world.build import ToyWorldSettings
    from training.engine.toy_world.cache import cached_toy_world

    root = Path(os.environ.get("TOY_WORLD_TEST_DIR") or ROOT / "var" / "test-toy-world")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return cached_toy_world(root, ToyWorldSettings.small(), log=lambda _: None)
    finally:
        torch.set_num_threads(previous)
