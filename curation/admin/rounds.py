"""Admin pages: rounds."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from curation import models as m
from curation.admin_base import PlatformAdmin


@admin.register(m.AnnotationRound)
class AnnotationRoundAdmin(PlatformAdmin):
    list_display = [
        "name",
        "kind",
        "state",
        "generation_batch",
        "overlap",
        "labelstudio_project_id",
        "created_at",
    ]
    list_filter = ["kind", "state"]
    search_fields = ["name"]
    list_select_related = ["generation_batch"]
    date_hierarchy = "created_at"
    raw_id_fields = ["style_exemplars"]
    readonly_fields = ["state", "labelstudio_project_id", "reconcile_watermark", "result_version"]


@admin.register(m.LabelTask)
class LabelTaskAdmin(PlatformAdmin):
    list_display = ["key", "round", "is_gold", "labelstudio_task_id", "created_at"]
    list_filter = ["is_gold", "round"]
    search_fields = ["=key", "prompt"]
    list_select_related = ["round"]
    raw_id_fields = ["generation", "other_generation", "image"]


@admin.register(m.Annotation)
class AnnotationAdmin(PlatformAdmin):
    list_display = [
        "labelstudio_id",
        "task",
        "annotator_email",
        "aligned",
        "passed",
        "rating",
        "preferred",
        "deleted",
        "updated_at",
    ]
    list_filter = ["deleted", "aligned", "passed", "rating"]
    search_fields = ["annotator_email", "=labelstudio_id"]
    list_select_related = ["task"]
    readonly_fields = [f.name for f in m.Annotation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(m.WebhookEvent)
class WebhookEventAdmin(PlatformAdmin):
    list_display = ["id", "action", "received_at", "processed_at", "error"]
    list_filter = ["action"]
    date_hierarchy = "received_at"
    readonly_fields = ["action", "payload", "received_at", "processed_at", "error"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(m.Judgement)
class JudgementAdmin(PlatformAdmin):
    list_display = ["task", "value", "confidence", "n_ratings", "method", "computed_at"]
    list_filter = ["method"]
    list_select_related = ["task"]
