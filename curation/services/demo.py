"""Load fixtures/demo.json: demo users per role, style descriptors and prompt sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.db import transaction

from curation.models import Prompt, PromptSet, StyleDescriptor
from curation.services.users import upsert_user


@transaction.atomic
def load_demo_fixtures(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    users = [upsert_user(**user) for user in data["users"]]
    for descriptor in data.get("style_descriptors", []):
        StyleDescriptor.objects.update_or_create(name=descriptor["name"], defaults=descriptor)
    for spec in data.get("prompt_sets", []):
        prompt_set, created = PromptSet.objects.get_or_create(
            name=spec["name"], version=1, defaults={"purpose": spec["purpose"]}
        )
        if created:
            Prompt.objects.bulk_create(
                Prompt(prompt_set=prompt_set, **prompt) for prompt in spec["prompts"]
            )
    return {"users": [(u.username, u.groups.first().name) for u in users]}
