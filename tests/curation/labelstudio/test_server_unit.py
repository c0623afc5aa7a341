"""Server management without starting Label Studio: environment, state files, refusals."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import pytest

from curation.labelstudio import server


def test_child_env_scrubs_bare_and_platform_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USERNAME", "someone")
    monkeypatch.setenv("PASSWORD", "leaked")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "config.settings.test")
    monkeypatch.setenv("DATABASE_URL", "postgres://platform")
    env = server.child_env(data_dir=tmp_path, username="a@b.c", password="pw")
    for leaked in ("USERNAME", "PASSWORD", "DJANGO_SETTINGS_MODULE", "DATABASE_URL"):
        assert leaked not in env
    assert env["LABEL_STUDIO_BASE_DATA_DIR"] == str(tmp_path)
    assert env["LABEL_STUDIO_USERNAME"] == "a@b.c"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "false"
    assert "LABEL_STUDIO_USER_TOKEN" not in env  # no legacy token is chosen for Label Studio
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
    # SSRF protection stays on: every default-banned network is still banned (Label Studio's
    # own list) except the one address the platform's webhooks need.
    assert env["SSRF_PROTECTION_ENABLED"] == "true"
    assert env["USE_DEFAULT_BANNED_SUBNETS"] == "false"
    banned = [ipaddress.ip_network(b) for b in env["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]

    def blocked(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip.version == net.version and ip in net for net in banned)

    assert not blocked("127.0.0.1")
    for address in ("127.0.0.2", "10.0.0.1", "169.254.169.254", "192.168.1.1", "::1", "fc00::1"):
        assert blocked(address), address
    other = server.child_env(
        data_dir=tmp_path,
        username="a@b.c",
        password="pw",
        webhook_addresses=["10.1.2.3"],
    )
    assert "127.0.0.0/8" in other["USER_ADDITIONAL_BANNED_SUBNETS"].split(",")
    assert env["LATEST_VERSION_CHECK"] == "false"
    # The secret key is fixed per data dir: the same across restarts, private to the dir.
    again = server.child_env(data_dir=tmp_path, username="a@b.c", password="pw")
    assert env["SECRET_KEY"] == again["SECRET_KEY"] and len(env["SECRET_KEY"]) > 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_extra_env_cannot_reintroduce_bare_credentials(tmp_path: Path) -> None:
    env = server.child_env(
        data_dir=tmp_path,
        username="a@b.c",
        password="pw",
        extra_env={"DJANGO_DB": "default", "PASSWORD": "x"},
    )
    assert env["DJANGO_DB"] == "default" and "PASSWORD" not in env


def test_start_refuses_without_the_venv_or_credentials(tmp_path: Path) -> None:
    with pytest.raises(server.LabelStudioServerError, match="ensure_installed"):
        server.start(tmp_path, 18999, password="pw")
    with pytest.raises(server.LabelStudioServerError, match="LABEL_STUDIO_ADMIN_PASSWORD"):
        server.start(tmp_path, 18999, password="")


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    fake_bin = tmp_path / server.VENV_NAME / "bin"
    fake_bin.mkdir(parents=True)
    (fake_bin / "label-studio").write_text("#!/bin/sh\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(server.LabelStudioServerError, match=f"port {port}"):
            server.start(tmp_path, port, password="pw", run_dir=tmp_path / "run")


def test_status_and_stop_with_nothing_running(tmp_path: Path) -> None:
    state = server.status(tmp_path)
    assert not state.running and state.pid is None
    assert server.stop(tmp_path) is False


def test_stale_state_file_is_not_mistaken_for_a_server(tmp_path: Path) -> None:
    run = server.default_run_dir(tmp_path)
    run.mkdir(parents=True)
    # pid 1 is alive but is not Label Studio: never signal it.
    handle = {
        "url": "http://127.0.0.1:1",
        "port": 1,
        "pid": 1,
        "data_dir": str(run),
        "run_dir": str(run),
        "log_file": str(run / "server.log"),
        "username": "a@b.c",
        "token": "t",
        "password": "p",
    }
    (run / server.STATE_FILE).write_text(json.dumps(handle))
    assert server.status(tmp_path).running is False
    assert server.stop(tmp_path) is False
    assert not (run / server.STATE_FILE).exists()


def test_corrupt_state_file_is_named(tmp_path: Path) -> None:
    run = server.default_run_dir(tmp_path)
    run.mkdir(parents=True)
    (run / server.STATE_FILE).write_text("{")
    with pytest.raises(server.LabelStudioServerError, match="server.json"):
        server.status(tmp_path)


def test_wait_healthy_gives_up_with_the_url() -> None:
    port = server.free_port()
    with pytest.raises(server.LabelStudioServerError, match=f"{port}/health"):
        server.wait_healthy(f"http://127.0.0.1:{port}", timeout=0.2, interval=0.05)


def test_installed_version_is_none_without_a_venv(tmp_path: Path) -> None:
    assert server.installed_version(tmp_path) is None
