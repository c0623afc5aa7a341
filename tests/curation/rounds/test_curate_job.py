"""A curate job curates once: a worker that dies after the version commits leaves no twin.

Found by the chaos round: `labelstudio.curate` froze its version in one transaction and the job
recorded success in another, so an attempt killed between the two was run again by the
recovery pass and froze a second, identical version of the round.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from curation.labelstudio import results
from curation.models import AnnotationRound, AnnotatorAccount, DatasetVersion, Job
from curation.services import jobs as svc
from curation.services.annotation_store import apply_pull
from curation.services.rounds.create import create_round
from tests.curation.rounds.test_store_and_snapshot import T0, _read

pytestmark = pytest.mark.django_db


@pytest.fixture
def rated_round(make_batch, make_annotators) -> AnnotationRound:
    batch = make_batch("curate-once", ["a fox", "an owl"])
    round_ = create_round(name="once", kind="alignment", generation_batch=batch, gold_rate=0)
    tasks = list(round_.tasks.order_by("pk"))
    for i, task in enumerate(tasks):
        task.labelstudio_task_id = 300 + i
        task.save()
    AnnotationRound.objects.filter(pk=round_.pk).update(labelstudio_project_id=7, state="pushed")
    round_.refresh_from_db()
    users = make_annotators(3)
    for i, user in enumerate(users):
        AnnotatorAccount.objects.create(user=user, email=user.email, labelstudio_user_id=80 + i)
    raws = {
        300 + t: (
            task.key,
            [
                {
                    "id": 1000 + 10 * t + u,
                    "task": 300 + t,
                    "completed_by": 80 + u,
                    "result": results.alignment_result(True, 4),
                    "was_cancelled": False,
                    "created_at": T0.isoformat(),
                    "updated_at": T0.isoformat(),
                }
                for u in range(3)
            ],
        )
        for t, task in enumerate(tasks)
    }
    apply_pull(round_, _read(round_, T0, raws), source="reconcile")
    return round_


def test_curate_attempt_killed_after_its_commit_is_not_curated_again(rated_round, monkeypatch):
    monkeypatch.setattr(svc, "dispatch", lambda pk, run_after=None: None)
    job = svc.enqueue_job("labelstudio.curate", params={"round_id": rated_round.pk})
    real_finish = svc._finish
    # Attempt 1 curates and commits, then its worker dies before it records the outcome.
    monkeypatch.setattr(svc, "_finish", lambda ctx, status, **kw: None)
    svc.execute_job(job.pk)
    first = DatasetVersion.objects.get(lineage__round=rated_round.pk)
    assert Job.objects.get(pk=job.pk).status == Job.Status.RUNNING
    assert svc.recover_lost_jobs(stale_after=timedelta(0)) == [job.pk]

    monkeypatch.setattr(svc, "_finish", real_finish)
    svc.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempt == 2
    assert list(DatasetVersion.objects.filter(lineage__round=rated_round.pk)) == [first]
    assert job.result == {
        "dataset_version": first.pk,
        "rows": first.row_count,
        "checksum": first.checksum,
    }
    assert first.row_count == 2
    assert "curated by an earlier attempt of this job" in job.log_tail


def test_superseded_curate_attempt_rolls_its_version_back(rated_round, monkeypatch):
    from curation.services import curation

    monkeypatch.setattr(svc, "dispatch", lambda pk, run_after=None: None)
    job = svc.enqueue_job("labelstudio.curate", params={"round_id": rated_round.pk})
    real_curate = curation.curate_round

    def presumed_lost_first(*args, **kwargs):
        # The scheduler gives the job to another worker while this attempt curates.
        svc.recover_lost_jobs(stale_after=timedelta(0))
        return real_curate(*args, **kwargs)

    monkeypatch.setattr(curation, "curate_round", presumed_lost_first)
    svc.execute_job(job.pk)
    assert not DatasetVersion.objects.filter(lineage__round=rated_round.pk).exists()
    rated_round.refresh_from_db()
    assert rated_round.state != "curated" and rated_round.result_version is None
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.state == {}
