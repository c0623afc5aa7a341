"""Admin pages: jobs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from curation import models as m
from curation.admin_base import PlatformAdmin, progress_bar, summarised
from curation.services import jobs as job_services
from curation.services.schedules import save_schedule


@admin.register(m.Job)
class JobAdmin(PlatformAdmin):
    list_display = [
        "id",
        "kind",
        "queue",
        "status",
        "progress",
        "attempt",
        "heartbeat_at",
        "worker_id",
        "created_at",
    ]
    list_filter = ["status", "queue", "kind"]
    search_fields = ["kind", "worker_id", "=id"]
    date_hierarchy = "created_at"
    readonly_fields = summarised(
        [f.name for f in m.Job._meta.fields] + ["progress"], ("params", "result", "state")
    )
    exclude = ["params", "result", "state"]
    actions = ["cancel", "retry"]

    @admin.display(description="progress")
    def progress(self, obj: m.Job) -> str:
        return progress_bar(obj.percent, obj.status)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.cancel_job")

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        for job in queryset:
            job_services.request_cancel(job)
        self.message_user(request, f"Cancellation requested for {queryset.count()} job(s).")

    @admin.action(description="Retry selected jobs", permissions=["cancel"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        for job in queryset:
            try:
                job_services.retry_job(job)
            except job_services.JobNotRetryable as exc:
                self.message_user(request, str(exc), messages.WARNING)


@admin.register(m.Schedule)
class ScheduleAdmin(PlatformAdmin):
    list_display = [
        "name",
        "cron",
        "job_kind",
        "queue",
        "enabled",
        "next_run_at",
        "last_run_at",
        "last_error",
    ]
    list_filter = ["enabled", "job_kind"]
    search_fields = ["name"]
    # The form runs Schedule.clean(): a bad cron, kind, queue or params is shown on its field.
    readonly_fields = ["next_run_at", "last_run_at", "last_error"]

    def save_model(self, request: HttpRequest, obj: m.Schedule, form: object, change: bool) -> None:
        save_schedule(obj)
