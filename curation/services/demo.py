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


def ensure_demo_logins(path: Path) -> list[tuple[str, str]]:
    """DEMO ONLY: the fixture's annotators log in to Label Studio with the fixture's password.

    New accounts are signed up with it; an existing account that refuses it (an older demo's
    data dir) gets it set again. Returns [(e-mail, password)] exactly as they work.
    """
    from django.contrib.auth import get_user_model

    from curation.models import AnnotatorAccount
    from curation.roles import ANNOTATOR
    from curation.services.annotators import (
        issue_password,
        labelstudio_accounts,
        labelstudio_email,
        sync_annotators,
    )

    data = json.loads(path.read_text())
    User = get_user_model()
    wanted = {
        spec["username"]: spec["password"] for spec in data["users"] if spec["role"] == ANNOTATOR
    }
    users = list(User.objects.filter(username__in=wanted).order_by("username"))
    accounts = labelstudio_accounts()
    sync_annotators(accounts, passwords={u.pk: wanted[u.username] for u in users})
    logins = []
    for user in users:
        email, password = labelstudio_email(user), wanted[user.username]
        # An account found in Label Studio (an older demo's data dir) logs in but holds no token
        # on this platform until the platform takes it over by issuing the password.
        has_token = AnnotatorAccount.objects.filter(user=user).exclude(api_token="").exists()
        if not has_token or not accounts.can_log_in(email, password):
            issue_password(user, password=password, accounts=accounts)
        logins.append((email, password))
    if len(logins) != len(wanted):
        missing = sorted(set(wanted) - {u.username for u in users})
        raise ValueError(f"demo annotators missing (run manage.py demo_setup): {missing}")
    return logins
