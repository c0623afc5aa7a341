"""Admin for retrain rounds: start one from curated versions, follow its timeline, open the report.

Registered from TrainingConfig.ready() so it sits beside training/admin.py without editing it.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from curation.admin_base import PlatformAdmin, progress_bar
from curation.models import DatasetVersion, PromptSet
from curation.services import jobs as job_services
from training.models import Checkpoint, RetrainRound, RoundStep
from training.services.evaluation import refresh_human_results
from training.services.loops import RoundConfigError, start_retrain_round, validate_round_inputs


def _latest_curated(kind: str) -> DatasetVersion | None:
    return (
        DatasetVersion.objects.filter(state=DatasetVersion.State.FROZEN, dataset__kind=kind)
        .order_by("-frozen_at", "-id")
        .first()
    )


class RetrainRoundForm(forms.ModelForm):
    dataset_versions = forms.ModelMultipleChoiceField(
        queryset=DatasetVersion.objects.filter(state=DatasetVersion.State.FROZEN).select_related(
            "dataset"
        ),
        help_text="Frozen versions only; Style Tailoring needs an alignment and a style version.",
    )

    class Meta:
        model = RetrainRound
        fields = [
            "name",
            "recipe",
            "adapter",
            "base_checkpoint",
            "dataset_versions",
            "prompt_set",
            "eval_prompt_set",
            "style_descriptor",
            "seeds",
            "hyperparameters",
        ]
        widgets = {
            "recipe": forms.Select(
                choices=[
                    ("style_tailoring", "Style Tailoring (joint, split timesteps)"),
                    ("sequential", "Sequential (alignment then style)"),
                    ("domain", "Domain fine-tuning"),
                ]
            )
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A started round's change form shows every field read-only, so none is in self.fields.
        if "name" in self.fields:
            self.fields["name"].required = False
        if not self.instance.pk:
            latest = [v for v in (_latest_curated("alignment"), _latest_curated("style")) if v]
            self.initial.setdefault("dataset_versions", [v.pk for v in latest])
            checkpoint = Checkpoint.objects.order_by("-id").first()
            if checkpoint:
                self.initial.setdefault("base_checkpoint", checkpoint.pk)
            for field, purpose in (("prompt_set", "generation"), ("eval_prompt_set", "evaluation")):
                found = PromptSet.objects.filter(purpose=purpose).order_by("-id").first()
                if found:
                    self.initial.setdefault(field, found.pk)
            self.initial.setdefault("seeds", [0, 1])
            self.initial.setdefault("hyperparameters", {})

    def clean(self) -> dict:
        cleaned = super().clean()
        versions = cleaned.get("dataset_versions")
        if versions is not None and cleaned.get("recipe"):
            try:
                validate_round_inputs(list(versions), cleaned["recipe"])
            except RoundConfigError as exc:
                self.add_error("dataset_versions", str(exc))
        return cleaned


class RoundStepInline(admin.TabularInline):
    model = RoundStep
    extra = 0
    can_delete = False
    fields = ["position", "name", "status", "job_link", "started_at", "finished_at", "error"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="job")
    def job_link(self, step: RoundStep) -> str:
        if not step.job_id:
            return "—"
        url = reverse("admin:curation_job_change", args=[step.job_id])
        return format_html(
            '<a href="{}">#{}</a> {}',
            url,
            step.job_id,
            progress_bar(step.job.percent, step.job.status),
        )


class RetrainRoundAdmin(PlatformAdmin):
    form = RetrainRoundForm
    list_display = [
        "name",
        "state",
        "recipe",
        "adapter",
        "checkpoint",
        "timeline",
        "report_link",
        "created_at",
    ]
    list_filter = ["state", "recipe", "adapter"]
    search_fields = ["name"]
    list_select_related = ["checkpoint"]
    date_hierarchy = "created_at"
    inlines = [RoundStepInline]
    actions = ["retry_failed_step", "refresh_human"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: RetrainRound | None = None
    ) -> list[str]:
        if obj is None:
            return []
        return [f.name for f in RetrainRound._meta.fields] + ["dataset_versions", "report_link"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("steps")

    @admin.display(description="timeline")
    def timeline(self, obj: RetrainRound) -> str:
        colours = {
            "succeeded": "#2a7a2a",
            "failed": "#ba2121",
            "running": "#417690",
            "pending": "#999",
        }
        return format_html_join(
            " → ",
            '<span style="color:{}">{}</span>',
            ((colours[s.status], s.name) for s in obj.steps.all()),
        )

    @admin.display(description="report")
    def report_link(self, obj: RetrainRound) -> str:
        return format_html('<a href="{}">report</a>', reverse("round-report", args=[obj.pk]))

    def save_model(
        self, request: HttpRequest, obj: RetrainRound, form: RetrainRoundForm, change: bool
    ) -> None:
        if change:
            return
        created = start_retrain_round(
            base_checkpoint=form.cleaned_data["base_checkpoint"],
            dataset_versions=list(form.cleaned_data["dataset_versions"]),
            prompt_set=form.cleaned_data["prompt_set"],
            eval_prompt_set=form.cleaned_data["eval_prompt_set"],
            recipe=form.cleaned_data["recipe"],
            adapter=form.cleaned_data["adapter"],
            hyperparameters=form.cleaned_data["hyperparameters"],
            seeds=form.cleaned_data["seeds"],
            style_descriptor=form.cleaned_data["style_descriptor"],
            user=request.user,
            name=form.cleaned_data["name"],
        )
        obj.pk = created.pk
        self.message_user(request, f"{created} started: training is queued on the gpu queue.")

    def save_related(
        self, request: HttpRequest, form: RetrainRoundForm, formsets: list, change: bool
    ) -> None:
        # start_retrain_round already stored the versions and created the steps.
        return None

    def get_inlines(self, request: HttpRequest, obj: RetrainRound | None = None) -> list:
        # The steps exist once the round starts; the add form has none to show.
        return self.inlines if obj is not None and obj.pk else []

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.start_retrainround")

    @admin.action(description="Retry the failed step of selected rounds", permissions=["change"])
    def retry_failed_step(self, request: HttpRequest, queryset: QuerySet) -> None:
        for round_ in queryset:
            step = round_.steps.filter(status=RoundStep.Status.FAILED).first()
            if step is None or step.job is None:
                self.message_user(request, f"{round_}: no failed step", messages.WARNING)
                continue
            job_services.retry_job(step.job)
            RetrainRound.objects.filter(pk=round_.pk).update(state=RetrainRound.State.RUNNING)
            self.message_user(request, f"{round_}: retrying step {step.name}")

    @admin.action(description="Refresh human results in the report", permissions=["change"])
    def refresh_human(self, request: HttpRequest, queryset: QuerySet) -> None:
        for round_ in queryset:
            refresh_human_results(round_)
        self.message_user(request, f"Refreshed {queryset.count()} report(s).")


def register() -> None:
    if not admin.site.is_registered(RetrainRound):
        admin.site.register(RetrainRound, RetrainRoundAdmin)
