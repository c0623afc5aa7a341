"""Admin pages: retrieval."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from curation import models as m
from curation.admin_base import PlatformAdmin


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
