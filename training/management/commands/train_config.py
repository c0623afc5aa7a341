"""Write a training run's engine config (manifests resolved to local files) as JSON.

For runs launched outside the job system, e.g. on several GPUs:
    python manage.py train_config 12 --out var/runs/12/config.json
    accelerate launch --num_processes 4 -m training.engine train var/runs/12/config.json
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from training.models import TrainingRun
from training.services.runs.config import build_train_config
from training.services.runs.inputs import TrainingRunError


class Command(BaseCommand):
    help = "Write a training run's engine TrainConfig JSON (for `python -m training.engine train`)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("run_id", type=int)
        parser.add_argument("--out", default="", help="File to write; stdout when omitted.")

    def handle(self, *args, **options) -> None:
        try:
            run = TrainingRun.objects.get(pk=options["run_id"])
            config = build_train_config(run)
        except TrainingRun.DoesNotExist as error:
            raise CommandError(f"no training run {options['run_id']}") from error
        except TrainingRunError as error:
            raise CommandError(str(error)) from error
        if options["out"]:
            config.to_json(options["out"])
            self.stdout.write(options["out"])
        else:
            self.stdout.write(json.dumps(config.to_dict(), indent=2, sort_keys=True))
