"""Admin pages: images."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from curation import models as m
from curation.admin_base import PlatformAdmin
from curation.media import signed_path


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
