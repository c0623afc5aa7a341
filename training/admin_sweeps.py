"""Admin for trade-off sweeps: start one from a retrain round, follow it, cancel or resume it.

A sweep is started by the retrain round admin's action (admin_loops, on that round's inputs) or
the API;
its page shows progress, the text-alignment vs style-similarity plane and the headline table.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from curation.admin_base import PlatformAdmin, json_summary, progress_bar
from training.models import TradeoffSweep
from training.services.sweeps import (
    SweepNotRetryable,
    cancel_sweep,
    resume_sweep,
)


class TradeoffSweepAdmin(PlatformAdmin):
    list_display = ["name", "status", "progress", "retrain_round", "best_run", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    list_select_related = ["job", "retrain_round"]
    actions = ["cancel", "resume"]
    fields = [
        "name",
        "status",
        "progress",
        "error",
        "retrain_round_link",
        "base_checkpoint",
        "dataset_versions",
        "eval_prompt_set",
        "style_descriptor",
        "seeds",
        "settings_summary",
        "plane",
        "arms_summary",
        "job",
        "created_by",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # started from a retrain round (its admin action) or the API

    def has_change_permission(self, request: HttpRequest, obj: TradeoffSweep | None = None) -> bool:
        return request.user.has_perm("training.start_tradeoffsweep")

    @admin.display(description="progress")
    def progress(self, obj: TradeoffSweep) -> str:
        job = obj.job
        if job is None:
            return "no job"
        percent = round(100 * job.progress_done / job.progress_total) if job.progress_total else 0
        return format_html(
            "{} <small>{}</small>", progress_bar(percent, job.status), job.progress_message
        )

    @admin.display(description="best Style Tailoring run")
    def best_run(self, obj: TradeoffSweep) -> str:
        return (obj.report or {}).get("headline", {}).get("best_run", "—")

    @admin.display(description="retrain round")
    def retrain_round_link(self, obj: TradeoffSweep) -> str:
        if obj.retrain_round_id is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a> (its report shows this sweep)',
            reverse("round-report", args=[obj.retrain_round_id]),
            obj.retrain_round,
        )

    @admin.display(description="settings")
    def settings_summary(self, obj: TradeoffSweep) -> str:
        return json_summary(obj.settings)

    @admin.display(description="arms")
    def arms_summary(self, obj: TradeoffSweep) -> str:
        return json_summary(obj.arms) if obj.arms else "none yet"

    @admin.display(description="text alignment vs style similarity")
    def plane(self, obj: TradeoffSweep) -> str:
        if not (obj.report or {}).get("points"):
            return "no report yet (written when every arm is scored)"
        from training.engine.toy_world.sweep import plane_svg

        return mark_safe(plane_svg(obj.report))  # matplotlib's own SVG, no user text in it

    @admin.action(description="Cancel selected sweeps", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        for sweep in queryset:
            try:
                cancel_sweep(sweep)
            except SweepNotRetryable as error:
                self.message_user(request, str(error), messages.WARNING)
            else:
                self.message_user(request, f"{sweep}: cancel requested")

    @admin.action(
        description="Resume selected sweeps (finished arms are kept)", permissions=["change"]
    )
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        for sweep in queryset:
            try:
                job = resume_sweep(sweep)
            except SweepNotRetryable as error:
                self.message_user(request, str(error), messages.WARNING)
            else:
                self.message_user(request, f"{sweep}: queued again (job #{job.pk})")


def register() -> None:
    if not admin.site.is_registered(TradeoffSweep):
        admin.site.register(TradeoffSweep, TradeoffSweepAdmin)
