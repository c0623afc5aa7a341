"""Admin pages: retrieval."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from curation import models as m
from curation.admin_base import PlatformAdmin, json_field
from curation.models.recipes import ImageFeatures


@admin.register(m.EmbeddingSpace)
class EmbeddingSpaceAdmin(PlatformAdmin):
    list_display = ["name", "model_name", "dim", "weights_sha256", "created_at"]
    search_fields = ["name", "model_name"]
    actions = ["embed_pending", "build_index"]

    @admin.action(
        description="Embed images not embedded yet (one job per shard)", permissions=["change"]
    )
    def embed_pending(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.embeddings import enqueue_embedding, plan_embedding

        for space in queryset:
            planned = plan_embedding(space)
            jobs = enqueue_embedding(space, user=request.user)
            self.message_user(
                request,
                f"{space}: planned {len(planned)} new shards, enqueued {len(jobs)} embed jobs.",
            )

    @admin.action(
        description="Build a new index version from finished shards", permissions=["change"]
    )
    def build_index(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.indexes import enqueue_build_index

        for space in queryset:
            if not space.shards.filter(status=m.EmbeddingShard.Status.DONE).exists():
                self.message_user(request, f"{space}: no finished shards yet.", messages.WARNING)
                continue
            job = enqueue_build_index(space, user=request.user)
            self.message_user(request, f"{space}: enqueued build_index job {job.pk}.")


@admin.register(m.EmbeddingShard)
class EmbeddingShardAdmin(PlatformAdmin):
    list_display = [
        "space",
        "index",
        "count",
        "status",
        "failure_count",
        "first_image_id",
        "last_image_id",
    ]
    list_filter = ["status", "space"]
    list_select_related = ["space"]
    readonly_fields = [
        "space",
        "index",
        "first_image_id",
        "last_image_id",
        "path",
        "count",
        "failures",
        "status",
    ]

    @admin.display(description="failures")
    def failure_count(self, obj: m.EmbeddingShard) -> int:
        return len(obj.failures or [])


@admin.register(m.VectorIndex)
class VectorIndexAdmin(PlatformAdmin):
    list_display = [
        "space",
        "version",
        "index_type",
        "vector_count",
        "recall_at_k",
        "text_recall_at_k",
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
        "text_recall_at_k",
        "recall_k",
    ]


@admin.register(m.Recipe)
class RecipeAdmin(PlatformAdmin):
    """Queries and labelling functions are JSON; Recipe.clean() names the field that is wrong."""

    list_display = ["name", "threshold", "top_k", "created_at"]
    search_fields = ["name", "description"]
    raw_id_fields = ["exemplars"]
    actions = ["run_recipe"]

    @admin.action(description="Run selected recipes over the pool", permissions=["change"])
    def run_recipe(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.recipes import start_recipe_run

        for recipe in queryset:
            try:
                run = start_recipe_run(recipe, user=request.user)
            except ValueError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{recipe}: enqueued recipe_run job {run.job_id} ({run}).")


def _review_link(run: m.RecipeRun) -> str:
    return format_html(
        '<a href="{}" class="review-link">Review grid</a>',
        reverse("curation-review", args=[run.pk]),
    )


@admin.register(m.RecipeRun)
class RecipeRunAdmin(PlatformAdmin):
    list_display = ["id", "recipe", "index", "status", "scored", "review", "job", "created_at"]
    list_filter = ["recipe"]
    list_select_related = ["recipe", "index__space", "job"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "review",
        "recipe",
        "index",
        "decisions",
        "lf_table",
        json_field("config", "recipe as it ran"),
        json_field("stats"),
        "job",
    ]
    exclude = ["config", "stats"]

    @admin.display(description="decisions")
    def decisions(self, obj: m.RecipeRun) -> str:
        from curation.selectors.recipes import decisions_summary

        return decisions_summary(obj)

    @admin.display(description="status")
    def status(self, obj: m.RecipeRun) -> str:
        return obj.stats.get("status", "")

    @admin.display(description="scored")
    def scored(self, obj: m.RecipeRun) -> int | str:
        return obj.stats.get("candidates", "")

    @admin.display(description="review")
    def review(self, obj: m.RecipeRun) -> str:
        return _review_link(obj) if obj.pk else ""

    @admin.display(description="labelling functions")
    def lf_table(self, obj: m.RecipeRun) -> str:
        rows = obj.stats.get("lf") or []
        if not rows:
            return "—"
        header = format_html(
            "<tr>" + "<th>{}</th>" * 8 + "</tr>",
            "LF",
            "coverage",
            "overlap",
            "conflict",
            "accuracy on decisions",
            "decisions it voted on",
            "learned P(sticker vote | sticker)",
            "learned P(not vote | not)",
        )

        def rate(value: float | None) -> str:
            return "—" if value is None else f"{value:.2f}"

        body = [
            format_html(
                # format_html escapes its arguments to strings first: format numbers here.
                "<tr>" + "<td>{}</td>" * 8 + "</tr>",
                row["name"],
                rate(row["coverage"]),
                rate(row["overlap"]),
                rate(row["conflict"]),
                rate(row.get("accuracy")),
                row.get("gold_votes", 0),
                rate(row.get("learned_true_positive_rate")),
                rate(row.get("learned_true_negative_rate")),
            )
            for row in rows
        ]
        return format_html(
            "<table>{}{}</table>", header, format_html("".join(["{}"] * len(body)), *body)
        )


@admin.register(m.RecipeScore)
class RecipeScoreAdmin(PlatformAdmin):
    list_display = ["image", "run", "score", "probability", "weak_label", "decision"]
    list_filter = ["decision", "weak_label"]
    list_select_related = ["image", "run__recipe"]
    raw_id_fields = ["image", "run"]
    actions = ["accept", "reject"]

    def _decide(self, request: HttpRequest, queryset: QuerySet, decision: str) -> None:
        from curation.services.review import set_decision

        changed = 0
        for run in m.RecipeRun.objects.filter(pk__in=queryset.values("run")).select_related(
            "recipe"
        ):
            ids = queryset.filter(run=run).values_list("pk", flat=True)
            changed += set_decision(run, list(ids), decision, user=request.user)
        self.message_user(request, f"{changed} image(s) {decision}; their recipes learn from it.")

    @admin.action(description="Accept selected images", permissions=["change"])
    def accept(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, m.RecipeScore.Decision.ACCEPTED)

    @admin.action(description="Reject selected images", permissions=["change"])
    def reject(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, m.RecipeScore.Decision.REJECTED)


@admin.register(m.RecipeDecision)
class RecipeDecisionAdmin(PlatformAdmin):
    """Decisions kept per recipe across runs; every later run of the recipe learns from them."""

    list_display = ["image", "recipe", "decision", "origin", "run", "decided_by", "updated_at"]
    list_filter = ["recipe", "decision", "origin"]
    list_select_related = ["image", "recipe", "run__recipe", "decided_by"]
    raw_id_fields = ["image", "run"]
    search_fields = ["=image__sha256"]


@admin.register(ImageFeatures)
class ImageFeaturesAdmin(PlatformAdmin):
    list_display = ["image", "version", "error", "computed_at"]
    list_filter = ["version"]
    raw_id_fields = ["image"]
    readonly_fields = ["image", "version", "values", "error", "computed_at"]
