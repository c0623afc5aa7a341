"""Jobs the user sees (status, progress, heartbeat, log, cancel, retry) and cron schedules.

A Job row is the user-facing record; the django-tasks task that runs it only carries its id, so
the same record survives a dead worker, a retry or a switch between the database and RQ backends.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from curation import job_registry
from curation.cron import cron_error
from curation.models.base import TimeStampedModel


class Job(TimeStampedModel):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Waiting to retry"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Lost (worker died)"

    ACTIVE = (Status.QUEUED, Status.RUNNING, Status.RETRYING)

    kind = models.CharField(max_length=64, db_index=True, help_text="Handler name, e.g. ingest.")
    queue = models.CharField(max_length=32, default="default", db_index=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    # What a resumed attempt starts from: a handler writes it between steps (a shard index,
    # a checkpoint path, a watermark), so a retried job skips what is already done.
    state = models.JSONField(default=dict, blank=True)
    progress_done = models.PositiveBigIntegerField(default=0)
    progress_total = models.PositiveBigIntegerField(default=0)
    progress_message = models.CharField(max_length=255, blank=True)
    log_tail = models.TextField(blank=True)
    error = models.TextField(blank=True)
    attempt = models.PositiveIntegerField(default=0)
    # The fencing token of the attempt now allowed to write: set when a run claims the job,
    # cleared when the job is requeued. A run whose token is no longer here was superseded, and
    # every write it tries (progress, state, heartbeat, result) is refused.
    attempt_token = models.CharField(max_length=32, blank=True)
    max_attempts = models.PositiveIntegerField(default=3)
    cancel_requested = models.BooleanField(default=False)
    worker_id = models.CharField(max_length=128, blank=True)
    task_result_id = models.CharField(max_length=64, blank=True)
    # When the task backend accepted the current dispatch; empty while no dispatch is known to
    # be live (never sent, the send failed, or the job was requeued), so the scheduler resends.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, db_index=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    schedule = models.ForeignKey(
        "curation.Schedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    # The row a job works on (an ingest batch, a training run...), for links from the admin.
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]
        permissions = [("cancel_job", "Can cancel or retry jobs")]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    @property
    def percent(self) -> float:
        if self.status == self.Status.SUCCEEDED:
            return 100.0
        if not self.progress_total:
            return 0.0
        return round(100.0 * min(self.progress_done, self.progress_total) / self.progress_total, 1)

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class Schedule(TimeStampedModel):
    """A cron expression that enqueues a job kind; the scheduler claims each due run once."""

    name = models.CharField(max_length=120, unique=True)
    cron = models.CharField(max_length=120, help_text="Five-field cron expression, in UTC.")
    job_kind = models.CharField(max_length=64)
    queue = models.CharField(max_length=32, default="default")
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(
        blank=True, help_text="Why the scheduler last skipped this schedule; empty when it ran."
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.cron})"

    def validation_errors(self) -> dict[str, str]:
        """Field name → what is wrong; empty when the scheduler can run this schedule."""
        errors: dict[str, str] = {}
        if problem := cron_error(self.cron):
            errors["cron"] = problem
        spec = job_registry.handler_for(self.job_kind)
        if spec is None:
            errors["job_kind"] = (
                f"no job handler named {self.job_kind!r}; known: "
                f"{', '.join(job_registry.known_kinds())}"
            )
        if problems := job_registry.params_errors(self.job_kind, self.params):
            errors["params"] = "; ".join(problems)
        if self.queue not in settings.JOB_QUEUES:
            errors["queue"] = f"{self.queue!r} is not a queue; known: {settings.JOB_QUEUES}"
        return errors

    def clean(self) -> None:
        super().clean()
        if errors := self.validation_errors():
            raise ValidationError(errors)
