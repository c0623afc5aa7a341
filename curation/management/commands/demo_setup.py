"""Load the demo fixtures (users per role, style descriptors, prompt sets)."""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from config.console_logging import console_for_verbosity
from curation.services.demo import load_demo_fixtures


class Command(BaseCommand):
    help = "Create the demo users, style descriptors and prompt sets from fixtures/demo.json."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--fixture", default=str(Path(settings.BASE_DIR) / "fixtures" / "demo.json")
        )

    def handle(self, *args, **options) -> None:
        console_for_verbosity(options["verbosity"])
        summary = load_demo_fixtures(Path(options["fixture"]))
        for username, role in summary["users"]:
            self.stdout.write(f"  user {username:<12} role {role}")
