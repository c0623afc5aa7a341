"""A round against a real Label Studio and the platform's live server: push, webhooks, drops,
reconcile, edits and deletions, then quality and curation.

Label Studio posts each webhook synchronously inside the API call that made the annotation, so
once an SDK call returns its event is stored on the platform: no test here waits or polls.
"""

from __future__ import annotations

import secrets

import httpx
import pytest

from curation.labelstudio import results, server
from curation.models import Annotation, AnnotationRound, GoldItem, Job, WebhookEvent
from curation.services.aggregation import compute_round_quality
from curation.services.annotators import annotator_client, sync_annotators
from curation.services.curation import curate_round
from curation.services.jobs import enqueue_job, execute_job
from curation.services.rounds.create import create_pairwise_round, create_round
from curation.services.rounds.push import push_round, webhook_url
from curation.services.sync import reconcile_round

from .conftest import make_image

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def platform(settings, live_server, ls_server):
    """The platform (live server) and Label Studio configured to talk to each other."""
    settings.LABEL_STUDIO_URL = ls_server.url
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.LABEL_STUDIO_WEBHOOK_SECRET = secrets.token_urlsafe(16)
    settings.PLATFORM_PUBLIC_URL = live_server.url
    return live_server


def run_queued(kind: str) -> int:
    ids = list(Job.objects.filter(kind=kind, status=Job.Status.QUEUED).values_list("pk", flat=True))
    for pk in ids:
        execute_job(pk)
    assert not Job.objects.filter(pk__in=ids).exclude(status=Job.Status.SUCCEEDED).exists()
    return len(ids)


def _run(kind: str, **params) -> Job:
    job = enqueue_job(kind, params=params)
    execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return job


def _live_ids(round_: AnnotationRound) -> dict[int, bool | None]:
    return dict(
        Annotation.objects.filter(task__round=round_, deleted=False).values_list(
            "labelstudio_id", "aligned"
        )
    )


def _labelstudio_ids(ls_client, project_id: int) -> dict[int, bool]:
    found = {}
    for task in ls_client.export_tasks(project_id):
        for annotation in task["annotations"]:
            choice = next(r for r in annotation["result"] if r["from_name"] == "aligned")
            found[annotation["id"]] = choice["value"]["choices"] == ["yes"]
    return found


@pytest.mark.slow
def test_round_push_webhooks_drop_reconcile_quality_and_curate(
    platform, ls_server: server.ServerHandle, ls_client, make_batch, make_annotators, data_lead
):
    batch = make_batch("e2e", [f"a red fox {i}" for i in range(6)])
    gold = [
        GoldItem(image=make_image(700), prompt="a blue whale", answer={"aligned": True}),
        GoldItem(image=make_image(701), prompt="three cats", answer={"aligned": False}),
    ]
    round_ = create_round(
        name="e2e alignment",
        kind="alignment",
        generation_batch=batch,
        gold=gold,
        gold_rate=0.34,
        overlap=3,
        min_gold_answered=2,
        user=data_lead,
    )
    users = make_annotators(3)
    report = sync_annotators()
    assert report.errors == [] and len(report.accounts) == 3
    assert len({a.labelstudio_user_id for a in report.accounts}) == 3

    # Push through the job, then again: nothing new in Label Studio, same ids here.
    pushed = _run("labelstudio.push", round_id=round_.pk).result
    assert pushed["created"] == 8 and pushed["error_count"] == 0 and pushed["webhook_id"]
    round_.refresh_from_db()
    assert round_.state == "pushed" and round_.labelstudio_project_id == pushed["project_id"]
    ids_before = dict(round_.tasks.values_list("key", "labelstudio_task_id"))
    again = push_round(round_)
    assert again["created"] == 0 and again["skipped_existing"] == 8
    assert dict(round_.tasks.values_list("key", "labelstudio_task_id")) == ids_before
    project = ls_client.sdk.projects.get(round_.labelstudio_project_id)
    assert project.maximum_annotations == 3
    assert len(ls_client.existing_task_keys(round_.labelstudio_project_id)) == 8

    # Task data carries our ids; its image is the platform's signed URL, readable cross-origin.
    tasks = list(round_.tasks.select_related("generation").order_by("pk"))
    regular = [t for t in tasks if not t.is_gold]
    data = ls_client.sdk.tasks.get(str(regular[0].labelstudio_task_id)).data
    assert data["round_id"] == round_.pk and data["task_key"] == regular[0].key
    assert data["prompt"] == "sticker of a red fox 0" and "generation_id" not in data
    image = httpx.get(data["image"], headers={"Origin": ls_server.url})
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    assert image.headers["Access-Control-Allow-Origin"] == ls_server.url

    # Three annotators: a and b right, c wrong everywhere (gold included).
    a, b, c = (annotator_client(u) for u in users)
    truth = [True, True, True, True, False, False]
    made: dict[tuple[str, int], int] = {}
    for rater, (name, client) in enumerate((("a", a), ("b", b), ("c", c))):
        for task in tasks:
            right = task.gold_answer["aligned"] if task.is_gold else truth[regular.index(task)]
            aligned = right if name != "c" else not right
            stars = (5 - rater) if aligned else (1 + rater)
            created = client.sdk.annotations.create(
                id=task.labelstudio_task_id, result=results.alignment_result(aligned, stars)
            )
            made[(name, task.pk)] = created.id
    # The Label Studio admin annotates too: stored, never counted.
    by_admin = ls_client.sdk.annotations.create(
        id=regular[4].labelstudio_task_id, result=results.alignment_result(True)
    )

    # Raw events are stored first, before any processing.
    events = WebhookEvent.objects.filter(action="ANNOTATION_CREATED")
    assert events.count() == 25 and not Annotation.objects.exists()
    assert {e.payload["annotation"]["id"] for e in events} == {*made.values(), by_admin.id}
    assert run_queued("labelstudio.webhook") == 25
    assert len(_live_ids(round_)) == 25
    round_.refresh_from_db()
    assert round_.state == "annotating"

    # Edit and delete in Label Studio: both arrive by webhook.
    a.sdk.annotations.update(id=made[("a", regular[3].pk)], result=results.alignment_result(False))
    b.sdk.annotations.delete(id=made[("b", regular[0].pk)])
    assert run_queued("labelstudio.webhook") == 2
    live = _live_ids(round_)
    assert live[made[("a", regular[3].pk)]] is False and made[("b", regular[0].pk)] not in live

    # The platform's receiver is unreachable: Label Studio drops the events (it never retries).
    dead = f"http://127.0.0.1:{server.free_port()}/down"
    ls_client.sdk.webhooks.update(pushed["webhook_id"], url=dead)
    stored = WebhookEvent.objects.count()
    b_again = b.sdk.annotations.create(
        id=regular[0].labelstudio_task_id, result=results.alignment_result(True, 4)
    )
    a.sdk.annotations.update(id=made[("a", regular[3].pk)], result=results.alignment_result(True))
    c.sdk.annotations.delete(id=made[("c", regular[5].pk)])
    assert WebhookEvent.objects.count() == stored  # nothing arrived
    ls_client.sdk.webhooks.update(pushed["webhook_id"], url=webhook_url())

    # Reconcile recovers all of it: every annotation present exactly once.
    _run("labelstudio.reconcile", round_id=round_.pk)
    in_labelstudio = _labelstudio_ids(ls_client, round_.labelstudio_project_id)
    assert _live_ids(round_) == in_labelstudio
    assert len(in_labelstudio) == 24 and b_again.id in in_labelstudio
    assert Annotation.objects.filter(task__round=round_).count() == 26  # 2 kept as deleted
    round_.refresh_from_db()
    assert round_.reconcile_watermark is not None
    # A second reconcile with nothing new changes nothing.
    quiet = reconcile_round(round_)
    assert quiet["created"] == 0 and quiet["edited"] == 0 and quiet["deleted"] == 0

    # Quality: c fails gold and is excluded; a and b agree; the admin's vote does not count.
    round_.refresh_from_db()
    assert round_.quality["flagged_annotators"] == [users[2].email]
    assert round_.quality["uncounted_annotations"] == 1
    assert round_.quality["agreement"]["aligned"]["alpha"] == pytest.approx(1.0)
    assert round_.quality["agreement_all_counted"]["aligned"]["alpha"] < 0

    version = curate_round(round_, data_lead)
    expected = {(t.generation.image_id, t.generation.prompt_text) for t in regular[:4]}
    assert set(version.items.values_list("image_id", "caption")) == expected
    assert version.is_frozen and version.checksum and version.row_count == 4
    assert version.lineage["round"] == round_.pk and version.lineage["annotations"] == 23
    round_.refresh_from_db()
    assert round_.state == "curated" and round_.result_version == version


def test_style_round_without_webhook_secret_syncs_by_reconcile(
    platform, settings, ls_client, make_batch, make_annotators, data_lead
):
    settings.LABEL_STUDIO_WEBHOOK_SECRET = ""
    batch = make_batch("style", ["a corgi", "an owl"])
    round_ = create_round(
        name="style only reconcile",
        kind="style",
        generation_batch=batch,
        gold_rate=0,
        overlap=2,
        style_exemplars=[make_image(800), make_image(801)],
    )
    users = make_annotators(2)
    sync_annotators()
    result = push_round(round_)
    assert result["webhook_id"] is None and result["created"] == 2
    task = ls_client.sdk.tasks.get(str(round_.tasks.first().labelstudio_task_id))
    assert task.data["exemplar_1"].startswith(platform.url) and "exemplar_2" in task.data
    tasks = list(round_.tasks.order_by("pk"))
    for user in users:
        client = annotator_client(user)
        client.sdk.annotations.create(
            id=tasks[0].labelstudio_task_id, result=results.style_result(True, 5)
        )
        client.sdk.annotations.create(
            id=tasks[1].labelstudio_task_id, result=results.style_result(False, 2)
        )
    assert not WebhookEvent.objects.exists()
    _run("labelstudio.reconcile", round_id=round_.pk, close=True)
    round_.refresh_from_db()
    assert round_.state == "closed"
    assert Annotation.objects.filter(task__round=round_, passed=True, rating=5).count() == 2
    job = _run("labelstudio.curate", round_id=round_.pk)
    round_.refresh_from_db()
    assert round_.state == "curated" and job.result["rows"] == 1
    assert list(round_.result_version.items.values_list("image_id", flat=True)) == [
        tasks[0].generation.image_id
    ]


@pytest.mark.slow
def test_demo_stage_functions_run_the_whole_path(platform, make_batch, make_annotators, data_lead):
    """Structure only: the demo's pseudo-ratings are demo data, never asserted as truth."""
    from curation.services.demo_rounds import demo_annotate, demo_rating_rounds

    batch = make_batch("demo", ["a cat", "a dog", "a fox"])
    annotators = make_annotators(3)
    alignment, style = demo_rating_rounds(batch, data_lead)
    assert (alignment.kind, style.kind) == ("alignment", "style")
    assert alignment.state == style.state == "pushed"
    summary = demo_annotate(alignment, annotators, user=data_lead)
    assert summary["annotations_created"] == 9
    alignment.refresh_from_db()
    assert alignment.state == "curated"
    assert Annotation.objects.filter(task__round=alignment, deleted=False).count() == 9
    assert alignment.result_version.lineage["annotations"] == 9
    again = demo_annotate(alignment, annotators, curate=False)  # re-running adds nothing
    assert again["annotations_created"] == 0


def test_pairwise_round_through_label_studio(platform, ls_client, make_batch, make_annotators):
    a = make_batch("ckpt-a", ["a corgi", "an owl"], seeds=(7,))
    b = make_batch("ckpt-b", ["a corgi", "an owl"], seeds=(7,), image_offset=40)
    round_ = create_pairwise_round(a, b, overlap=2, gold_rate=0)
    users = make_annotators(2)
    sync_annotators()
    assert push_round(round_)["created"] == 2
    tasks = list(round_.tasks.select_related("generation", "other_generation"))
    data = ls_client.sdk.tasks.get(str(tasks[0].labelstudio_task_id)).data
    assert "generation_a" not in data and "seed" not in data and "batch_a" not in data
    assert data["image_b"].startswith(platform.url)
    for user in users:
        client = annotator_client(user)
        for task in tasks:
            a_side = "left" if task.generation.batch_id == a.pk else "right"
            client.sdk.annotations.create(
                id=task.labelstudio_task_id, result=results.pairwise_result(a_side)
            )
    assert run_queued("labelstudio.webhook") == 4
    quality = compute_round_quality(round_)
    assert quality["pairwise"]["wins_a"] == 4 and quality["pairwise"]["win_rate_a"] == 1.0
    version = curate_round(round_)
    assert set(version.items.values_list("image_id", flat=True)) == {
        g.image_id for g in a.generations.all()
    }
