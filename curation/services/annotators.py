"""Label Studio accounts for the platform's annotators, and who counts as one.

Label Studio Community has no roles: every account in its organization can open every project,
annotate, delete tasks and edit configs. The platform therefore enforces roles on its own side:

- Accounts are created here, only for active platform users in the `annotator` group.
- An annotation counts (agreement, gold, aggregation, curated versions) only when its Label Studio
  author is such an account *now*; anything else (the Label Studio admin, an account made by hand,
  a user who left the role) is stored raw and visible in the admin, but never counted.
- Task deletions in Label Studio are recorded and undone by the next push; labeling configs are
  re-applied on every push; gold answers never leave the platform (task data carries no hint).

No password is stored: each account's Label Studio password is derived from SECRET_KEY and the
user's id, so the platform can show it to its owner (`annotator_credentials`) or log in as the
account (the demo script) whenever needed. Rotating SECRET_KEY means re-running the sync with
new passwords (the old accounts then report `last_error` until reset in Label Studio).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from label_studio_sdk.core.api_error import ApiError

from curation.labelstudio.client import LabelStudioClient, LabelStudioError
from curation.models import AnnotatorAccount
from curation.roles import ANNOTATOR

# Label Studio logs in by e-mail; users without one get an address that can never receive mail.
FALLBACK_EMAIL_DOMAIN = "annotators.platform.invalid"


@dataclass(frozen=True)
class SyncReport:
    accounts: list[AnnotatorAccount]
    deactivated: int
    errors: list[str]


def annotator_users() -> QuerySet:
    return (
        get_user_model()
        .objects.filter(is_active=True, groups__name=ANNOTATOR)
        .distinct()
        .order_by("pk")
    )


def labelstudio_email(user: Any) -> str:
    return (user.email or f"{user.get_username()}@{FALLBACK_EMAIL_DOMAIN}").strip().lower()


def labelstudio_password(user: Any) -> str:
    """The account's Label Studio password: derived, so never stored anywhere."""
    message = f"labelstudio-annotator:{user.pk}".encode()
    digest = hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def annotator_credentials(user: Any) -> tuple[str, str]:
    """(e-mail, password) to show the user themself so they can log in to Label Studio."""
    return labelstudio_email(user), labelstudio_password(user)


def labelstudio_client() -> LabelStudioClient:
    if not settings.LABEL_STUDIO_API_KEY:
        raise LabelStudioError(
            "LABEL_STUDIO_API_KEY is not set; the platform cannot reach Label Studio"
        )
    return LabelStudioClient(settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_API_KEY)


def sync_annotators(client: LabelStudioClient | None = None) -> SyncReport:
    """Create Label Studio accounts for annotators; mark accounts of users who left as inactive.

    One failing user never stops the others: the error is reported and kept on their account row.
    """
    client = client or labelstudio_client()
    accounts: list[AnnotatorAccount] = []
    errors: list[str] = []
    wanted = list(annotator_users())
    for user in wanted:
        email = labelstudio_email(user)
        try:
            account = client.ensure_annotator(
                email,
                labelstudio_password(user),
                first_name=getattr(user, "first_name", "") or "",
                last_name=getattr(user, "last_name", "") or "",
            )
        except (LabelStudioError, ApiError, httpx.HTTPError) as exc:
            errors.append(f"user {user.get_username()} ({email}): {exc}")
            AnnotatorAccount.objects.filter(user=user).update(last_error=str(exc)[:2000])
            continue
        problem = (
            ""
            if account.token
            else "the Label Studio account exists with another password; reset it there"
        )
        if problem:
            errors.append(f"user {user.get_username()} ({email}): {problem}")
        # A Label Studio id re-used by another platform user (e-mail moved) moves with it.
        AnnotatorAccount.objects.filter(labelstudio_user_id=account.user_id).exclude(
            user=user
        ).delete()
        values = {
            "email": email,
            "labelstudio_user_id": account.user_id,
            "active": True,
            "last_error": problem,
        }
        # Single statements rather than update_or_create's read-then-write transaction, which
        # SQLite refuses to upgrade while a job's heartbeat writes.
        if not AnnotatorAccount.objects.filter(user=user).update(**values):
            AnnotatorAccount.objects.create(user=user, **values)
        accounts.append(AnnotatorAccount.objects.get(user=user))
    deactivated = (
        AnnotatorAccount.objects.filter(active=True)
        .exclude(user__in=[u.pk for u in wanted])
        .update(active=False)
    )
    return SyncReport(accounts=accounts, deactivated=deactivated, errors=errors)


def counted_labelstudio_users() -> dict[int, tuple[int, str]]:
    """Label Studio user id -> (platform user id, e-mail) for accounts whose annotations count."""
    rows = AnnotatorAccount.objects.filter(
        active=True, user__is_active=True, user__groups__name=ANNOTATOR
    ).values_list("labelstudio_user_id", "user_id", "email")
    return {ls_id: (user_id, email) for ls_id, user_id, email in rows}


def annotator_client(user: Any, client: LabelStudioClient | None = None) -> LabelStudioClient:
    """A client acting as the user's own Label Studio account (by logging in as them)."""
    client = client or labelstudio_client()
    account = client.ensure_annotator(labelstudio_email(user), labelstudio_password(user))
    if not account.token:
        raise LabelStudioError(
            f"cannot log in to Label Studio as {account.email}: its password was changed there"
        )
    return LabelStudioClient(client.base_url, account.token)
