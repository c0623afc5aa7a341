"""The WSGI/ASGI entry points default to production, which refuses debug and weak secrets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

GOOD_KEY = "k" * 20 + "Qz9_-x" + "p" * 30


def _start(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DJANGO_DEBUG", "ALLOWED_HOSTS")
    }
    return subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        env={**clean, "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
def test_entry_points_without_settings_refuse_to_start_without_a_secret(module):
    started = _start(module, ALLOWED_HOSTS="platform.example")
    assert started.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is empty" in started.stderr


def test_production_refuses_debug_and_weak_keys_and_starts_with_a_real_one():
    hosts = {"ALLOWED_HOSTS": "platform.example"}
    debug = _start("config.wsgi", SECRET_KEY=GOOD_KEY, DJANGO_DEBUG="true", **hosts)
    assert "DJANGO_DEBUG is on with the production settings" in debug.stderr
    default = _start(
        "config.wsgi", SECRET_KEY="insecure-dev-key-change-me-in-production-0123456789", **hosts
    )
    assert "SECRET_KEY is the development default" in default.stderr
    short = _start("config.wsgi", SECRET_KEY="hunter2", **hosts)
    assert "shorter than 50 characters" in short.stderr
    ok = _start("config.wsgi", SECRET_KEY=GOOD_KEY, **hosts)
    assert ok.returncode == 0, ok.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    """`manage.py check --deploy` reports nothing: the guide's bar, and warnings such as the API
    schema's enum-name collisions (drf-spectacular W001) come back whenever a model adds a
    choice set under a name another already uses."""
    clean = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG",)}
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": GOOD_KEY,
            "ALLOWED_HOSTS": "platform.example",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
            "LOG_LEVEL": "WARNING",
        },
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert checked.returncode == 0, checked.stderr
    assert "System check identified no issues" in checked.stdout, checked.stdout + checked.stderr
