"""Start a task worker for the configured backend: database (embedded) or RQ (scale-out).

python manage.py worker --queues default,cpu        # CPU host
python manage.py worker --queues gpu --device cuda:0 # GPU host
"""

import os

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run a worker serving the given queues with the configured task backend."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--queues", default="default,cpu,gpu", help="Comma-separated queues.")
        parser.add_argument(
            "--batch", action="store_true", help="Process what is queued, then exit."
        )
        parser.add_argument("--device", default="", help="Training/generation device, e.g. cuda:0.")
        parser.add_argument("--worker-id", default="", help="Unique name of this worker.")

    def handle(self, *args, **options) -> None:
        queues = [q.strip() for q in options["queues"].split(",") if q.strip()]
        unknown = sorted(set(queues) - set(settings.JOB_QUEUES))
        if unknown:
            raise CommandError(f"unknown queue(s) {unknown}; known: {settings.JOB_QUEUES}")
        if options["device"]:
            # Read by training jobs: the engine picks this device and warns on a CPU fallback.
            os.environ["PLATFORM_DEVICE"] = options["device"]
        if settings.TASK_BACKEND == "rq":
            # The scheduler moves delayed tasks (retries with backoff) from RQ's scheduled
            # registry to their queue; without it they wait there forever. Every worker runs
            # one; RQ's lock lets a single one work at a time and another take over if it dies.
            kwargs = {"burst": options["batch"], "with_scheduler": True}
            if options["worker_id"]:
                self._take_rq_name(options["worker_id"], queues[0])
                kwargs["name"] = options["worker_id"]
            call_command("rqworker", *queues, **kwargs)
            return
        kwargs = {
            "queue_name": ",".join(queues),
            "batch": options["batch"],
            "reload": False,
            "startup_delay": False,
            "interval": 0.5,
        }
        if options["worker_id"]:
            kwargs["worker_id"] = options["worker_id"]
        call_command("db_worker", **kwargs)

    def _take_rq_name(self, name: str, queue: str) -> None:
        import django_rq

        from curation.compat.rq_workers import WorkerNameTaken, release_dead_namesake

        try:
            released = release_dead_namesake(django_rq.get_connection(queue), name)
        except WorkerNameTaken as exc:
            raise CommandError(str(exc)) from exc
        if released:
            self.stderr.write(released)
