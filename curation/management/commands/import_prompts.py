"""Import a prompt file as a new draft version of a prompt set.

python manage.py import_prompts FILE --name NAME [--purpose evaluation] [--format csv] [--json]
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from curation.models.prompts import PromptSet
from curation.prompts.importers import FORMATS, PromptImportError
from curation.services.prompts import NothingImported, import_prompt_file


class Command(BaseCommand):
    help = "Import prompts (CSV, TSV, JSONL, text); bad rows are reported with their line numbers."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file")
        parser.add_argument("--name", required=True, help="Prompt set name; makes version N+1.")
        parser.add_argument("--purpose", choices=PromptSet.Purpose.values, default="generation")
        parser.add_argument("--format", choices=FORMATS, help="Default: from the file suffix.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            prompt_set, errors = import_prompt_file(
                options["file"],
                options["name"],
                fmt=options["format"],
                purpose=options["purpose"],
            )
        except NothingImported as exc:
            if options["json"]:
                self.stdout.write(json.dumps({"prompt_set": None, "errors": _errors(exc.errors)}))
            raise CommandError(str(exc)) from exc
        except (PromptImportError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        count = prompt_set.prompts.count()
        if options["json"]:
            payload = {
                "prompt_set": prompt_set.pk,
                "name": prompt_set.name,
                "version": prompt_set.version,
                "prompts": count,
                "errors": _errors(errors),
            }
            self.stdout.write(json.dumps(payload))
            return
        self.stdout.write(f"{prompt_set}: {count} prompts imported, {len(errors)} problems")
        for error in errors:
            self.stderr.write(f"{options['file']}: {error}")


def _errors(errors: list) -> list[dict]:
    return [asdict(error) for error in errors]
