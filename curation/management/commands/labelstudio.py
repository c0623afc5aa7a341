"""Install, start, stop and inspect the project's own Label Studio server.

python manage.py labelstudio install   # .venv-labelstudio with the pinned label-studio
python manage.py labelstudio start     # detached, waits for /health, prints the URL
python manage.py labelstudio status
python manage.py labelstudio stop
"""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from curation.labelstudio import server


class Command(BaseCommand):
    help = "Manage the local Label Studio server (own virtual environment, data under var/)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["install", "start", "stop", "status"])
        parser.add_argument(
            "--timeout", type=float, default=240.0, help="Seconds to wait for /health."
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
        except server.LabelStudioServerError as exc:
            raise CommandError(str(exc)) from exc

    def _start(self, root, timeout: float) -> None:
        token = settings.LABEL_STUDIO_API_KEY
        password = settings.LABEL_STUDIO_ADMIN_PASSWORD or token
        if not token:
            raise CommandError(
                "set LABEL_STUDIO_API_KEY (at most 40 characters) to start Label Studio"
            )
        url = urlparse(settings.LABEL_STUDIO_URL)
        server.ensure_installed(root, log_file=root / "var" / "labelstudio-install.log")
        handle = server.start(
            root,
            port=url.port or 8080,
            data_dir=settings.LABEL_STUDIO_DATA_DIR,
            username=settings.LABEL_STUDIO_ADMIN_EMAIL,
            password=password,
            token=token,
        )
        seconds = server.wait_healthy(handle.url, timeout=timeout, handle=handle)
        self.stdout.write(
            f"labelstudio: up at {handle.url} after {seconds:.0f} s (log {handle.log_file})"
        )
