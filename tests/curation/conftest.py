"""One real Label Studio server per test session (started through `curation.labelstudio.server`),
shared by the Django-free client tests and the round tests.

Skipped only where `.venv-labelstudio` is absent and CI is not set; in CI a missing server is an
error, because the setup script installs it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from curation.labelstudio import server
from curation.labelstudio.client import LabelStudioClient

ROOT = Path(__file__).resolve().parents[2]


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
        token=secrets.token_hex(20),
        run_dir=run_dir,
    )
    try:
        server.wait_healthy(handle.url, timeout=240, handle=handle)
        yield handle
    finally:
        server.stop(ROOT, run_dir=run_dir)


@pytest.fixture(scope="session")
def ls_client(ls_server: server.ServerHandle) -> LabelStudioClient:
    return LabelStudioClient(ls_server.url, ls_server.token)
