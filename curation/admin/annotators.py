"""Annotator accounts in the admin: each annotator's Label Studio login, its state, a new password.

Issuing a password calls Label Studio while the data lead waits (a few requests): the password
must be shown in this response, once, and is never stored.
"""

from __future__ import annotations

import httpx
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from label_studio_sdk.core.api_error import ApiError

from curation import models as m
from curation.admin_base import PlatformAdmin
from curation.labelstudio.accounts import LabelStudioAccountError
from curation.labelstudio.client import LabelStudioError
from curation.roles import ANNOTATOR


def login_state(account: m.AnnotatorAccount) -> str:
    """One line a data lead can act on."""
    if not account.active:
        if account.labelstudio_active:
            return "left the annotator role: not counted; Label Studio switch-off pending (sync)"
        return "left the annotator role: not counted, switched off in Label Studio"
    if account.last_error:
        return f"problem: {account.last_error}"
    if account.password_issued_at is None:
        return "account made, no password issued yet: issue one and give it to the annotator"
    seen = account.last_activity
    if seen is not None and seen > account.password_issued_at:
        return (
            f"password issued {account.password_issued_at:%Y-%m-%d %H:%M}; active in Label Studio"
        )
    return f"password issued {account.password_issued_at:%Y-%m-%d %H:%M}; not seen since"


@admin.register(m.AnnotatorAccount)
class AnnotatorAccountAdmin(PlatformAdmin):
    list_display = [
        "email",
        "user",
        "counted",
        "state",
        "last_activity",
        "password_issued_at",
        "labelstudio_user_id",
    ]
    list_filter = ["active", "labelstudio_active"]
    search_fields = ["email", "user__username"]
    list_select_related = ["user"]
    readonly_fields = [
        "user",
        "email",
        "labelstudio_link",
        "state",
        "counted",
        "labelstudio_user_id",
        "active",
        "labelstudio_active",
        "password_issued_at",
        "last_activity",
        "synced_at",
        "last_error",
    ]
    fields = readonly_fields
    actions = ["issue_password", "sync_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="login state")
    def state(self, obj: m.AnnotatorAccount) -> str:
        return login_state(obj)

    @admin.display(description="counted", boolean=True)
    def counted(self, obj: m.AnnotatorAccount) -> bool:
        user = obj.user
        return bool(obj.active and user.is_active and user.groups.filter(name=ANNOTATOR).exists())

    @admin.display(description="logs in at")
    def labelstudio_link(self, obj: m.AnnotatorAccount) -> str:
        url = settings.LABEL_STUDIO_URL.rstrip("/") + "/user/login/"
        return format_html('<a href="{}">{}</a> with the e-mail {}', url, url, obj.email)

    def has_issue_password_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.change_annotatoraccount")

    @admin.action(
        description="Issue a new Label Studio password (shown once)",
        permissions=["issue_password"],
    )
    def issue_password(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.annotators import issue_password

        for account in queryset.select_related("user"):
            try:
                issued = issue_password(account.user)
            except (ValueError, LabelStudioAccountError, LabelStudioError, ApiError) as exc:
                self.message_user(request, f"{account.email}: {exc}", messages.ERROR)
                continue
            except httpx.HTTPError as exc:
                self.message_user(
                    request, f"{account.email}: Label Studio unreachable ({exc})", messages.ERROR
                )
                continue
            self.message_user(
                request,
                format_html(
                    "{}: log in at <a href='{}'>{}</a> with <code>{}</code> and the password "
                    "<code>{}</code> (shown only now; the previous password no longer works).",
                    account.user.get_username(),
                    issued.url,
                    issued.url,
                    issued.email,
                    issued.password,
                ),
                messages.SUCCESS,
            )

    def has_sync_now_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.change_annotatoraccount")

    @admin.action(
        description="Sync with Label Studio (create, switch off, read activity)",
        permissions=["sync_now"],
    )
    def sync_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.jobs import enqueue_job

        job = enqueue_job("labelstudio.sync_annotators", user=request.user)
        self.message_user(request, f"Job #{job.pk} (labelstudio.sync_annotators) enqueued.")


class AnnotatorAwareAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, telling an annotator where they rate instead of "wrong password".

    Only someone who proves the account (its platform password) is told its Label Studio e-mail;
    anyone typing an annotator's user name or e-mail just learns where annotators rate.
    """

    def clean(self):  # type: ignore[no-untyped-def]
        try:
            return super().clean()
        except forms.ValidationError:
            user = self._annotator(self.cleaned_data.get("username") or "")
            if user is None:
                raise
            url = settings.LABEL_STUDIO_URL.rstrip("/") + "/user/login/"
            password = self.cleaned_data.get("password") or ""
            if user.check_password(password):
                from curation.services.annotators import labelstudio_email

                detail = f" Log in there with the e-mail {labelstudio_email(user)}."
            else:
                detail = " Log in there with your e-mail address."
            raise forms.ValidationError(
                "Annotators rate in Label Studio, not in this admin: %(url)s.%(detail)s",
                code="annotator",
                params={"url": url, "detail": detail},
            ) from None

    @staticmethod
    def _annotator(login: str):  # type: ignore[no-untyped-def]
        login = login.strip()
        if not login:
            return None
        users = get_user_model().objects.filter(is_active=True, groups__name=ANNOTATOR)
        user = users.filter(username=login).first() or users.filter(email__iexact=login).first()
        if user is None or user.is_staff:
            return None
        return user


admin.site.login_form = AnnotatorAwareAuthenticationForm
