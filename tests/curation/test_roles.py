"""Every role against every admin page and API endpoint."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from curation.roles import ADMIN, ANNOTATOR, DATA_LEAD

ADMIN_MODELS = sorted(
    (model._meta.app_label, model._meta.model_name) for model in admin.site._registry
)
USER_MANAGEMENT = {("auth", "user"), ("auth", "group"), ("authtoken", "tokenproxy")}
PLATFORM_APPS = {"curation", "training"}

API_LISTS = [
    "source-list",
    "image-list",
    "ingestbatch-list",
    "dataset-list",
    "datasetversion-list",
    "recipe-list",
    "vectorindex-list",
    "styledescriptor-list",
    "promptset-list",
    "prompt-list",
    "annotationround-list",
    "job-list",
    "schedule-list",
    "trainingrun-list",
    "checkpoint-list",
    "generationbatch-list",
    "generation-list",
    "retrainround-list",
]
ANNOTATOR_READABLE = {"annotationround-list"}


def _expected_changelist(role: str, app_model: tuple[str, str]) -> int:
    if role == ANNOTATOR:
        return 302
    if role == DATA_LEAD and app_model[0] not in PLATFORM_APPS:
        return 403
    return 200


@pytest.mark.django_db
@pytest.mark.parametrize("app_model", ADMIN_MODELS, ids=lambda am: ".".join(am))
def test_admin_changelists_per_role(client, role_user, app_model):
    role, user = role_user
    client.force_login(user)
    url = reverse(f"admin:{app_model[0]}_{app_model[1]}_changelist")
    response = client.get(url)
    expected = _expected_changelist(role, app_model)
    assert response.status_code == expected, f"{role} on {url}"
    if expected == 302:
        assert reverse("admin:login") in response["Location"]


@pytest.mark.django_db
def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("admin:curation_image_changelist"))
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


@pytest.mark.django_db
def test_only_admins_manage_users(client, data_lead, platform_admin):
    client.force_login(data_lead)
    assert client.get(reverse("admin:auth_user_add")).status_code == 403
    client.force_login(platform_admin)
    assert client.get(reverse("admin:auth_user_add")).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("name", API_LISTS)
def test_api_read_per_role(api_client, role_user, name):
    role, user = role_user
    api_client.force_authenticate(user)
    response = api_client.get(reverse(name))
    if role == ANNOTATOR and name not in ANNOTATOR_READABLE:
        assert response.status_code == 403
    else:
        assert response.status_code == 200, response.content
        assert "results" in response.json() and "next" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize("name", API_LISTS)
def test_api_anonymous_refused(api_client, name):
    assert api_client.get(reverse(name)).status_code in (401, 403)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name,payload",
    [
        ("source-list", {"name": "pool"}),
        ("dataset-list", {"name": "d", "kind": "domain"}),
        ("promptset-list", {"name": "p"}),
        ("schedule-list", {"name": "s", "cron": "0 3 * * *", "job_kind": "noop"}),
    ],
)
def test_api_writes_per_role(api_client, annotator, data_lead, name, payload):
    api_client.force_authenticate(annotator)
    assert api_client.post(reverse(name), payload, format="json").status_code == 403
    api_client.force_authenticate(data_lead)
    response = api_client.post(reverse(name), payload, format="json")
    assert response.status_code == 201, response.content


@pytest.mark.django_db
def test_token_auth(api_client, data_lead):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=data_lead)
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api_client.get(reverse("dataset-list")).status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert api_client.get(reverse("dataset-list")).status_code == 401


@pytest.mark.django_db
def test_schedule_api_rejects_bad_cron(api_client, data_lead):
    api_client.force_authenticate(data_lead)
    response = api_client.post(
        reverse("schedule-list"),
        {"name": "bad", "cron": "every night", "job_kind": "noop"},
        format="json",
    )
    assert response.status_code == 400
    assert "cron" in response.json()


@pytest.mark.django_db
def test_openapi_schema_and_docs(client, data_lead):
    client.force_login(data_lead)
    schema = client.get(reverse("api-schema"), HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/jobs/{id}/cancel/" in paths and "/api/dataset-versions/" in paths
    assert client.get(reverse("api-docs")).status_code == 200


@pytest.mark.django_db
def test_roles_exist_with_expected_permissions():
    from django.contrib.auth.models import Group

    lead = Group.objects.get(name=DATA_LEAD)
    codes = set(lead.permissions.values_list("codename", flat=True))
    assert {"freeze_datasetversion", "start_round", "start_trainingrun", "cancel_job"} <= codes
    assert "delete_datasetversion" not in codes and "add_user" not in codes
    # Retrain rounds are lineage: a data lead sees no Delete button on them.
    assert not {"delete_retrainround", "delete_roundstep"} & codes
    admin_codes = set(Group.objects.get(name=ADMIN).permissions.values_list("codename", flat=True))
    assert {"add_user", "change_group"} <= admin_codes
    annot = set(Group.objects.get(name=ANNOTATOR).permissions.values_list("codename", flat=True))
    assert annot == {"view_annotationround", "view_labeltask"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["trainingrun-start", "trainingrun-cancel", "trainingrun-resume", "generationbatch-start"],
)
def test_training_actions_per_role(api_client, annotator, data_lead, name):
    """Annotators may not start or stop training or generation; data leads reach the service
    (which answers 409 here: this bare run has no base checkpoint and no job)."""
    from training.models import TrainingRun

    if name.startswith("generationbatch"):
        url = reverse(name, args=[999999])
        lead_expected = 404
    else:
        url = reverse(name, args=[TrainingRun.objects.create(name="bare").pk])
        lead_expected = 409
    api_client.force_authenticate(annotator)
    assert api_client.post(url).status_code == 403
    api_client.force_authenticate(data_lead)
    assert api_client.post(url).status_code == lead_expected


@pytest.mark.django_db
def test_roles_are_resynced_after_migrate_with_every_apps_permissions():
    from django.contrib.auth.models import Group, Permission
    from django.core.management import call_command

    lead = Group.objects.get(name=DATA_LEAD)
    lead.permissions.clear()
    Permission.objects.filter(codename="start_retrainround").delete()
    call_command("migrate", verbosity=0)
    codes = set(lead.permissions.values_list("codename", flat=True))
    # training is migrated after curation: its new permissions must reach the role too.
    assert {"start_retrainround", "freeze_datasetversion"} <= codes
