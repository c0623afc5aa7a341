"""Nothing of the annotation record is deleted through the API, whoever asks; annotators see
only their own rounds, without gold settings."""

from __future__ import annotations

import pytest

from curation.models import (
    Annotation,
    AnnotationRound,
    Dataset,
    DatasetVersion,
    Judgement,
    LabelTask,
    Source,
)
from curation.roles import ROLES
from curation.services.rounds.create import create_pairwise_round, create_round
from curation.services.versions import add_items, create_draft_version, freeze_version
from tests.conftest import _make_user
from training.models import GenerationBatch

from .conftest import make_image

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated_round(make_batch):
    batch = make_batch("rated", ["a cat", "a dog"])
    other = make_batch("other", ["a cat", "a dog"], image_offset=50)
    round_ = create_round(name="rated", kind="alignment", generation_batch=batch, gold_rate=0)
    pairwise = create_pairwise_round(batch, other, gold_rate=0)
    task = round_.tasks.first()
    Annotation.objects.create(task=task, labelstudio_id=1, raw={}, aligned=True)
    Judgement.objects.create(task=task, value={"aligned": True}, n_ratings=1)
    return round_, pairwise, other


def _login(api_client, user):
    api_client.force_authenticate(user)
    return api_client


@pytest.mark.parametrize("role", ROLES)
def test_no_role_deletes_a_round_or_what_cascades_into_it(
    role, rated_round, api_client, django_user_model
):
    round_, pairwise, other = rated_round
    user = _make_user(django_user_model, role)
    round_.members.add(user)
    client = _login(api_client, user)

    gone = client.delete(f"/api/rounds/{round_.pk}/")
    assert gone.status_code == 405, gone.content
    assert "never deleted" in gone.json()["detail"] and "archive" in gone.json()["detail"]

    # The second batch's generations are only in the pairwise round's tasks: deleting the
    # batch would cascade into them, so it is a conflict with the reason.
    batch = client.delete(f"/api/training/generation-batches/{other.pk}/")
    assert batch.status_code == 409, batch.content
    assert "label task" in batch.json()["detail"] or "round" in batch.json()["detail"]
    assert GenerationBatch.objects.filter(pk=other.pk).exists()
    assert AnnotationRound.objects.count() == 2
    assert LabelTask.objects.count() == 4 and Annotation.objects.count() == 1
    assert Judgement.objects.count() == 1


@pytest.mark.parametrize("role", ROLES)
def test_no_role_deletes_a_dataset_with_a_frozen_version(role, api_client, django_user_model):
    dataset = Dataset.objects.create(name="d", kind="domain")
    version = create_draft_version(dataset)
    add_items(version, [{"image": make_image(1), "caption": "c"}])
    freeze_version(version)
    client = _login(api_client, _make_user(django_user_model, role))
    answer = client.delete(f"/api/datasets/{dataset.pk}/")
    assert answer.status_code == 409, answer.content
    assert "dataset version" in answer.json()["detail"]
    assert DatasetVersion.objects.filter(pk=version.pk).exists()


def test_a_source_nothing_depends_on_is_still_deleted(data_lead, api_client):
    source = Source.objects.create(name="empty")
    answer = _login(api_client, data_lead).delete(f"/api/sources/{source.pk}/")
    assert answer.status_code == 204
    assert not Source.objects.filter(pk=source.pk).exists()


def test_unauthenticated_delete_is_401_not_a_hint(rated_round, api_client):
    round_, _, _ = rated_round
    assert api_client.delete(f"/api/rounds/{round_.pk}/").status_code == 401


def test_data_lead_archives_instead(rated_round, data_lead, api_client):
    round_, pairwise, _ = rated_round
    client = _login(api_client, data_lead)
    assert client.post(f"/api/rounds/{round_.pk}/archive/").json()["archived"] is True
    listed = {r["id"] for r in client.get("/api/rounds/").json()["results"]}
    assert listed == {pairwise.pk}
    archived = client.get("/api/rounds/?archived=true").json()["results"]
    assert [r["id"] for r in archived] == [round_.pk]
    assert client.post(f"/api/rounds/{round_.pk}/unarchive/").json()["archived"] is False


def test_annotator_sees_only_member_rounds_without_gold_settings(
    rated_round, annotator, api_client
):
    round_, pairwise, _ = rated_round
    round_.members.set([annotator])
    pairwise.members.clear()
    client = _login(api_client, annotator)
    listed = client.get("/api/rounds/").json()["results"]
    assert [r["id"] for r in listed] == [round_.pk]
    assert set(listed[0]) == {
        "id",
        "name",
        "kind",
        "state",
        "overlap",
        "labelstudio_project_id",
        "created_at",
    }
    assert client.get(f"/api/rounds/{pairwise.pk}/").status_code == 404
    assert client.post(f"/api/rounds/{round_.pk}/archive/").status_code == 403
    # An annotator of an archived round no longer sees it.
    AnnotationRound.objects.filter(pk=round_.pk).update(archived=True)
    assert client.get("/api/rounds/").json()["results"] == []


def test_round_created_through_the_api_gets_its_tasks(make_batch, data_lead, annotator, api_client):
    batch = make_batch("api", ["a fox", "an owl", "a bee"])
    payload = {
        "name": "from api",
        "kind": "alignment",
        "generation_batch": batch.pk,
        "gold_rate": 0,
    }
    assert _login(api_client, annotator).post("/api/rounds/", payload).status_code == 403
    client = _login(api_client, data_lead)
    answer = client.post("/api/rounds/", payload, format="json")
    assert answer.status_code == 201, answer.content
    round_ = AnnotationRound.objects.get(pk=answer.json()["id"])
    assert round_.tasks.count() == 3 and round_.created_by == data_lead
    bad = client.post("/api/rounds/", {"name": "none", "kind": "alignment"}, format="json")
    assert bad.status_code == 400 and "generation_batch" in bad.json()["detail"]
