"""Admin for curation: images, embeddings, recipes, datasets, prompts, rounds and jobs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from curation import models as m
from curation.admin_base import PlatformAdmin, progress_bar
from curation.media import signed_path
from curation.services import jobs as job_services
from curation.services.schedules import save_schedule


@admin.register(m.Source)
class SourceAdmin(PlatformAdmin):
    list_display = ["name", "description", "created_at"]
    search_fields = ["name"]


class RefusalInline(admin.TabularInline):
    model = m.Refusal
    extra = 0
    can_delete = False
    readonly_fields = ["origin", "reason", "created_at"]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(m.IngestBatch)
class IngestBatchAdmin(PlatformAdmin):
    list_display = [
        "id",
        "source",
        "ingested",
        "duplicates",
        "near_duplicates",
        "quarantined",
        "job",
        "created_at",
    ]
    list_filter = ["source"]
    list_select_related = ["source", "job"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "source",
        "paths",
        "ingested",
        "duplicates",
        "near_duplicates",
        "quarantined",
        "job",
    ]
    inlines = [RefusalInline]


@admin.register(m.Image)
class ImageAdmin(PlatformAdmin):
    list_display = [
        "thumbnail",
        "sha256_short",
        "width",
        "height",
        "format",
        "has_alpha",
        "status",
        "source",
        "created_at",
    ]
    list_filter = ["status", "has_alpha", "format", "source"]
    search_fields = ["=sha256", "origin", "caption"]
    list_select_related = ["source"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "thumbnail",
        "sha256",
        "phash",
        "width",
        "height",
        "format",
        "has_alpha",
        "storage_key",
        "duplicate_of",
        "source",
        "batch",
        "origin",
    ]
    actions = ["quarantine", "restore"]

    @admin.display(description="image")
    def thumbnail(self, obj: m.Image) -> str:
        if not obj.storage_key:
            return "—"
        # The checkerboard shows transparent stickers as cut-outs.
        return format_html(
            '<img src="{}" style="max-height:64px;max-width:64px;background:'
            'repeating-conic-gradient(#ccc 0 25%,#fff 0 50%) 50%/12px 12px" loading="lazy">',
            signed_path(obj.storage_key),
        )

    @admin.display(description="sha256")
    def sha256_short(self, obj: m.Image) -> str:
        return obj.sha256[:12]

    @admin.action(description="Quarantine selected images", permissions=["change"])
    def quarantine(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.update(status=m.Image.Status.QUARANTINED)
        self.message_user(request, f"{count} image(s) quarantined.")

    @admin.action(description="Restore selected images", permissions=["change"])
    def restore(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.update(status=m.Image.Status.OK)
        self.message_user(request, f"{count} image(s) restored.")


@admin.register(m.EmbeddingSpace)
class EmbeddingSpaceAdmin(PlatformAdmin):
    list_display = ["name", "model_name", "dim", "weights_sha256", "created_at"]
    search_fields = ["name", "model_name"]


@admin.register(m.EmbeddingShard)
class EmbeddingShardAdmin(PlatformAdmin):
    list_display = ["space", "index", "count", "status", "first_image_id", "last_image_id"]
    list_filter = ["status", "space"]
    list_select_related = ["space"]


@admin.register(m.VectorIndex)
class VectorIndexAdmin(PlatformAdmin):
    list_display = [
        "space",
        "version",
        "index_type",
        "vector_count",
        "recall_at_k",
        "recall_k",
        "created_at",
    ]
    list_filter = ["space", "index_type"]
    list_select_related = ["space"]
    readonly_fields = [
        "space",
        "version",
        "index_type",
        "params",
        "path",
        "vector_count",
        "recall_at_k",
        "recall_k",
    ]


@admin.register(m.Recipe)
class RecipeAdmin(PlatformAdmin):
    list_display = ["name", "threshold", "top_k", "created_at"]
    search_fields = ["name", "description"]
    raw_id_fields = ["exemplars"]


@admin.register(m.RecipeRun)
class RecipeRunAdmin(PlatformAdmin):
    list_display = ["id", "recipe", "index", "job", "created_at"]
    list_filter = ["recipe"]
    list_select_related = ["recipe", "index", "job"]
    date_hierarchy = "created_at"
    readonly_fields = ["recipe", "index", "config", "stats", "job"]


@admin.register(m.RecipeScore)
class RecipeScoreAdmin(PlatformAdmin):
    list_display = ["image", "run", "score", "probability", "weak_label", "decision"]
    list_filter = ["decision", "weak_label"]
    list_select_related = ["image", "run__recipe"]
    raw_id_fields = ["image", "run"]
    actions = ["accept", "reject"]

    @admin.action(description="Accept selected images", permissions=["change"])
    def accept(self, request: HttpRequest, queryset: QuerySet) -> None:
        queryset.update(decision=m.RecipeScore.Decision.ACCEPTED)

    @admin.action(description="Reject selected images", permissions=["change"])
    def reject(self, request: HttpRequest, queryset: QuerySet) -> None:
        queryset.update(decision=m.RecipeScore.Decision.REJECTED)


@admin.register(m.Dataset)
class DatasetAdmin(PlatformAdmin):
    list_display = ["name", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "description"]


class DatasetItemInline(admin.TabularInline):
    model = m.DatasetItem
    extra = 0
    raw_id_fields = ["image"]
    fields = ["image", "caption", "label", "weight", "split"]
    show_change_link = False
    max_num = 200

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("image")

    def _frozen(self, obj: m.DatasetVersion | None) -> bool:
        return bool(obj and obj.is_frozen)

    def has_add_permission(self, request: HttpRequest, obj: m.DatasetVersion | None = None) -> bool:
        return not self._frozen(obj) and super().has_add_permission(request, obj)

    def has_change_permission(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> bool:
        return not self._frozen(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> bool:
        return not self._frozen(obj) and super().has_delete_permission(request, obj)


@admin.register(m.DatasetVersion)
class DatasetVersionAdmin(PlatformAdmin):
    list_display = [
        "__str__",
        "dataset",
        "state",
        "row_count",
        "checksum_short",
        "frozen_by",
        "frozen_at",
    ]
    list_filter = ["state", "dataset__kind", "dataset"]
    list_select_related = ["dataset", "frozen_by"]
    search_fields = ["dataset__name", "reason", "=checksum"]
    date_hierarchy = "created_at"
    inlines = [DatasetItemInline]
    actions = ["freeze"]

    @admin.display(description="checksum")
    def checksum_short(self, obj: m.DatasetVersion) -> str:
        return obj.checksum[:12]

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> list[str]:
        always = [
            "state",
            "manifest_path",
            "checksum",
            "row_count",
            "diff",
            "frozen_by",
            "frozen_at",
            "number",
        ]
        if obj and obj.is_frozen:
            return [f.name for f in self.model._meta.fields]
        return always

    def has_delete_permission(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> bool:
        if obj and obj.is_frozen:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: m.DatasetVersion, form: object, change: bool
    ) -> None:
        from curation.services.versions import next_version_number

        if not change:
            obj.number = next_version_number(obj.dataset)
        super().save_model(request, obj, form, change)

    @admin.action(
        description="Freeze selected versions (write manifest, make immutable)",
        permissions=["freeze"],
    )
    def freeze(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.versions import freeze_version

        for version in queryset.filter(state=m.DatasetVersion.State.DRAFT):
            try:
                version = freeze_version(version, user=request.user, reason=version.reason)
            except ValueError as exc:
                self.message_user(request, f"{version}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{version} frozen: {version.row_count} rows, checksum {version.checksum[:12]}.",
                )

    def has_freeze_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.freeze_datasetversion")


@admin.register(m.StyleDescriptor)
class StyleDescriptorAdmin(PlatformAdmin):
    list_display = ["name", "prefix", "suffix"]
    search_fields = ["name", "prefix", "suffix"]


class PromptInline(admin.TabularInline):
    model = m.Prompt
    extra = 0
    fields = ["text", "category", "subject", "tags"]
    max_num = 500


@admin.register(m.PromptSet)
class PromptSetAdmin(PlatformAdmin):
    list_display = ["name", "version", "purpose", "frozen", "created_at"]
    list_filter = ["purpose", "frozen"]
    search_fields = ["name", "description"]
    inlines = [PromptInline]

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.PromptSet | None = None
    ) -> list[str]:
        if obj and obj.frozen:
            return [f.name for f in self.model._meta.fields]
        return ["frozen", "stats"]


@admin.register(m.Prompt)
class PromptAdmin(PlatformAdmin):
    list_display = ["text", "prompt_set", "category", "subject"]
    list_filter = ["category", "prompt_set"]
    search_fields = ["text", "subject"]
    list_select_related = ["prompt_set"]


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
    readonly_fields = [f.name for f in m.Job._meta.fields] + ["progress"]
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
    list_display = ["name", "cron", "job_kind", "queue", "enabled", "next_run_at", "last_run_at"]
    list_filter = ["enabled", "job_kind"]
    search_fields = ["name"]
    readonly_fields = ["next_run_at", "last_run_at"]

    def save_model(self, request: HttpRequest, obj: m.Schedule, form: object, change: bool) -> None:
        save_schedule(obj)


def _restrict_rq_dashboard() -> None:
    """django_rq's queue dashboard lets any staff user in; it is an operator's page: admins only."""
    from django.core.exceptions import PermissionDenied
    from django_rq import models as rq_models
    from django_rq.admin import QueueAdmin

    from curation.roles import is_platform_admin

    class AdminOnlyQueueAdmin(QueueAdmin):
        def has_module_permission(self, request: HttpRequest) -> bool:
            return is_platform_admin(request.user)

        def get_urls(self):
            # Every queue page (stats, job detail, requeue, delete) gets the same admin-only guard.
            patterns = super().get_urls()
            for pattern in patterns:
                if hasattr(pattern, "callback"):
                    pattern.callback = _admins_only(pattern.callback)
            return patterns

    def _admins_only(view):
        from functools import wraps

        @wraps(view)
        def guarded(request: HttpRequest, *args, **kwargs):
            if request.user.is_staff and not is_platform_admin(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return guarded

    for model in list(admin.site._registry):
        if model._meta.app_label == "django_rq":
            admin.site.unregister(model)
            admin.site.register(model, AdminOnlyQueueAdmin)
    del rq_models


_restrict_rq_dashboard()

admin.site.site_header = "Sticker curation platform"
admin.site.site_title = "Sticker curation"
admin.site.index_title = "Curate, train, rate"
