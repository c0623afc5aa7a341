"""Admin for training: checkpoints with lineage and exports, generation batches with their
images. Training runs are in training/admin_runs.py."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

import training.admin_runs  # noqa: F401  (registers the TrainingRun admin)
from curation.admin_base import PlatformAdmin, json_field, json_summary, progress_bar
from curation.media import signed_path
from training import models as m
from training.admin_base_models import BaseModelRegistrationMixin
from training.admin_exports import (
    CheckpointExportMixin,
    export_for_diffusers,
    export_for_kohya,
    export_with_options,
)
from training.admin_transparency import train_transparency_decoder


@admin.register(m.Checkpoint)
class CheckpointAdmin(CheckpointExportMixin, BaseModelRegistrationMixin, PlatformAdmin):
    list_display = ["name", "adapter", "step", "parent", "training_run", "created_at"]
    list_filter = ["adapter"]
    search_fields = ["name", "path"]
    list_select_related = ["parent", "training_run"]
    readonly_fields = [
        "lineage_summary",
        "exports",
        json_field("config"),
        json_field("lineage", "lineage (as stored)"),
        json_field("metrics"),
    ]
    exclude = ["config", "lineage", "metrics"]
    filter_horizontal = ["dataset_versions"]
    actions = [
        export_for_diffusers,
        export_for_kohya,
        export_with_options,
        train_transparency_decoder,
    ]

    @admin.display(description="lineage")
    def lineage_summary(self, obj: m.Checkpoint) -> SafeString | str:
        if obj.pk is None:
            return "—"
        lineage = obj.lineage or {}
        versions = format_html_join(
            "",
            "<li>{} [{}] <code>{}</code></li>",
            (
                (v, v.dataset.kind, v.checksum)
                for v in obj.dataset_versions.select_related("dataset")
            ),
        )
        parent = (
            format_html(
                '<a href="{}">{}</a>',
                reverse("admin:training_checkpoint_change", args=[obj.parent_id]),
                obj.parent,
            )
            if obj.parent_id
            else "—"
        )
        return format_html(
            "<div>recipe {} / adapter {}, step {}</div><div>parent: {}</div>"
            "<div>code version: <code>{}</code></div><div>dataset versions:<ul>{}</ul></div>"
            "<div>metrics: {}</div>",
            lineage.get("recipe", "—"),
            obj.adapter or "base model",
            obj.step,
            parent,
            lineage.get("code_version") or "unknown",
            versions or "none",
            json_summary(obj.metrics or {}),
        )


class GenerationInline(admin.TabularInline):
    model = m.Generation
    extra = 0
    can_delete = False
    fields = ["thumbnail", "prompt_text", "seed"]
    readonly_fields = fields
    max_num = 0

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).select_related("image")

    @admin.display(description="image")
    def thumbnail(self, obj: m.Generation) -> str:
        return format_html(
            '<img src="{}" style="max-height:64px;background:'
            'repeating-conic-gradient(#ccc 0 25%,#fff 0 50%) 50%/12px 12px">',
            signed_path(obj.image.storage_key),
        )


@admin.register(m.GenerationBatch)
class GenerationBatchAdmin(PlatformAdmin):
    list_display = ["name", "checkpoint", "prompt_set", "status", "progress", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    list_select_related = ["checkpoint", "prompt_set", "job"]
    date_hierarchy = "created_at"
    readonly_fields = ["status", "progress", "job"]
    inlines = [GenerationInline]
    actions = ["start"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.GenerationBatch | None = None
    ) -> list:
        # A batch that drew its images is what rounds and reports point at: it no longer changes.
        if obj is not None and obj.status == m.GenerationBatch.Status.SUCCEEDED:
            return [
                *self.readonly_fields,
                *(f.name for f in self.model._meta.fields if f.name not in self.readonly_fields),
            ]
        return self.readonly_fields

    def has_delete_permission(
        self, request: HttpRequest, obj: m.GenerationBatch | None = None
    ) -> bool:
        if obj is not None and obj.status == m.GenerationBatch.Status.SUCCEEDED:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="progress")
    def progress(self, obj: m.GenerationBatch) -> str:
        if obj.job is None:
            return "—"
        return progress_bar(obj.job.percent, obj.job.status)

    def has_start_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.start_trainingrun")

    @admin.action(description="Generate (only missing images are drawn)", permissions=["start"])
    def start(self, request: HttpRequest, queryset: QuerySet) -> None:
        from training.services.generation import (
            BatchNotStartable,
            GenerationBatchError,
            enqueue_generation,
        )

        for batch in queryset:
            try:
                job = enqueue_generation(batch, request.user)
            except (BatchNotStartable, GenerationBatchError) as error:
                self.message_user(request, f"{batch}: {error}", messages.ERROR)
                continue
            self.message_user(request, f"{batch}: generation job #{job.pk} enqueued on gpu.")


@admin.register(m.Generation)
class GenerationAdmin(PlatformAdmin):
    list_display = ["id", "batch", "prompt_text", "seed", "created_at"]
    list_filter = ["batch"]
    search_fields = ["prompt_text"]
    list_select_related = ["batch"]
    raw_id_fields = ["prompt", "image", "batch"]
