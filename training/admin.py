"""Admin for training: runs, checkpoints with lineage, generation batches."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from curation.admin_base import PlatformAdmin, progress_bar
from curation.media import signed_path
from training import models as m


@admin.register(m.TrainingRun)
class TrainingRunAdmin(PlatformAdmin):
    list_display = ["name", "recipe", "adapter", "status", "progress", "created_at"]
    list_filter = ["status", "recipe", "adapter"]
    search_fields = ["name"]
    list_select_related = ["job"]
    date_hierarchy = "created_at"
    filter_horizontal = ["dataset_versions"]
    readonly_fields = ["status", "job", "loss_curve", "output_dir", "progress"]

    @admin.display(description="progress")
    def progress(self, obj: m.TrainingRun) -> str:
        if obj.job is None:
            return "—"
        return progress_bar(obj.job.percent, obj.job.status)


@admin.register(m.Checkpoint)
class CheckpointAdmin(PlatformAdmin):
    list_display = ["name", "adapter", "step", "parent", "training_run", "created_at"]
    list_filter = ["adapter"]
    search_fields = ["name", "path"]
    list_select_related = ["parent", "training_run"]
    readonly_fields = ["config", "lineage", "metrics"]
    filter_horizontal = ["dataset_versions"]


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
    list_display = ["name", "checkpoint", "prompt_set", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["name"]
    list_select_related = ["checkpoint", "prompt_set"]
    date_hierarchy = "created_at"
    readonly_fields = ["status", "job"]
    inlines = [GenerationInline]


@admin.register(m.Generation)
class GenerationAdmin(PlatformAdmin):
    list_display = ["id", "batch", "prompt_text", "seed", "created_at"]
    list_filter = ["batch"]
    search_fields = ["prompt_text"]
    list_select_related = ["batch"]
    raw_id_fields = ["prompt", "image", "batch"]
