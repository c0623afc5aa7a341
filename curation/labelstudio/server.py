"""Run a real Label Studio server as a detached child process, from its own virtual environment.

Label Studio pins its own Django (and many other packages), so it can never share `.venv`: it is
installed into `.venv-labelstudio` at the project root and driven only through its CLI and HTTP.
State (pid, port, log) lives in a run folder under `var/` so that `start`, `status` and `stop` can be
separate commands (`python manage.py labelstudio start|status|stop`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from curation.labelstudio.tokens import ensure_service_token

LABEL_STUDIO_VERSION = "1.23.2"
VENV_NAME = ".venv-labelstudio"
DEFAULT_USERNAME = "admin@example.com"  # Label Studio logs users in by e-mail
STATE_FILE = "server.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
SQLITE_NAME = "label_studio.sqlite3"

# The child gets a minimal environment: Label Studio reads many *bare* variables through its
# `get_env` (USERNAME, PASSWORD, PORT, HOST, DEBUG, ...), and the platform's own DJANGO_* settings
# must never leak into it.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE")
# No phoning home: these default to on, and on an offline machine the version check alone stalls
# every start for its 10 s timeout.
_QUIET_ENV = {
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "PYTHONUNBUFFERED": "1",
}


class LabelStudioServerError(RuntimeError):
    """The server could not be installed, started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class ServerHandle:
    """Everything needed to reach and stop a started server (also persisted as `server.json`)."""

    url: str
    port: int
    pid: int
    data_dir: str
    run_dir: str
    log_file: str
    username: str
    password: str = field(repr=False)
    # The service account's personal access token; set by `provision` once the server is up.
    token: str = field(repr=False, default="")


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    healthy: bool
    pid: int | None
    url: str | None
    log_file: str | None


def venv_dir(root: str | Path) -> Path:
    return Path(root) / VENV_NAME


def default_run_dir(root: str | Path) -> Path:
    return Path(root) / "var" / "labelstudio"


def installed_version(root: str | Path) -> str | None:
    """The label-studio version in the project's venv, or None when it is absent or broken."""
    python = venv_dir(root) / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_installed(
    root: str | Path,
    *,
    python: str = "python3.11",
    version: str = LABEL_STUDIO_VERSION,
    log_file: str | Path | None = None,
) -> Path:
    """Create `.venv-labelstudio` with the pinned label-studio (~1 GB, ~2 min); no-op when present."""
    venv = venv_dir(root)
    if installed_version(root) == version:
        return venv
    with contextlib.ExitStack() as stack:
        out: Any = stack.enter_context(open(log_file, "ab")) if log_file else subprocess.DEVNULL
        try:
            if not (venv / "bin" / "python").exists():
                subprocess.run(
                    [python, "-m", "venv", str(venv)], check=True, stdout=out, stderr=out
                )
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", f"label-studio=={version}"],
                check=True,
                stdout=out,
                stderr=out,
            )
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            raise LabelStudioServerError(
                f"installing label-studio=={version} into {venv} failed: {exc}"
                + (f" (see {log_file})" if log_file else "")
            ) from exc
    if installed_version(root) != version:
        raise LabelStudioServerError(f"{venv} does not hold label-studio=={version} after install")
    return venv


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _secret_key(data_dir: Path) -> str:
    # Fixed per data dir: sessions and signed values survive restarts, yet no key is in the source.
    path = data_dir / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


# Label Studio 1.23.2's own default banned subnets (core/utils/io.py, `validate_ip`), copied so
# the platform can keep all of them banned except its own address: Label Studio has no
# allow-list, only `USE_DEFAULT_BANNED_SUBNETS` and `USER_ADDITIONAL_BANNED_SUBNETS`.
LABEL_STUDIO_DEFAULT_BANNED_SUBNETS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)
DEFAULT_WEBHOOK_ADDRESSES = ("127.0.0.1",)


def banned_subnets(allowed: Sequence[str]) -> list[str]:
    """Label Studio's default banned subnets with exactly the `allowed` addresses carved out."""
    exact: list[Any] = [ipaddress.ip_network(a) for a in allowed]
    banned: list[str] = []
    for subnet in LABEL_STUDIO_DEFAULT_BANNED_SUBNETS:
        blocks: list[Any] = [ipaddress.ip_network(subnet)]
        for address in exact:
            carved: list[Any] = []
            for block in blocks:
                if block.version == address.version and address.subnet_of(block):
                    carved.extend(block.address_exclude(address))
                else:
                    carved.append(block)
            blocks = carved
        banned.extend(str(b) for b in sorted(blocks, key=lambda b: (b.version, b)))
    return banned


def ssrf_env(allowed: Sequence[str] = DEFAULT_WEBHOOK_ADDRESSES) -> dict[str, str]:
    """SSRF protection on, every default-banned network still banned except the platform's
    own address(es), which its webhooks must reach."""
    return {
        "SSRF_PROTECTION_ENABLED": "true",
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(banned_subnets(allowed)),
    }


def child_env(
    *,
    data_dir: Path,
    username: str,
    password: str,
    extra_env: dict[str, str] | None = None,
    webhook_addresses: Sequence[str] = DEFAULT_WEBHOOK_ADDRESSES,
) -> dict[str, str]:
    """The environment Label Studio starts with (DESIGN.md §5 lists why each variable is there)."""
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.update(
        {
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password,
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            # Read only when the organization is first created (a fresh data dir); `provision`
            # turns legacy tokens off in an older organization through Label Studio's API.
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "false",
            # SSRF protection stays on; only the platform's address is let through.
            **ssrf_env(webhook_addresses),
            "SECRET_KEY": _secret_key(data_dir),
            **_QUIET_ENV,
        }
    )
    env.update(extra_env or {})
    for bare in ("USERNAME", "PASSWORD", "USER_TOKEN", "PORT", "HOST"):
        env.pop(bare, None)
    return env


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_label_studio(pid: int) -> bool:
    # Guards against signalling an unrelated process that reused a stale pid.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"label-studio" in cmdline or b"label_studio" in cmdline


def read_handle(run_dir: str | Path) -> ServerHandle | None:
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        return ServerHandle(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise LabelStudioServerError(f"{path} is not a valid server state file: {exc}") from exc


def template_dir(root: str | Path) -> Path:
    return default_run_dir(root) / f"template-{LABEL_STUDIO_VERSION}"


def ensure_template(root: str | Path) -> Path:
    """A migrated, user-less SQLite database to seed fresh data dirs from.

    Migrating a fresh database is ~85% of a cold start (~70 s of ~80 s on 2 busy cores); copying
    a migrated one leaves Label Studio only its user and organization to create. The template is
    built once per version (`label-studio version` migrates and exits) and swapped in atomically.
    """
    final = template_dir(root)
    if (final / SQLITE_NAME).exists():
        return final / SQLITE_NAME
    binary = venv_dir(root) / "bin" / "label-studio"
    if not binary.exists():
        raise LabelStudioServerError(f"{binary} is missing: run ensure_installed({str(root)!r})")
    final.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix="template-", dir=final.parent))
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.update(_QUIET_ENV, LABEL_STUDIO_BASE_DATA_DIR=str(building))
    proc = subprocess.run(
        [str(binary), "version"],
        cwd=building,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not (building / SQLITE_NAME).exists():
        shutil.rmtree(building, ignore_errors=True)
        raise LabelStudioServerError(
            f"migrating a template database failed ({proc.returncode}): {proc.stderr[-2000:]}"
        )
    (building / ".env").unlink(missing_ok=True)  # its generated SECRET_KEY must not be shared
    try:
        building.rename(final)
    except OSError:  # another process finished first; theirs is as good
        shutil.rmtree(building, ignore_errors=True)
    return final / SQLITE_NAME


def log_tail(handle_or_log: ServerHandle | str | Path, lines: int = 40) -> str:
    path = Path(
        handle_or_log.log_file if isinstance(handle_or_log, ServerHandle) else handle_or_log
    )
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(
    root: str | Path,
    port: int,
    data_dir: str | Path | None = None,
    username: str = DEFAULT_USERNAME,
    password: str = "",
    *,
    run_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    extra_env: dict[str, str] | None = None,
    use_template: bool = True,
    webhook_addresses: Sequence[str] = DEFAULT_WEBHOOK_ADDRESSES,
) -> ServerHandle:
    """Start Label Studio detached (own session, pid and log file in `run_dir`); returns at once.

    Call `wait_healthy(handle.url, handle=handle)` and then `provision(handle)` (the service
    account's personal access token) afterwards. If the run dir already has a live
    server it is returned unchanged, so `start` is safe to repeat. A fresh SQLite data dir is
    seeded from `ensure_template` (built once, ~70 s) unless `use_template` is False or
    `extra_env` selects another database (`DJANGO_DB`).
    """
    if not password:
        raise LabelStudioServerError(
            "start needs the service account's password (LABEL_STUDIO_ADMIN_PASSWORD)"
        )
    binary = venv_dir(root) / "bin" / "label-studio"
    if not binary.exists():
        raise LabelStudioServerError(f"{binary} is missing: run ensure_installed({str(root)!r})")
    run = Path(run_dir) if run_dir else default_run_dir(root)
    data = Path(data_dir) if data_dir else run / "data"
    run.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)

    existing = read_handle(run)
    if existing and _pid_alive(existing.pid) and _is_label_studio(existing.pid):
        return existing
    # Label Studio silently moves to another port when its port is taken; fail loudly instead.
    if not port_is_free(port, host):
        raise LabelStudioServerError(f"port {port} on {host} is already in use")

    database = data / SQLITE_NAME
    if use_template and not database.exists() and "DJANGO_DB" not in (extra_env or {}):
        shutil.copyfile(ensure_template(root), database)

    log_path = run / LOG_FILE
    env = child_env(
        data_dir=data,
        username=username,
        password=password,
        extra_env=extra_env,
        webhook_addresses=webhook_addresses,
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(binary), "start", "--no-browser", "--internal-host", host, "-p", str(port)],
            cwd=data,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the parent; stop() signals the whole group
        )
    handle = ServerHandle(
        url=f"http://{host}:{port}",
        port=port,
        pid=proc.pid,
        data_dir=str(data),
        run_dir=str(run),
        log_file=str(log_path),
        username=username,
        password=password,
    )
    (run / PID_FILE).write_text(f"{proc.pid}\n")
    _write_handle(handle)
    return handle


def _write_handle(handle: ServerHandle) -> None:
    state = Path(handle.run_dir) / STATE_FILE
    state.write_text(json.dumps(asdict(handle), indent=2))
    state.chmod(0o600)  # it holds the admin credentials


def provision(
    handle: ServerHandle, *, current: str | None = None, allow_legacy: bool = False
) -> ServerHandle:
    """After `wait_healthy`: personal access tokens on and legacy tokens off in the server's
    organization, and a working PAT for the service account (`current`, else the handle's,
    when it still works; a new one otherwise), recorded in the run dir's state file."""
    issued = ensure_service_token(
        handle.url,
        handle.username,
        handle.password,
        current=current or handle.token or None,
        allow_legacy=allow_legacy,
    )
    updated = replace(handle, token=issued.token)
    _write_handle(updated)
    return updated


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200 and json.loads(resp.read()).get("status") == "UP"
    except (OSError, ValueError):
        return False


def wait_healthy(
    url: str, timeout: float = 180.0, *, handle: ServerHandle | None = None, interval: float = 0.5
) -> float:
    """Block until `/health` answers UP (a fresh data dir migrates for ~30–40 s); returns seconds.

    With `handle`, a server process that dies while starting fails fast with its log tail.
    """
    began = time.monotonic()
    while True:
        if is_healthy(url):
            return time.monotonic() - began
        if handle is not None and not _pid_alive(handle.pid):
            raise LabelStudioServerError(
                f"Label Studio (pid {handle.pid}) exited while starting; log {handle.log_file}:\n"
                + log_tail(handle)
            )
        if time.monotonic() - began > timeout:
            tail = log_tail(handle) if handle else ""
            raise LabelStudioServerError(f"{url}/health not UP after {timeout:.0f} s\n{tail}")
        time.sleep(interval)


def status(root: str | Path, *, run_dir: str | Path | None = None) -> ServerStatus:
    run = Path(run_dir) if run_dir else default_run_dir(root)
    handle = read_handle(run)
    if handle is None:
        return ServerStatus(False, False, None, None, None)
    running = _pid_alive(handle.pid) and _is_label_studio(handle.pid)
    return ServerStatus(
        running=running,
        healthy=running and is_healthy(handle.url),
        pid=handle.pid if running else None,
        url=handle.url,
        log_file=handle.log_file,
    )


def stop(root: str | Path, *, run_dir: str | Path | None = None, timeout: float = 30.0) -> bool:
    """Stop the server recorded in the run dir (SIGTERM its group, SIGKILL after `timeout`).

    Returns True when a running server was stopped, False when none was running.
    """
    run = Path(run_dir) if run_dir else default_run_dir(root)
    handle = read_handle(run)
    if handle is None:
        return False
    stopped = False
    if _pid_alive(handle.pid) and _is_label_studio(handle.pid):
        _signal_group(handle.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(handle.pid) and time.monotonic() < deadline:
            _reap(handle.pid)
            time.sleep(0.2)
        if _pid_alive(handle.pid):
            _signal_group(handle.pid, signal.SIGKILL)
        _reap(handle.pid)
        stopped = True
    for name in (PID_FILE, STATE_FILE):
        (run / name).unlink(missing_ok=True)
    return stopped


def _signal_group(pid: int, sig: int) -> None:
    # The server was started as a session leader, so its pgid is its pid; the group holds its
    # workers, which must not outlive it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    # When this process started the server, it must reap it or it lingers as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
