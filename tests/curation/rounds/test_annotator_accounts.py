"""Annotator accounts against a real Label Studio: created, given a password a person can use,
switched off when the role is revoked (and back on), and the demo's printed logins work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from curation.labelstudio import tokens
from curation.models import AnnotatorAccount, Job
from curation.roles import ANNOTATOR
from curation.services.annotators import (
    annotator_client,
    counted_labelstudio_users,
    issue_password,
    labelstudio_accounts,
    sync_annotators,
)
from curation.services.demo import ensure_demo_logins, load_demo_fixtures
from curation.services.jobs import execute_job

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]
FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "demo.json"


@pytest.fixture
def ls_settings(settings, ls_server):
    settings.LABEL_STUDIO_URL = ls_server.url
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.LABEL_STUDIO_ADMIN_EMAIL = ls_server.username
    settings.LABEL_STUDIO_ADMIN_PASSWORD = ls_server.password
    return settings


def test_issued_password_logs_in_and_revoking_the_role_switches_the_account_off(
    ls_settings, ls_server, make_annotators
):
    (user,) = make_annotators(1)
    accounts = labelstudio_accounts()
    report = sync_annotators()
    assert report.created == 1 and not report.errors
    account = AnnotatorAccount.objects.get(user=user)
    assert account.email == user.email and account.api_token and account.password_issued_at is None
    # The platform can act as the annotator before anyone has a password.
    assert annotator_client(user).sdk.users.whoami().email == user.email

    first = issue_password(user)
    assert first.email == user.email and first.url == f"{ls_server.url}/user/login/"
    assert accounts.can_log_in(first.email, first.password)
    second = issue_password(user)
    assert second.password != first.password
    assert accounts.can_log_in(user.email, second.password)
    assert not accounts.can_log_in(user.email, first.password)
    account.refresh_from_db()
    assert account.password_issued_at is not None
    assert account.labelstudio_user_id in counted_labelstudio_users()

    # Revoking the role: not counted at once, switched off in Label Studio by the enqueued sync.
    user.groups.remove(Group.objects.get(name=ANNOTATOR))
    account.refresh_from_db()
    assert account.active is False and account.labelstudio_active is True
    assert account.labelstudio_user_id not in counted_labelstudio_users()
    (job,) = Job.objects.filter(kind="labelstudio.sync_annotators", status=Job.Status.QUEUED)
    execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.result["deactivated"] == 1
    account.refresh_from_db()
    assert account.labelstudio_active is False
    assert not accounts.can_log_in(user.email, second.password)
    assert not tokens.token_works(ls_server.url, account.api_token)
    with pytest.raises(ValueError, match="not an active annotator"):
        issue_password(user)

    # Back in the role: the next sync switches the same account on again.
    user.groups.add(Group.objects.get(name=ANNOTATOR))
    report = sync_annotators()
    assert report.reactivated == 1 and report.created == 0
    account.refresh_from_db()
    assert account.active and account.labelstudio_active
    assert accounts.can_log_in(user.email, second.password)
    assert tokens.token_works(ls_server.url, account.api_token)


def test_data_lead_issues_a_password_from_the_admin_and_sees_the_state(
    ls_settings, client, data_lead, make_annotators
):
    (user,) = make_annotators(1)
    sync_annotators()
    account = AnnotatorAccount.objects.get(user=user)
    client.force_login(data_lead)
    listing = client.get(reverse("admin:curation_annotatoraccount_changelist"))
    assert "no password issued yet" in listing.content.decode()

    response = client.post(
        reverse("admin:curation_annotatoraccount_changelist"),
        {"action": "issue_password", "_selected_action": [account.pk]},
        follow=True,
    )
    page = response.content.decode()
    match = re.search(r"the password <code>([^<]+)</code>", page)
    assert match, page[:2000]
    password = match.group(1)
    assert labelstudio_accounts().can_log_in(user.email, password)
    # Shown once: the next page no longer carries it.
    again = client.get(reverse("admin:curation_annotatoraccount_changelist")).content.decode()
    assert password not in again and "not seen since" in again


def test_demo_logins_are_the_ones_the_readme_prints(ls_settings):
    load_demo_fixtures(FIXTURE)
    logins = ensure_demo_logins(FIXTURE)
    readme = (FIXTURE.parents[1] / "README.md").read_text()
    assert [e for e, _ in logins] == [f"annotator{i}@demo.local" for i in (1, 2, 3)]
    accounts = labelstudio_accounts()
    for email, password in logins:
        assert f"`{password}`" in readme
        assert accounts.can_log_in(email, password), email
    assert "`annotator1@demo.local`" in readme and "`annotator3@demo.local`" in readme
    # Idempotent: a second run changes no password (existing sessions survive).
    assert ensure_demo_logins(FIXTURE) == logins
