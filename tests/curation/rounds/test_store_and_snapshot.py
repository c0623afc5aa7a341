"""The annotation store on reads shaped as Label Studio's export returns them (append-only
history, ordering of reads, deletions), and closing a round pins what curation uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from curation.labelstudio import results
from curation.labelstudio.parsing import annotation_record
from curation.labelstudio.pull import Pull, TaskRead
from curation.models import Annotation, AnnotationRound, AnnotatorAccount
from curation.services.annotation_store import apply_pull, current_from_history
from curation.services.curation import close_round, curate_round
from curation.services.rounds.create import create_round
from curation.services.storage import read_bytes

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _raw(annotation_id, task_id, user, aligned, at):
    return {
        "id": annotation_id,
        "task": task_id,
        "completed_by": user,
        "result": results.alignment_result(aligned, 4 if aligned else 2),
        "was_cancelled": False,
        "created_at": T0.isoformat(),
        "updated_at": at.isoformat(),
    }


def _read(round_, at, tasks, missing=()):
    """A Pull as Label Studio's export would give it: {ls task id: [raw annotations]}."""
    reads = {
        task_id: TaskRead(
            task_id,
            {"task_key": key},
            [annotation_record(raw, {"id": task_id}) for raw in raws],
        )
        for task_id, (key, raws) in tasks.items()
    }
    return Pull(
        project_id=round_.labelstudio_project_id,
        read_at=at,
        tasks=reads,
        missing_task_ids=list(missing),
    )


@pytest.fixture
def pushed_round(make_batch, make_annotators):
    batch = make_batch("s", ["a fox", "an owl", "a bee"])
    round_ = create_round(name="s", kind="alignment", generation_batch=batch, gold_rate=0)
    for i, task in enumerate(round_.tasks.order_by("pk")):
        task.labelstudio_task_id = 100 + i
        task.save()
    AnnotationRound.objects.filter(pk=round_.pk).update(labelstudio_project_id=9, state="pushed")
    round_.refresh_from_db()
    users = make_annotators(3)
    for i, user in enumerate(users):
        AnnotatorAccount.objects.create(user=user, email=user.email, labelstudio_user_id=70 + i)
    return round_, list(round_.tasks.order_by("pk")), users


def test_history_is_append_only_and_reads_are_ordered(pushed_round):
    round_, tasks, users = pushed_round
    key = tasks[0].key
    first = apply_pull(
        round_, _read(round_, T0, {100: (key, [_raw(1, 100, 70, True, T0)])}), source="webhook"
    )
    assert first.created == 1
    later = T0 + timedelta(seconds=10)
    edit = _raw(1, 100, 70, False, later)
    assert apply_pull(round_, _read(round_, later, {100: (key, [edit])}), source="reconcile").edited
    # A read that began before the one stored (a slow webhook job) changes nothing.
    slow = apply_pull(
        round_,
        _read(round_, T0 + timedelta(seconds=5), {100: (key, [_raw(1, 100, 70, True, T0)])}),
        source="webhook",
    )
    assert slow.stale == 1
    row = Annotation.objects.get(labelstudio_id=1)
    assert row.aligned is False and row.annotator_email == users[0].email
    # Absent from a complete read of its task: deleted, kept, with the reason.
    gone = apply_pull(
        round_, _read(round_, later + timedelta(1), {100: (key, [])}), source="webhook"
    )
    assert gone.deleted == 1
    row.refresh_from_db()
    assert row.deleted and row.deleted_reason == "not in Label Studio any more"
    assert list(row.versions.values_list("change", "source")) == [
        ("created", "webhook"),
        ("edited", "reconcile"),
        ("deleted", "webhook"),
    ]
    derived = current_from_history(row, round_.kind)
    assert derived["deleted"] and derived["aligned"] is False
    # A task that vanished takes its annotations with it, said on the round.
    apply_pull(
        round_,
        _read(round_, later + timedelta(2), {101: (tasks[1].key, [_raw(2, 101, 71, True, T0)])}),
        source="reconcile",
    )
    apply_pull(round_, _read(round_, later + timedelta(3), {}, missing=[101]), source="reconcile")
    lost = Annotation.objects.get(labelstudio_id=2)
    assert lost.deleted and lost.deleted_reason == "task 101 deleted in Label Studio"
    tasks[1].refresh_from_db()
    assert tasks[1].labelstudio_task_id is None and tasks[1].previous_labelstudio_task_ids == [101]
    assert round_.notices.filter(kind="task_deleted").count() == 1


def test_task_data_never_maps_a_task(pushed_round):
    round_, tasks, _ = pushed_round
    # Label Studio's data for task 100 claims to be another task: the stored id decides.
    report = apply_pull(
        round_,
        _read(round_, T0, {100: (tasks[2].key, [_raw(5, 100, 70, True, T0)])}),
        source="reconcile",
    )
    assert report.created == 1
    assert Annotation.objects.get(labelstudio_id=5).task == tasks[0]
    assert round_.notices.get(kind="task_data_edited").details["data_task_key"] == tasks[2].key
    # An annotation on a task id that is none of ours is not stored.
    stray = apply_pull(
        round_, _read(round_, T0, {555: (tasks[1].key, [_raw(6, 555, 70, True, T0)])}), source="x"
    )
    assert stray.created == 0 and "task 555" in stray.errors[0]


def test_closed_round_recurates_byte_identically(pushed_round, make_annotators):
    round_, tasks, users = pushed_round
    votes = {
        100: [(10, 70, True), (11, 71, True), (12, 72, False)],
        101: [(13, 70, True), (14, 71, False), (15, 72, False)],
        102: [(16, 70, True), (17, 71, True), (18, 72, True)],
    }
    apply_pull(
        round_,
        _read(
            round_,
            T0,
            {
                task_id: (
                    task.key,
                    [_raw(a, task_id, u, v, T0) for a, u, v in votes[task_id]],
                )
                for task, task_id in zip(tasks, votes, strict=True)
            },
        ),
        source="reconcile",
    )
    round_ = close_round(round_)
    snapshot = round_.closing_snapshot
    assert len(snapshot["annotation_versions"]) == 9 and len(snapshot["counted"]) == 3
    assert snapshot["rules"]["method"] == "majority" and "gold_policy" in snapshot
    first = curate_round(round_)

    # After closing: an annotator leaves the role and a late Label Studio edit arrives.
    users[0].groups.clear()
    later = T0 + timedelta(minutes=5)
    apply_pull(
        round_,
        _read(
            round_,
            later,
            {
                102: (
                    tasks[2].key,
                    [_raw(16, 102, 70, False, later), _raw(17, 102, 71, True, T0)],
                )
            },
        ),
        source="reconcile",
    )
    assert Annotation.objects.get(labelstudio_id=16).aligned is False
    assert Annotation.objects.get(labelstudio_id=18).deleted
    second = curate_round(round_)
    assert second.pk != first.pk
    assert read_bytes(second.manifest_path) == read_bytes(first.manifest_path)
    assert second.checksum == first.checksum and second.row_count == first.row_count == 2
    assert second.lineage["from_closing_snapshot"] is True
