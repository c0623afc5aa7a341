"""Admin pages: annotation rounds (their tasks and annotations: annotations.py; accounts:
annotators.py).

Starting work (push, reconcile, close, curate, annotator sync) enqueues a job; the round page
shows counts, agreement and the annotators flagged by gold checks (their annotations are kept
but excluded from aggregation).
"""

from __future__ import annotations

from typing import Any

from django import forms
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
        "gold_interval",
        "consensus_agreement",
        "counted",
        "flagged",
        "excluded_reason",
    ]
    readonly_fields = fields
    verbose_name_plural = "annotators (flagged ones are excluded from aggregation)"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="gold accuracy interval")
    def gold_interval(self, obj: m.AnnotatorRoundStats) -> str:
        if obj.gold_accuracy_low is None or obj.gold_accuracy_high is None:
            return "—"
        return f"[{obj.gold_accuracy_low:.2f}, {obj.gold_accuracy_high:.2f}]"


class RoundNoticeInline(admin.TabularInline):
    model = m.RoundNotice
    extra = 0
    can_delete = False
    fields = ["created_at", "kind", "message"]
    readonly_fields = fields
    verbose_name_plural = "what Label Studio did to this round"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AnnotationRoundForm(forms.ModelForm):
    """Adding a round goes through `create_round` (tasks and gold); this checks its inputs."""

    class Meta:
        model = m.AnnotationRound
        fields = [
            "name",
            "kind",
            "generation_batch",
            "other_generation_batch",
            "overlap",
            "gold_rate",
            "gold_accuracy_threshold",
            "min_gold_answered",
            "gold_confidence",
            "curation_rules",
            "style_exemplars",
            "members",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance.pk is None:
            kind = data.get("kind")
            if not data.get("generation_batch"):
                self.add_error("generation_batch", "a round rates a generation batch")
            if kind == m.AnnotationRound.Kind.PAIRWISE and not data.get("other_generation_batch"):
                self.add_error("other_generation_batch", "a pairwise round compares two batches")
            if kind != m.AnnotationRound.Kind.PAIRWISE and data.get("other_generation_batch"):
                self.add_error("other_generation_batch", "only pairwise rounds compare batches")
        return data


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
    form = AnnotationRoundForm
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
        "snapshot_summary",
    ]
    # Shown as a link and a summary table: set by push and by quality computation, never by hand.
    exclude = ["labelstudio_project_id", "quality", "closing_snapshot"]
    inlines = [RoundNoticeInline, AnnotatorRoundStatsInline]

    @admin.display(description="closing snapshot")
    def snapshot_summary(self, obj: m.AnnotationRound) -> str:
        snap = obj.closing_snapshot or {}
        if not snap:
            return "— (taken when the round closes; curation then reads only it)"
        excluded = snap.get("excluded") or {}
        return format_html(
            "closed {} · {} annotation versions · {} annotators counted · excluded: {}",
            snap.get("closed_at", "?"),
            len(snap.get("annotation_versions", [])),
            len(snap.get("counted", {})),
            "; ".join(f"{k}: {v}" for k, v in excluded.items()) or "none",
        )

    actions = [
        "push",
        "reconcile_now",
        "close",
        "curate",
        "sync_annotator_accounts",
        "archive",
        "unarchive",
        "make_gold",
    ]

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return super().get_inlines(request, obj) if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        from curation.services.rounds.create import create_round

        data = form.cleaned_data
        round_ = create_round(
            name=data["name"],
            kind=data["kind"],
            generation_batch=data["generation_batch"],
            other_generation_batch=data.get("other_generation_batch"),
            overlap=data["overlap"],
            gold_rate=data["gold_rate"],
            gold_accuracy_threshold=data["gold_accuracy_threshold"],
            min_gold_answered=data["min_gold_answered"],
            gold_confidence=data["gold_confidence"],
            curation_rules=data.get("curation_rules") or {},
            members=list(data["members"]) or None,
            user=request.user,
        )
        obj.pk = round_.pk
        obj._state.adding = False
        obj.refresh_from_db()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change:
            super().save_related(request, form, formsets, change)
            return
        # create_round set the members (the chosen ones, or every annotator) and tasks.
        form.instance.style_exemplars.set(form.cleaned_data.get("style_exemplars") or [])

    @admin.action(
        description="Add high-agreement judgements to the gold pool", permissions=["start"]
    )
    def make_gold(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.gold import add_gold_from_round

        for round_ in queryset:
            added = add_gold_from_round(round_, user=request.user)
            self.message_user(
                request,
                f"{round_}: {len(added)} gold items added to the {round_.kind} pool"
                + ("" if added else " (no unanimous judgement with two or more votes)"),
                messages.SUCCESS if added else messages.WARNING,
            )

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # the record: archive instead

    @admin.action(
        description="Archive (hide from lists; nothing is deleted)", permissions=["start"]
    )
    def archive(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.rounds.archive import set_archived

        for round_ in queryset:
            set_archived(round_, True)
        self.message_user(request, f"{queryset.count()} round(s) archived.")

    @admin.action(description="Unarchive", permissions=["start"])
    def unarchive(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.rounds.archive import set_archived

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
        if obj is not None and obj.pk is not None:
            # What the tasks were made from is fixed once create_round made them.
            return [*self.readonly_fields, "kind", "generation_batch", "other_generation_batch"]
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

    @admin.action(
        description="Reconcile now (read the whole project from Label Studio)",
        permissions=["start"],
    )
    def reconcile_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._enqueue(
            request,
            queryset,
            "labelstudio.reconcile",
            (State.PUSHED, State.ANNOTATING, State.CLOSED),
            full=True,
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
