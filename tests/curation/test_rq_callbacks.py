"""The callbacks every RQ job carries can be imported by a worker and survive a lost job hash.

Found by the chaos round: after Redis restarted under a running job, the worker logged
"Invalid attribute name: failed_callback" — the guarded failure callback was a closure, which RQ
stores as `curation.compat.rq_callbacks.install.<locals>.failed_callback` and cannot import, so
RQ's clean-up of a dead worker's job (StartedJobRegistry.cleanup) would raise too.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings
from rq.exceptions import AbandonedJobError
from rq.job import Job as PlainRQJob
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import import_attribute

from curation.compat import rq_callbacks
from curation.services import jobs as svc

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rq_job(clean_redis_queues):
    import django_rq

    with override_settings(TASKS={"default": settings.TASK_BACKENDS["rq"]}):
        job = svc.enqueue_job("noop")
        job.refresh_from_db()
        yield django_rq.get_queue("default").fetch_job(job.task_result_id)


def test_stored_callbacks_import_as_the_guarded_functions(rq_job):
    assert import_attribute(rq_job._failure_callback_name) is rq_callbacks.failed_callback
    assert import_attribute(rq_job._success_callback_name) is rq_callbacks.success_callback


def test_callbacks_of_a_job_redis_lost_do_nothing(rq_job):
    rq_job.connection.delete(rq_job.key)  # Redis restarted without persistence mid-run
    fetched_callbacks = (rq_job.failure_callback, rq_job.success_callback)
    assert fetched_callbacks == (rq_callbacks.failed_callback, rq_callbacks.success_callback)
    rq_job.success_callback(rq_job, rq_job.connection, {})
    rq_job.failure_callback(rq_job, rq_job.connection, AbandonedJobError, AbandonedJobError(), None)


def test_failure_callback_of_a_plain_rq_job_does_nothing(rq_job):
    """RQ's registry clean-up loads a dead worker's job with its plain Job class."""
    plain = PlainRQJob.fetch(rq_job.id, connection=rq_job.connection)
    plain.execute_failure_callback(
        UnixSignalDeathPenalty, AbandonedJobError, AbandonedJobError(), None
    )
