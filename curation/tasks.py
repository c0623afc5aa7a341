"""Django tasks: each loads a Job by id and runs it through curation.services.jobs."""

from django_tasks import task

from curation.services.jobs import execute_job


@task(queue_name="default")
def run_job(job_id: int) -> None:
    execute_job(job_id)
