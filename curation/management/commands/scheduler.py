"""The scheduler process: enqueue due cron schedules, requeue jobs whose worker died, and
dispatch again jobs that no live task carries. It survives the database or Redis going away:
a failed tick is logged and the next one tries again."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from curation.services.schedules import scheduler_tick


class Command(BaseCommand):
    help = "Run the scheduler loop (safe to run more than one: each due run is claimed once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one tick and exit.")
        parser.add_argument("--interval", type=float, default=settings.SCHEDULER_TICK_SECONDS)

    def handle(self, *args, **options) -> None:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while True:
            close_old_connections()
            counts = scheduler_tick()
            if any(counts.values()):
                self.stdout.write(
                    "scheduler: " + ", ".join(f"{n} {what}" for what, n in counts.items() if n)
                )
            if options["once"] or stop.wait(options["interval"]):
                break
