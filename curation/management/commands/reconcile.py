"""Run the authoritative pull from Label Studio now, for the rounds named.

python manage.py reconcile ROUND_ID [ROUND_ID ...]          # whole project, as the record
python manage.py reconcile ROUND_ID --incremental           # only tasks changed since the watermark
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from curation.labelstudio.client import LabelStudioError
from curation.models import AnnotationRound


class Command(BaseCommand):
    help = "Pull annotations from Label Studio for the given rounds and store them as the record."

    def add_arguments(self, parser) -> None:
        parser.add_argument("round_ids", nargs="+", type=int)
        parser.add_argument(
            "--incremental",
            action="store_true",
            help="Read only tasks changed since the round's watermark (the scheduled pull).",
        )

    def handle(self, *args, **options) -> None:
        from curation.services.aggregation import compute_round_quality
        from curation.services.sync import reconcile_round

        rounds = {r.pk: r for r in AnnotationRound.objects.filter(pk__in=options["round_ids"])}
        missing = [pk for pk in options["round_ids"] if pk not in rounds]
        if missing:
            raise CommandError(f"no such round: {', '.join(map(str, missing))}")
        failed = 0
        for pk in options["round_ids"]:
            try:
                result = reconcile_round(rounds[pk], full=not options["incremental"])
            except (ValueError, LabelStudioError) as exc:
                self.stderr.write(f"round {pk}: {exc}")
                failed += 1
                continue
            if any(result[k] for k in ("created", "edited", "deleted", "restored")):
                compute_round_quality(rounds[pk])
            self.stdout.write(
                f"round {pk}: {result['tasks_read']} tasks read, {result['created']} created, "
                f"{result['edited']} edited, {result['deleted']} deleted, "
                f"{result['restored']} restored, {result['unchanged']} unchanged"
                + (f", {result['tasks_missing']} tasks gone" if result["tasks_missing"] else "")
            )
            for line in result["errors"][:20]:
                self.stdout.write(f"  {line}")
        if failed:
            raise CommandError(f"{failed} of {len(rounds)} rounds could not be reconciled")
