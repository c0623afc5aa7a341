"""Label Studio media links are scoped to their round: closing it or removing a member ends them."""

from __future__ import annotations

import httpx
import pytest

from curation.models import AnnotationRound, Job
from curation.services.curation import close_round
from curation.services.jobs import execute_job
from curation.services.round_media import refresh_media_links
from curation.services.rounds.create import create_round
from curation.services.rounds.push import push_round, task_payload
from tests.curation.rounds.conftest import make_image


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def _first_image_url(round_: AnnotationRound) -> str:
    task = round_.tasks.select_related("round", "image").order_by("pk").first()
    return task_payload(task, [])["data"]["image"]


@pytest.mark.django_db
def test_links_end_when_a_member_is_removed_or_the_round_closes(
    client, make_annotators, django_capture_on_commit_callbacks
):
    keep, leave = make_annotators(2)
    images = [make_image(900 + n, caption=f"sticker {n}") for n in range(2)]
    round_ = create_round(name="media", kind="style", images=images, members=[keep, leave])
    AnnotationRound.objects.filter(pk=round_.pk).update(
        state=AnnotationRound.State.PUSHED, labelstudio_project_id=41
    )
    old = _first_image_url(round_)
    response = client.get(_path(old))
    assert response.status_code == 200 and b"".join(response.streaming_content)[:4] == b"\x89PNG"

    with django_capture_on_commit_callbacks(execute=True):
        round_.members.remove(leave)
    assert client.get(_path(old)).status_code == 404  # what the removed annotator kept is dead
    fresh = _first_image_url(AnnotationRound.objects.get(pk=round_.pk))
    assert fresh != old and client.get(_path(fresh)).status_code == 200
    refresh = Job.objects.get(kind="labelstudio.refresh_media")
    assert refresh.params == {"round_id": round_.pk}

    leave.annotation_rounds.add(round_)
    leave.annotation_rounds.clear()  # from the user's side too
    assert client.get(_path(fresh)).status_code == 404
    latest = _first_image_url(AnnotationRound.objects.get(pk=round_.pk))
    assert client.get(_path(latest)).status_code == 200

    close_round(AnnotationRound.objects.get(pk=round_.pk))
    assert client.get(_path(latest)).status_code == 404
    AnnotationRound.objects.filter(pk=round_.pk).update(state=AnnotationRound.State.ANNOTATING)
    assert client.get(_path(latest)).status_code == 404  # reopening does not revive old links


@pytest.mark.labelstudio
@pytest.mark.django_db(transaction=True)
def test_label_studio_tasks_get_fresh_links_after_a_removal(
    settings, live_server, ls_server, ls_client, make_annotators
):
    settings.LABEL_STUDIO_URL = ls_server.url
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.PLATFORM_PUBLIC_URL = live_server.url
    keep, leave = make_annotators(2)
    images = [make_image(910 + n, caption=f"sticker {n}") for n in range(3)]
    round_ = create_round(name="media ls", kind="style", images=images, members=[keep, leave])
    push_round(round_, client=ls_client)
    task = round_.tasks.order_by("pk").first()
    before = ls_client.sdk.tasks.get(str(task.labelstudio_task_id)).data["image"]
    assert httpx.get(before).status_code == 200

    round_.members.remove(leave)
    assert httpx.get(before).status_code == 404
    job = Job.objects.get(kind="labelstudio.refresh_media")
    execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.result["updated"] == 3, job.error
    after = ls_client.sdk.tasks.get(str(task.labelstudio_task_id)).data["image"]
    assert after != before and httpx.get(after).status_code == 200
    assert refresh_media_links(round_, client=ls_client)["updated"] == 3  # safe to repeat


@pytest.mark.django_db
def test_an_annotator_taken_off_the_platform_ends_their_rounds_links(
    client, make_annotators, django_capture_on_commit_callbacks
):
    from django.contrib.auth.models import Group

    from curation.models import AnnotatorAccount
    from curation.roles import ANNOTATOR

    (rater,) = make_annotators(1)
    AnnotatorAccount.objects.create(
        user=rater, email=rater.email, labelstudio_user_id=77, active=True
    )
    round_ = create_round(name="gone", kind="style", images=[make_image(930)], members=[rater])
    AnnotationRound.objects.filter(pk=round_.pk).update(state=AnnotationRound.State.ANNOTATING)
    link = _first_image_url(round_)
    assert client.get(_path(link)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        rater.groups.remove(Group.objects.get(name=ANNOTATOR))
    assert client.get(_path(link)).status_code == 404
