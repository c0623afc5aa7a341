"""Admin pages: rounds, their tasks, annotations and webhook events (accounts: annotators.py).

Starting work (push, reconcile, close, curate, annotator sync) enqueues a job; the round page
shows counts, agreement and the annotators flagged by gold checks (their annotations are kept
but excluded from aggregation).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from curation import models as m
from curation.admin_base import PlatformAdmin, json_summary, progress_bar, rows_table
from curation.selectors.rounds import (
    annotator_progress,
    percent_done,
    round_counts,
    round_progress,
    with_progress,
)

State = m.AnnotationRound.State


class AnnotatorRoundStatsInline(admin.TabularInline):
    model = m.AnnotatorRoundStats
    extra = 0
    can_delete = False
    fields = [
        "label",
        "annotations",
        "gold_answered",
        "gold_correct",
        "gold_accuracy",
        "consensus_agreement",
        "counted",
        "flagged",
    ]
    readonly_fields = fields
    verbose_name_plural = "annotators (flagged ones are excluded from aggregation)"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "—" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def labelstudio_project_url(round_: m.AnnotationRound) -> str:
    return f"{settings.LABEL_STUDIO_URL.rstrip('/')}/projects/{round_.labelstudio_project_id}/data"


@admin.register(m.AnnotationRound)
class AnnotationRoundAdmin(PlatformAdmin):
    list_display = [
        "name",
        "kind",
        "state",
        "done",
        "live_agreement",
        "flagged",
        "labelstudio_link",
        "generation_batch",
        "created_at",
    ]
    list_filter = ["kind", "state", "archived"]
    search_fields = ["name"]
    list_select_related = ["generation_batch"]
    date_hierarchy = "created_at"
    raw_id_fields = ["style_exemplars", "generation_batch", "other_generation_batch"]
    filter_horizontal = ["members"]
    readonly_fields = [
        "state",
        "archived",
        "progress",
        "labelstudio_link",
        "labelstudio_title",
        "reconcile_watermark",
        "result_version",
        "counts",
        "agreement",
        "flagged_annotators",
        "annotators",
        "quality_summary",
    ]
    # Shown as a link and a summary table: set by push and by quality computation, never by hand.
    exclude = ["labelstudio_project_id", "quality"]
    inlines = [AnnotatorRoundStatsInline]
    actions = [
        "push",
        "reconcile_now",
        "close",
        "curate",
        "sync_annotator_accounts",
        "archive",
        "unarchive",
    ]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the record: archive instead

    @admin.action(
        description="Archive (hide from lists; nothing is deleted)", permissions=["start"]
    )
    def archive(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.rounds import set_archived

        for round_ in queryset:
            set_archived(round_, True)
        self.message_user(request, f"{queryset.count()} round(s) archived.")

    @admin.action(description="Unarchive", permissions=["start"])
    def unarchive(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.rounds import set_archived

        for round_ in queryset:
            set_archived(round_, False)
        self.message_user(request, f"{queryset.count()} round(s) unarchived.")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return with_progress(super().get_queryset(request))

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.AnnotationRound | None = None
    ) -> list[str]:
        # A curated round made its dataset version: what made it must not change afterwards.
        if obj is not None and obj.state == State.CURATED:
            names = [f.name for f in self.model._meta.fields if f.name not in self.exclude]
            return list(
                dict.fromkeys([*self.readonly_fields, *names, "style_exemplars", "members"])
            )
        return self.readonly_fields

    @admin.display(description="% done")
    def done(self, obj: m.AnnotationRound) -> str:
        if not getattr(obj, "n_tasks", 0):
            return "no tasks yet"
        return progress_bar(percent_done(obj.n_tasks, obj.n_done, obj.overlap), "")

    @admin.display(description="progress")
    def progress(self, obj: m.AnnotationRound) -> str:
        if obj.pk is None:
            return "—"
        p = round_progress(obj)
        if not p["n_tasks"]:
            return "no tasks yet (push the round to create them)"
        return format_html(
            "{} {} of {} wanted annotations ({} tasks × overlap {})",
            progress_bar(p["percent"]),
            p["n_done"],
            p["wanted"],
            p["n_tasks"],
            obj.overlap,
        )

    @admin.display(description="agreement")
    def live_agreement(self, obj: m.AnnotationRound) -> str:
        measured = (obj.quality or {}).get("agreement") or {}
        if not measured:
            return "not computed yet"
        name, first = next(iter(measured.items()))
        return format_html(
            '<span title="last computed {}">α {} · {} agree</span>',
            (obj.quality or {}).get("computed_at", "?"),
            _fmt(first.get("alpha")),
            _pct(first.get("percent")),
        )

    @admin.display(description="flagged")
    def flagged(self, obj: m.AnnotationRound) -> str:
        return self.flagged_annotators(obj)

    @admin.display(description="Label Studio")
    def labelstudio_link(self, obj: m.AnnotationRound) -> str:
        if not obj.labelstudio_project_id:
            return "not pushed"
        return format_html(
            '<a href="{}" target="_blank" rel="noopener">project {} ↗</a>',
            labelstudio_project_url(obj),
            obj.labelstudio_project_id,
        )

    @admin.display(description="annotators: progress and quality")
    def annotators(self, obj: m.AnnotationRound) -> str:
        if obj.pk is None:
            return "—"
        rows = [
            {
                **row,
                "share": format_html(
                    "{} {} of the round's tasks",
                    progress_bar(row["percent_of_tasks"]),
                    row["tasks"],
                ),
                "gold": (
                    f"{_pct(row['gold_accuracy'])} of {row['gold_answered']}"
                    if row["gold_answered"]
                    else "no gold answered"
                ),
                "agreement": _pct(row["consensus_agreement"]),
                "flag": "FLAGGED (excluded)" if row["flagged"] else "",
                "last": row["last"].strftime("%Y-%m-%d %H:%M") if row["last"] else "—",
            }
            for row in annotator_progress(obj)
        ]
        if not rows:
            return "nobody has annotated yet"
        return rows_table(
            rows,
            [
                ("annotator", "annotator"),
                ("share", "progress"),
                ("annotations", "annotations"),
                ("skipped", "skipped"),
                ("gold", "gold accuracy"),
                ("agreement", "agreement with consensus"),
                ("flag", "flag"),
                ("last", "last annotation"),
            ],
        )

    @admin.display(description="quality (last computed)")
    def quality_summary(self, obj: m.AnnotationRound) -> str:
        return json_summary(obj.quality)

    @admin.display(description="counts")
    def counts(self, obj: m.AnnotationRound) -> str:
        if obj.pk is None:
            return "—"
        c = round_counts(obj)
        t, a = c["tasks"], c["annotations"]
        return format_html(
            "{} tasks ({} gold, {} in Label Studio, {} judged) · {} annotations live, "
            "{} deleted, {} skipped, by {} annotators",
            t["total"],
            t["gold"],
            t["pushed"],
            t["judged"],
            a["live"],
            a["deleted"],
            a["skipped"],
            a["annotators"],
        )

    @admin.display(description="agreement (used annotations)")
    def agreement(self, obj: m.AnnotationRound) -> str:
        measured = (obj.quality or {}).get("agreement") or {}
        if not measured:
            return "not computed yet (reconcile or curate computes it)"
        return format_html_join(
            "",
            "<div>{}: Krippendorff α ({}) = {}, percent agreement = {}, over {} tasks</div>",
            (
                (name, v.get("level"), _fmt(v.get("alpha")), _fmt(v.get("percent")), v.get("units"))
                for name, v in measured.items()
            ),
        )

    @admin.display(description="flagged annotators")
    def flagged_annotators(self, obj: m.AnnotationRound) -> str:
        flagged = (obj.quality or {}).get("flagged_annotators")
        if flagged is None:
            return "—"
        return ", ".join(flagged) if flagged else "none"

    def has_start_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.start_round")

    def _enqueue(
        self, request: HttpRequest, queryset: QuerySet, kind: str, states: tuple, **params: object
    ) -> None:
        from curation.services.jobs import enqueue_job

        for round_ in queryset:
            if round_.state not in states:
                self.message_user(
                    request, f"{round_}: not possible while {round_.state}.", messages.WARNING
                )
                continue
            job = enqueue_job(
                kind, params={"round_id": round_.pk, **params}, user=request.user, target=round_
            )
            self.message_user(request, f"{round_}: job #{job.pk} ({kind}) enqueued.")

    @admin.action(description="Push to Label Studio", permissions=["start"])
    def push(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._enqueue(
            request, queryset, "labelstudio.push", (State.DRAFT, State.PUSHED, State.ANNOTATING)
        )

    @admin.action(description="Reconcile now (pull annotations)", permissions=["start"])
    def reconcile_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._enqueue(
            request,
            queryset,
            "labelstudio.reconcile",
            (State.PUSHED, State.ANNOTATING, State.CLOSED),
        )

    @admin.action(description="Close (final reconcile, then stop syncing)", permissions=["start"])
    def close(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._enqueue(
            request, queryset, "labelstudio.reconcile", (State.PUSHED, State.ANNOTATING), close=True
        )

    @admin.action(description="Curate into a frozen dataset version", permissions=["start"])
    def curate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._enqueue(
            request, queryset, "labelstudio.curate", (State.PUSHED, State.ANNOTATING, State.CLOSED)
        )

    @admin.action(description="Create Label Studio accounts for annotators", permissions=["start"])
    def sync_annotator_accounts(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.jobs import enqueue_job

        job = enqueue_job("labelstudio.sync_annotators", user=request.user)
        self.message_user(request, f"Job #{job.pk} (labelstudio.sync_annotators) enqueued.")


@admin.register(m.LabelTask)
class LabelTaskAdmin(PlatformAdmin):
    list_display = ["key", "round", "is_gold", "labelstudio_task_id", "created_at"]
    list_filter = ["is_gold", "round"]
    search_fields = ["=key", "prompt"]
    list_select_related = ["round"]
    raw_id_fields = ["generation", "other_generation", "image"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


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
