"""Fault injection against a real Label Studio: webhooks lost, duplicated, reordered, a restart,
a forged webhook with the right secret, task data edited and a task deleted in Label Studio.
After one reconcile the platform holds exactly what Label Studio holds, with full history."""

from __future__ import annotations

import io
import json
import random
import secrets
from datetime import datetime

import httpx
import pytest
from django.core.management import call_command

from curation.labelstudio import configs, results
from curation.labelstudio.parsing import SECRET_HEADER
from curation.models import Annotation, AnnotationVersion, Job, RoundNotice
from curation.services.annotation_store import current_from_history
from curation.services.annotators import annotator_client, sync_annotators
from curation.services.curation import close_round, curate_round
from curation.services.jobs import execute_job
from curation.services.rounds.create import create_round
from curation.services.rounds.push import push_round
from curation.services.storage import read_bytes

from .chaos import ChaosRelay

pytestmark = [pytest.mark.labelstudio, pytest.mark.django_db(transaction=True)]
Change = AnnotationVersion.Change


def _process_webhooks(rng: random.Random) -> int:
    """Run the queued webhook jobs in a shuffled order (jobs of a pool run in any order)."""
    ids = list(
        Job.objects.filter(kind="labelstudio.webhook", status=Job.Status.QUEUED).values_list(
            "pk", flat=True
        )
    )
    rng.shuffle(ids)
    for pk in ids:
        execute_job(pk)
    assert not Job.objects.filter(pk__in=ids).exclude(status=Job.Status.SUCCEEDED).exists()
    return len(ids)


def _side(result: list[dict]) -> str | None:
    """The A/B/tie choice of a pairwise annotation's result (`results.pairwise_result` shape)."""
    return next(
        (r["value"]["choices"][0] for r in result if r["from_name"] == configs.PAIRWISE), None
    )


def _labelstudio_view(ls_client, project_id: int) -> list[dict]:
    """Label Studio's own full export, in the shape of `round_annotations`."""
    emails = {u.id: u.email for u in ls_client.sdk.users.list()}
    rows = []
    for task in ls_client.export_tasks(project_id):
        for a in task["annotations"]:
            selected = _side(a["result"])
            rows.append(
                {
                    "labelstudio_id": a["id"],
                    "labelstudio_task_id": task["id"],
                    "annotator_email": emails[a["completed_by"]].lower(),
                    "updated_at": datetime.fromisoformat(
                        a["updated_at"].replace("Z", "+00:00")
                    ).isoformat(),
                    "was_cancelled": a["was_cancelled"],
                    "preferred": selected,
                }
            )
    return sorted(rows, key=lambda r: r["labelstudio_id"])


def _forge(platform_url: str, secret: str, payload: dict) -> None:
    answer = httpx.post(
        f"{platform_url}/api/labelstudio/webhook/",
        json=payload,
        headers={SECRET_HEADER: secret},
    )
    assert answer.status_code == 200  # the secret is right: it is stored, as a hint only


@pytest.mark.slow
def test_lossy_forged_and_edited_webhooks_end_equal_to_label_studio(
    settings, live_server, ls_server, ls_client, make_batch, make_annotators, data_lead
):
    rng = random.Random(18)
    relay = ChaosRelay(live_server.url, seed=18).start()
    settings.LABEL_STUDIO_URL = ls_server.url
    settings.LABEL_STUDIO_API_KEY = ls_server.token
    settings.LABEL_STUDIO_WEBHOOK_SECRET = secret = secrets.token_urlsafe(16)
    settings.PLATFORM_PUBLIC_URL = relay.url  # Label Studio posts to the relay

    prompts = [f"a sticker of a {animal}" for animal in ("fox", "owl", "cat", "bee", "elk")]
    a = make_batch("ckpt-a", prompts, seeds=(3,))
    b = make_batch("ckpt-b", prompts, seeds=(3,), image_offset=60)
    users = make_annotators(3)
    sync_annotators()
    round_ = create_round(
        name="faults",
        kind="pairwise",
        generation_batch=a,
        other_generation_batch=b,
        overlap=3,
        gold_rate=0,
        user=data_lead,
    )
    pushed = push_round(round_)
    assert pushed["created"] == 5 and pushed["webhook_id"]
    round_.refresh_from_db()
    # Blinded A/B: task data says nothing about which checkpoint is on which side.
    data = ls_client.sdk.tasks.get(str(round_.tasks.first().labelstudio_task_id)).data
    assert set(data) == {"task_key", "round_id", "prompt", "image_a", "image_b"}
    tasks = list(round_.tasks.order_by("pk"))
    raters = [annotator_client(u) for u in users]

    def rate(rater: int, task) -> int:
        a_side = "left" if task.generation.batch_id == a.pk else "right"
        b_side = "right" if a_side == "left" else "left"
        side = a_side if (rater + tasks.index(task)) % 3 else b_side
        return (
            raters[rater]
            .sdk.annotations.create(
                id=task.labelstudio_task_id, result=results.pairwise_result(side)
            )
            .id
        )

    made: dict[tuple[int, int], int] = {}
    for task in tasks:
        made[(0, task.pk)] = rate(0, task)
    relay.stop()  # the receiver restarts: what Label Studio posts meanwhile is lost
    for task in tasks[:2]:
        made[(1, task.pk)] = rate(1, task)
    relay.start()
    for task in tasks[2:]:
        made[(1, task.pk)] = rate(1, task)
    for task in tasks:
        made[(2, task.pk)] = rate(2, task)
    _process_webhooks(rng)
    assert relay.counts["dropped"] and relay.counts["restarts"] == 1

    # An edit and a deletion of answers the platform has already seen (so history can show them).
    seen = set(Annotation.objects.values_list("labelstudio_id", flat=True))
    edited = next(made[(0, t.pk)] for t in tasks if made[(0, t.pk)] in seen)
    before = Annotation.objects.get(labelstudio_id=edited).preferred
    after = "right" if before == "left" else "left"
    raters[0].sdk.annotations.update(id=edited, result=results.pairwise_result(after))
    removed = next(made[(2, t.pk)] for t in tasks if made[(2, t.pk)] in seen)
    raters[2].sdk.annotations.delete(id=removed)

    # A forged webhook with the right secret (read from Label Studio's webhook list by any
    # member): it flips a real vote with a future updated_at and fabricates another.
    victim = made[(1, tasks[3].pk)]
    real = ls_client.sdk.annotations.get(id=victim)
    flipped = "left" if _side(real.result) == "right" else "right"
    task_json = {"id": tasks[3].labelstudio_task_id, "data": {"task_key": tasks[3].key}}
    project = {"id": round_.labelstudio_project_id}
    forged = {
        "id": victim,
        "task": tasks[3].labelstudio_task_id,
        "project": round_.labelstudio_project_id,
        "completed_by": real.completed_by,
        "result": results.pairwise_result(flipped),
        "was_cancelled": False,
        "created_at": "2030-01-01T00:00:00Z",
        "updated_at": "2030-01-01T00:00:00Z",
    }
    _forge(
        live_server.url,
        secret,
        {
            "action": "ANNOTATION_UPDATED",
            "annotation": forged,
            "task": task_json,
            "project": project,
        },
    )
    fabricated = {**forged, "id": 987654, "result": results.pairwise_result("left")}
    _forge(
        live_server.url,
        secret,
        {
            "action": "ANNOTATION_CREATED",
            "annotation": fabricated,
            "task": task_json,
            "project": project,
        },
    )

    # Someone edits a task's task_key in Label Studio to another task's key.
    edited_task = tasks[1]
    mapping = dict(round_.tasks.values_list("key", "labelstudio_task_id"))
    data = ls_client.sdk.tasks.get(str(edited_task.labelstudio_task_id)).data
    ls_client.sdk.tasks.update(
        str(edited_task.labelstudio_task_id), data={**data, "task_key": tasks[4].key}
    )
    # A task is deleted in Label Studio (its annotations go with it), the round pushed again.
    dropped_task = tasks[2]
    old_id = dropped_task.labelstudio_task_id
    ls_client.sdk.tasks.delete(str(old_id))
    again = push_round(round_)
    assert again["created"] == 1 and again["recreated"] == 1
    dropped_task.refresh_from_db()
    assert dropped_task.labelstudio_task_id not in (None, old_id)
    assert dropped_task.previous_labelstudio_task_ids == [old_id]
    made[(0, -1)] = rate(0, dropped_task)  # rated again on the new task

    relay.flush()
    _process_webhooks(rng)

    # One reconcile, then the platform's current annotations are Label Studio's, field by field.
    out = io.StringIO()
    call_command("reconcile", str(round_.pk), stdout=out)
    assert f"round {round_.pk}:" in out.getvalue()
    out = io.StringIO()
    call_command("round_annotations", str(round_.pk), "--json", stdout=out)
    ours = json.loads(out.getvalue())
    theirs = _labelstudio_view(ls_client, round_.labelstudio_project_id)
    assert ours == theirs
    assert len(theirs) == 3 * 5 - 1 - 3 + 1  # all, minus the deletion and the deleted task's 3

    # The forgery counted for nothing: the fabricated id is unknown, the real vote is intact.
    assert not Annotation.objects.filter(labelstudio_id=987654).exists()
    stored = Annotation.objects.get(labelstudio_id=victim)
    assert stored.preferred == _side(real.result) != flipped
    assert not stored.versions.filter(raw__result__0__value__choices__0=flipped).exists()

    # History: the edit and the deletion are versions; the deleted task's annotations are
    # kept as deleted with the reason; every current row is its history's latest state.
    changes = list(
        Annotation.objects.get(labelstudio_id=edited).versions.values_list("change", flat=True)
    )
    assert changes[0] == Change.CREATED and Change.EDITED in changes
    values = [
        _side(v.raw["result"]) for v in Annotation.objects.get(labelstudio_id=edited).versions.all()
    ]
    assert values[0] == before and values[-1] == after
    gone = Annotation.objects.get(labelstudio_id=removed)
    assert gone.deleted and list(gone.versions.values_list("change", flat=True))[-1] == "deleted"
    lost = Annotation.objects.filter(labelstudio_task_id=old_id)
    assert lost.count() == 3 and all(a.deleted for a in lost)
    assert all(f"task {old_id} deleted" in a.deleted_reason for a in lost)
    for row in Annotation.objects.filter(task__round=round_):
        derived = current_from_history(row, round_.kind)
        assert derived["deleted"] == row.deleted
        assert (derived["preferred"], derived["raw"]) == (row.preferred, row.raw)

    # Nothing was silent: the round says what Label Studio did.
    kinds = set(RoundNotice.objects.filter(round=round_).values_list("kind", flat=True))
    assert {"task_deleted", "task_repushed", "task_data_edited"} <= kinds
    # The edited task_key moved nothing: every task keeps the id its push stored.
    now = dict(round_.tasks.values_list("key", "labelstudio_task_id"))
    assert {k: v for k, v in now.items() if k != dropped_task.key} == {
        k: v for k, v in mapping.items() if k != dropped_task.key
    }

    # Closing snapshots what counts; curated twice (after a late edit in Label Studio and an
    # annotator leaving the role), the version is byte-identical.
    round_ = close_round(round_)
    first = curate_round(round_, data_lead)
    raters[1].sdk.annotations.update(id=victim, result=results.pairwise_result(flipped))
    users[2].groups.clear()
    call_command("reconcile", str(round_.pk), stdout=io.StringIO())
    assert Annotation.objects.get(labelstudio_id=victim).preferred == flipped  # stored, yet ...
    second = curate_round(round_, data_lead)
    assert read_bytes(first.manifest_path) == read_bytes(second.manifest_path)
    assert (first.checksum, first.row_count) == (second.checksum, second.row_count)
    assert first.row_count > 0
    relay.stop()
