"""Django tasks and job handlers.

`run_job` is the only django-tasks task: it carries a Job id, and this package registers it as
the job runner (curation.job_registry), so the job service dispatches it without importing it.
Handlers live in this package's modules (ingest, retrieval, labelstudio, ...), one per area,
registered with @job_handler.
"""

from django_tasks import task

from curation.job_registry import register_runner
from curation.services.jobs import execute_job


@task(queue_name="default")
def run_job(job_id: int) -> None:
    execute_job(job_id)


register_runner(run_job)
