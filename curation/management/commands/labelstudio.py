"""Install, start, stop and inspect the project's own Label Studio server; its API token.

python manage.py labelstudio install   # .venv-labelstudio with the pinned label-studio
python manage.py labelstudio start     # detached, waits for /health, writes the platform's token
python manage.py labelstudio status
python manage.py labelstudio stop
python manage.py labelstudio token            # a working personal access token (kept if valid)
python manage.py labelstudio token --rotate   # revoke the current one, issue its successor
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from curation.labelstudio import server, tokens
from curation.labelstudio.errors import LabelStudioError


class Command(BaseCommand):
    help = "Manage the local Label Studio server (own virtual environment, data under var/)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["install", "start", "stop", "status", "token"])
        parser.add_argument(
            "--timeout", type=float, default=240.0, help="Seconds to wait for /health."
        )
        parser.add_argument(
            "--rotate",
            action="store_true",
            help="token: revoke the current personal access token and issue a new one.",
        )

    def handle(self, *args, **options) -> None:
        root = settings.BASE_DIR
        action = options["action"]
        try:
            if action == "install":
                if server.installed_version(root) != server.LABEL_STUDIO_VERSION:
                    self.stdout.write(
                        f"labelstudio: installing label-studio=={server.LABEL_STUDIO_VERSION} (~2 min, ~1 GB)"
                    )
                server.ensure_installed(root, log_file=root / "var" / "labelstudio-install.log")
            elif action == "start":
                self._start(root, options["timeout"])
            elif action == "token":
                self._token(rotate=options["rotate"])
            elif action == "stop":
                stopped = server.stop(root)
                self.stdout.write(
                    "labelstudio: stopped" if stopped else "labelstudio: was not running"
                )
            else:
                state = server.status(root)
                if not state.running:
                    self.stdout.write("labelstudio: not running")
                else:
                    health = "healthy" if state.healthy else "starting or unhealthy"
                    self.stdout.write(
                        f"labelstudio: running (pid {state.pid}) at {state.url}, {health}"
                    )
        except (server.LabelStudioServerError, LabelStudioError) as exc:
            raise CommandError(str(exc)) from exc

    def _password(self) -> str:
        if not settings.LABEL_STUDIO_ADMIN_PASSWORD:
            raise CommandError(
                "set LABEL_STUDIO_ADMIN_PASSWORD: the password of the platform's service account "
                f"in Label Studio ({settings.LABEL_STUDIO_ADMIN_EMAIL}, LABEL_STUDIO_ADMIN_EMAIL)"
            )
        return settings.LABEL_STUDIO_ADMIN_PASSWORD

    def _start(self, root: Path, timeout: float) -> None:
        password = self._password()
        url = urlparse(settings.LABEL_STUDIO_URL)
        server.ensure_installed(root, log_file=root / "var" / "labelstudio-install.log")
        handle = server.start(
            root,
            port=url.port or 8080,
            data_dir=settings.LABEL_STUDIO_DATA_DIR,
            username=settings.LABEL_STUDIO_ADMIN_EMAIL,
            password=password,
        )
        seconds = server.wait_healthy(handle.url, timeout=timeout, handle=handle)
        self.stdout.write(
            f"labelstudio: up at {handle.url} after {seconds:.0f} s (log {handle.log_file})"
        )
        current = self._current()
        handle = server.provision(handle, current=current)
        self._keep(handle.token, issued=handle.token != current)

    def _token(self, *, rotate: bool) -> None:
        current = self._current()
        if rotate:
            if not current:
                raise CommandError("no current token to rotate: run `labelstudio token` first")
            token = tokens.rotate_token(settings.LABEL_STUDIO_URL, current, source=self._source())
        else:
            token = tokens.ensure_service_token(
                settings.LABEL_STUDIO_URL,
                settings.LABEL_STUDIO_ADMIN_EMAIL,
                self._password(),
                current=current,
            ).token
        self._keep(token, issued=token != current)

    def _current(self) -> str | None:
        if settings.LABEL_STUDIO_API_KEY:
            return settings.LABEL_STUDIO_API_KEY
        path = settings.LABEL_STUDIO_API_KEY_FILE
        if path and Path(path).exists():
            return Path(path).read_text().strip() or None
        return None

    def _source(self) -> str:
        return (
            "LABEL_STUDIO_API_KEY"
            if settings.LABEL_STUDIO_API_KEY
            else f"LABEL_STUDIO_API_KEY_FILE ({settings.LABEL_STUDIO_API_KEY_FILE})"
        )

    def _keep(self, token: str, *, issued: bool) -> None:
        """Write the token where the platform reads it; say where, and what to change by hand."""
        path = settings.LABEL_STUDIO_API_KEY_FILE
        if not path:
            raise CommandError(
                "LABEL_STUDIO_API_KEY_FILE is empty: nowhere to keep the Label Studio token"
            )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        target.with_suffix(".tmp").replace(target)
        what = "issued a new" if issued else "kept the"
        self.stdout.write(f"labelstudio: {what} personal access token in {target}")
        if settings.LABEL_STUDIO_API_KEY and token != settings.LABEL_STUDIO_API_KEY:
            self.stderr.write(
                "labelstudio: LABEL_STUDIO_API_KEY is set and wins over the file: set it to the "
                f"new token in {target} (the old one no longer works)"
            )
