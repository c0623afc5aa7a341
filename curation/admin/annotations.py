"""Admin pages for what a round produces: its Label Studio tasks, the annotations and their
history, per-annotator statistics, webhook events, judgements, and the gold pool."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from curation import models as m
from curation.admin_base import PlatformAdmin


@admin.register(m.LabelTask)
class LabelTaskAdmin(PlatformAdmin):
    list_display = ["key", "round", "is_gold", "labelstudio_task_id", "created_at"]
    list_filter = ["is_gold", "round"]
    search_fields = ["=key", "prompt"]
    list_select_related = ["round"]
    raw_id_fields = ["generation", "other_generation", "image"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AnnotationVersionInline(admin.TabularInline):
    model = m.AnnotationVersion
    extra = 0
    can_delete = False
    fields = [
        "seen_at",
        "change",
        "source",
        "answer",
        "labelstudio_updated_at",
        "labelstudio_task_id",
        "reason",
        "webhook_event",
    ]
    readonly_fields = fields
    ordering = ["id"]
    verbose_name_plural = "history (every version the platform saw, oldest first)"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="result")
    def answer(self, obj: m.AnnotationVersion) -> str:
        if obj.raw is None:
            return "—"
        from curation.labelstudio.parsing import parse_result

        parsed = parse_result(obj.raw.get("result"))
        shown = {
            k: v for k, v in parsed.__dict__.items() if k != "problems" and v not in (None, (), "")
        }
        if obj.raw.get("was_cancelled"):
            shown["skipped"] = True
        return ", ".join(f"{k}={v}" for k, v in shown.items()) or "(empty)"


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
        "was_cancelled",
        "deleted",
        "updated_at",
    ]
    list_filter = ["deleted", "was_cancelled", "aligned", "passed", "rating"]
    search_fields = ["annotator_email", "=labelstudio_id"]
    list_select_related = ["task"]
    readonly_fields = [f.name for f in m.Annotation._meta.fields]
    inlines = [AnnotationVersionInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(m.AnnotatorRoundStats)
class AnnotatorRoundStatsAdmin(PlatformAdmin):
    list_display = [
        "label",
        "round",
        "annotations",
        "gold_accuracy",
        "consensus_agreement",
        "counted",
        "flagged",
    ]
    list_filter = ["flagged", "counted"]
    search_fields = ["label"]
    list_select_related = ["round"]
    readonly_fields = [f.name for f in m.AnnotatorRoundStats._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(m.WebhookEvent)
class WebhookEventAdmin(PlatformAdmin):
    list_display = ["id", "action", "received_at", "processed_at", "error"]
    list_filter = ["action"]
    date_hierarchy = "received_at"
    readonly_fields = ["action", "payload", "received_at", "processed_at", "error"]
    actions = ["reprocess"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_reprocess_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.start_round")

    @admin.action(description="Process again", permissions=["reprocess"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.jobs import enqueue_job

        for event in queryset:
            enqueue_job("labelstudio.webhook", params={"event_id": event.pk, "force": True})
        self.message_user(request, f"{queryset.count()} event(s) enqueued for processing.")


@admin.register(m.Judgement)
class JudgementAdmin(PlatformAdmin):
    list_display = ["task", "value", "confidence", "n_ratings", "method", "computed_at"]
    list_filter = ["method"]
    list_select_related = ["task"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class GoldItemForm(forms.ModelForm):
    class Meta:
        model = m.GoldItem
        fields = ["kind", "answer", "image", "prompt", "generation", "other_generation", "active"]

    def clean(self) -> dict[str, Any]:
        from curation.services.gold import validate_gold

        data = super().clean()
        if data.get("kind") and "answer" in data:
            item = m.GoldItem(
                **{k: data.get(k) for k in ("kind", "answer", "image", "prompt")},
                generation=data.get("generation"),
                other_generation=data.get("other_generation"),
            )
            try:
                validate_gold(data["kind"], [item])
            except ValueError as exc:
                raise forms.ValidationError(str(exc).replace("gold[0].", "")) from exc
        return data


@admin.register(m.GoldItem)
class GoldItemAdmin(PlatformAdmin):
    """The gold pool: marked by hand here, or from a round's unanimous judgements (round
    action). Rounds mix active items of their kind in at their gold rate."""

    form = GoldItemForm
    list_display = ["id", "kind", "answer", "prompt", "active", "source_task", "created_at"]
    list_filter = ["kind", "active"]
    search_fields = ["prompt"]
    raw_id_fields = ["image", "generation", "other_generation"]
    readonly_fields = ["source_task", "created_by"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
