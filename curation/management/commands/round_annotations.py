"""Print a round's current annotations, to diff the platform against Label Studio's export.

python manage.py round_annotations ROUND_ID --json
python manage.py round_annotations ROUND_ID          # one line per annotation
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from curation.models import AnnotationRound
from curation.selectors.rounds import round_annotations


class Command(BaseCommand):
    help = "The round's live annotations: Label Studio ids, annotator, updated_at, parsed answer."

    def add_arguments(self, parser) -> None:
        parser.add_argument("round_id", type=int)
        parser.add_argument("--json", action="store_true", help="A JSON list of objects.")

    def handle(self, *args, **options) -> None:
        round_ = AnnotationRound.objects.filter(pk=options["round_id"]).first()
        if round_ is None:
            raise CommandError(f"round {options['round_id']} does not exist")
        rows = round_annotations(round_)
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=1, sort_keys=True))
            return
        for row in rows:
            answer = {k: v for k, v in row.items() if k not in _IDS}
            self.stdout.write(
                f"{row['labelstudio_id']}\ttask {row['labelstudio_task_id']}\t"
                f"{row['annotator_email']}\t{row['updated_at']}\t{json.dumps(answer)}"
            )
        self.stdout.write(f"round {round_.pk}: {len(rows)} live annotations")


_IDS = {"labelstudio_id", "labelstudio_task_id", "annotator_email", "updated_at"}
