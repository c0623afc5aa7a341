"""Label Studio accounts for the platform's annotators, and who counts as one.

Label Studio Community has no roles: every account in its organization can open every project,
annotate, delete tasks and edit configs. The platform therefore enforces roles on its own side:

- Accounts are created here (invite-link sign-up), only for active users in the `annotator` group.
  A new account gets a random password nobody sees; a data lead issues a usable one from the
  admin (`issue_password`: set in Label Studio, shown once, never stored).
- An annotation counts (agreement, gold, aggregation, curated versions) only when its Label Studio
  author is such an account *now*; anything else (the Label Studio admin, an account made by hand,
  a user who left the role) is stored raw and visible in the admin, but never counted.
- A user who leaves the role (or is made inactive) stops counting at once and is switched off in
  Label Studio by the next sync, which a signal enqueues (`curation/signals.py`).

The platform keeps each account's own API token (a personal access token issued when the account
is created or a password issued; issuing one revokes the account's previous one), so it can act
as the annotator (the demo script) without knowing any password.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone
from label_studio_sdk.core.api_error import ApiError

from curation.labelstudio.accounts import LabelStudioAccountError, LabelStudioAccounts
from curation.labelstudio.client import LabelStudioClient, LabelStudioError
from curation.models import AnnotatorAccount
from curation.roles import ANNOTATOR

# Label Studio logs in by e-mail; users without one get an address that can never receive mail.
FALLBACK_EMAIL_DOMAIN = "annotators.platform.invalid"
_ERRORS = (LabelStudioAccountError, LabelStudioError, ApiError, httpx.HTTPError)


@dataclass(frozen=True)
class SyncReport:
    accounts: list[AnnotatorAccount]
    deactivated: int
    errors: list[str]
    created: int = 0
    reactivated: int = 0


@dataclass(frozen=True)
class IssuedPassword:
    """What to tell the annotator, once: where to log in, with which e-mail and password."""

    url: str
    email: str
    password: str


def annotator_users() -> QuerySet:
    return (
        get_user_model()
        .objects.filter(is_active=True, groups__name=ANNOTATOR)
        .distinct()
        .order_by("pk")
    )


def is_annotator(user: Any) -> bool:
    return bool(user.is_active and user.groups.filter(name=ANNOTATOR).exists())


def labelstudio_email(user: Any) -> str:
    return (user.email or f"{user.get_username()}@{FALLBACK_EMAIL_DOMAIN}").strip().lower()


def labelstudio_api_key() -> tuple[str, str]:
    """(the platform's Label Studio credential, the setting it came from).

    LABEL_STUDIO_API_KEY when set, else the file LABEL_STUDIO_API_KEY_FILE, read at each call so
    that a worker started before `manage.py labelstudio start` (which writes it) or a rotation
    (`labelstudio token --rotate`) needs no restart.
    """
    if settings.LABEL_STUDIO_API_KEY:
        return settings.LABEL_STUDIO_API_KEY, "LABEL_STUDIO_API_KEY"
    path = settings.LABEL_STUDIO_API_KEY_FILE
    source = f"LABEL_STUDIO_API_KEY_FILE ({path})"
    try:
        key = Path(path).read_text().strip() if path else ""
    except FileNotFoundError:
        key = ""
    if not key:
        raise LabelStudioError(
            "no Label Studio token: LABEL_STUDIO_API_KEY is not set and "
            f"{source} holds none (`python manage.py labelstudio start` writes it for the "
            "server it starts; `labelstudio token` for one already running)"
        )
    return key, source


def labelstudio_client() -> LabelStudioClient:
    key, source = labelstudio_api_key()
    return LabelStudioClient(settings.LABEL_STUDIO_URL, key, source=source)


def labelstudio_accounts() -> LabelStudioAccounts:
    """Account operations as the platform's service account in Label Studio (its token, and
    LABEL_STUDIO_ADMIN_EMAIL / LABEL_STUDIO_ADMIN_PASSWORD for what needs its Django admin)."""
    key, source = labelstudio_api_key()
    return LabelStudioAccounts(
        settings.LABEL_STUDIO_URL,
        key,
        source=source,
        admin_email=settings.LABEL_STUDIO_ADMIN_EMAIL,
        admin_password=settings.LABEL_STUDIO_ADMIN_PASSWORD,
    )


def _save(user: Any, **values: Any) -> AnnotatorAccount:
    # Single statements rather than update_or_create's read-then-write transaction, which
    # SQLite refuses to upgrade while a job's heartbeat writes.
    if not AnnotatorAccount.objects.filter(user=user).update(**values):
        AnnotatorAccount.objects.create(user=user, **values)
    return AnnotatorAccount.objects.get(user=user)


def sync_annotators(
    accounts: LabelStudioAccounts | None = None,
    *,
    passwords: Mapping[int, str] | None = None,
) -> SyncReport:
    """Create Label Studio accounts for annotators; switch off those of users who left the role.

    `passwords` ({user id: password}) gives new accounts a known password (the demo's); others
    get a random one nobody sees until a data lead issues one. One failing user never stops the
    others: the error is reported and kept on their account row.
    """
    accounts = accounts or labelstudio_accounts()
    passwords = passwords or {}
    now = timezone.now()
    errors: list[str] = []
    synced: list[AnnotatorAccount] = []
    created = reactivated = 0
    try:
        present = accounts.users()
    except _ERRORS as exc:
        return SyncReport(accounts=[], deactivated=0, errors=[f"listing Label Studio users: {exc}"])
    wanted = list(annotator_users())
    existing = {a.user_id: a for a in AnnotatorAccount.objects.filter(user__in=wanted)}
    for user in wanted:
        email = labelstudio_email(user)
        row = existing.get(user.pk)
        found = present.get(email)
        values: dict[str, Any] = {"email": email, "active": True, "synced_at": now}
        try:
            if found is None:
                password = passwords.get(user.pk) or secrets.token_urlsafe(15)
                signed = accounts.sign_up(email, password)
                created += 1
                values.update(
                    labelstudio_user_id=signed.user_id,
                    api_token=signed.token or "",
                    labelstudio_active=True,
                    password_issued_at=now if user.pk in passwords else None,
                    last_error="",
                )
            else:
                values.update(labelstudio_user_id=found.user_id, last_activity=found.last_activity)
                if row is not None and not row.labelstudio_active:
                    accounts.set_active(found.user_id, True)
                    reactivated += 1
                    values["labelstudio_active"] = True
                values["last_error"] = (
                    ""
                    if row is not None and row.api_token
                    else "the Label Studio account was not made by the platform: issue a "
                    "password to take it over"
                )
            names = {"first_name": user.first_name or "", "last_name": user.last_name or ""}
            if found is None and any(names.values()):
                accounts.sdk.users.update(values["labelstudio_user_id"], **names)
        except _ERRORS as exc:
            errors.append(f"user {user.get_username()} ({email}): {exc}")
            AnnotatorAccount.objects.filter(user=user).update(last_error=str(exc)[:2000])
            continue
        if values["last_error"]:
            errors.append(f"user {user.get_username()} ({email}): {values['last_error']}")
        # A Label Studio id re-used by another platform user (e-mail moved) moves with it.
        AnnotatorAccount.objects.filter(labelstudio_user_id=values["labelstudio_user_id"]).exclude(
            user=user
        ).delete()
        synced.append(_save(user, **values))
    deactivated = 0
    leaving = AnnotatorAccount.objects.exclude(user__in=[u.pk for u in wanted]).filter(
        labelstudio_active=True
    )
    AnnotatorAccount.objects.exclude(user__in=[u.pk for u in wanted]).update(active=False)
    for row in leaving.select_related("user"):
        try:
            accounts.set_active(row.labelstudio_user_id, False)
        except _ERRORS as exc:
            errors.append(f"switching off {row.email} in Label Studio: {exc}")
            AnnotatorAccount.objects.filter(pk=row.pk).update(
                last_error=f"still active in Label Studio: {exc}"[:2000]
            )
            continue
        AnnotatorAccount.objects.filter(pk=row.pk).update(
            labelstudio_active=False, synced_at=now, last_error=""
        )
        deactivated += 1
    return SyncReport(
        accounts=synced,
        deactivated=deactivated,
        errors=errors,
        created=created,
        reactivated=reactivated,
    )


def issue_password(
    user: Any, *, password: str | None = None, accounts: LabelStudioAccounts | None = None
) -> IssuedPassword:
    """Give the annotator a Label Studio password (random unless given) and return it, once.

    Creates the account when it does not exist yet; any earlier password stops working. The
    password is not stored: lose it and issue another.
    """
    if not is_annotator(user):
        raise ValueError(f"{user.get_username()}: not an active annotator; no Label Studio login")
    accounts = accounts or labelstudio_accounts()
    email = labelstudio_email(user)
    password = password or secrets.token_urlsafe(12)
    user_id = accounts.find_user(email)
    if user_id is None:
        signed = accounts.sign_up(email, password)
        user_id, token = signed.user_id, signed.token
    else:
        accounts.set_active(user_id, True)
        accounts.set_password(user_id, password)
        token = accounts.token_for(email, password)
    if not token:
        raise LabelStudioAccountError(f"{email}: the new password does not log in")
    AnnotatorAccount.objects.filter(labelstudio_user_id=user_id).exclude(user=user).delete()
    _save(
        user,
        email=email,
        labelstudio_user_id=user_id,
        active=True,
        labelstudio_active=True,
        api_token=token,
        password_issued_at=timezone.now(),
        last_error="",
    )
    return IssuedPassword(url=accounts.base_url + "/user/login/", email=email, password=password)


def counted_labelstudio_users() -> dict[int, tuple[int, str]]:
    """Label Studio user id -> (platform user id, e-mail) for accounts whose annotations count."""
    rows = AnnotatorAccount.objects.filter(
        active=True, user__is_active=True, user__groups__name=ANNOTATOR
    ).values_list("labelstudio_user_id", "user_id", "email")
    return {ls_id: (user_id, email) for ls_id, user_id, email in rows}


def annotator_client(user: Any, client: LabelStudioClient | None = None) -> LabelStudioClient:
    """A client acting as the user's own Label Studio account (with its stored API token)."""
    account = AnnotatorAccount.objects.filter(user=user).first()
    if account is None or not account.api_token:
        raise LabelStudioError(
            f"{user.get_username()} has no Label Studio token on the platform: sync annotators "
            "or issue a password first"
        )
    base_url = client.base_url if client is not None else settings.LABEL_STUDIO_URL
    source = (
        f"the Label Studio token the platform keeps for {account.email} (issue a password "
        "to renew it)"
    )
    return LabelStudioClient(base_url, account.api_token, source=source)
