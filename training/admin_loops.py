"""Admin for retrain rounds: start one from curated versions, follow its timeline, open the report.

Registered from TrainingConfig.ready() so it sits beside training/admin.py without editing it.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from curation.admin_base import PlatformAdmin, json_summary, progress_bar, summarised
from curation.models import DatasetVersion, PromptSet
from training.models import Checkpoint, RetrainRound
from training.selectors.loops import round_timeline
from training.services.evaluation import refresh_human_results
from training.services.loops import (
    RoundConfigError,
    StepNotRetryable,
    retry_failed_step,
    start_retrain_round,
    validate_round_inputs,
)

# How often an open round page asks for its timeline while a step runs.
TIMELINE_REFRESH_MS = 2000


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
    actions = ["retry_failed_step", "refresh_human", "start_sweep"]
    change_form_template = "admin/training/retrainround/change_form.html"

    def get_readonly_fields(
        self, request: HttpRequest, obj: RetrainRound | None = None
    ) -> list[str]:
        if obj is None:
            return []
        names = [f.name for f in RetrainRound._meta.fields if f.name != "report"]
        return summarised(names, ("hyperparameters", "seeds")) + [
            "dataset_versions",
            "report_link",
            "report_summary",
        ]

    def get_fields(self, request: HttpRequest, obj: RetrainRound | None = None) -> list[str]:
        if obj is None:
            return list(self.form.Meta.fields)
        return [f for f in self.get_readonly_fields(request, obj) if f not in ("id",)]

    @admin.display(description="report summary")
    def report_summary(self, obj: RetrainRound) -> str:
        summary = (obj.report or {}).get("summary")
        return json_summary(summary) if summary else "no report yet (the evaluate step writes it)"

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/timeline.json",
                wrap(self.timeline_json),
                name="training_retrainround_timeline",
            ),
            path(
                "<path:object_id>/retry-step/",
                wrap(require_POST(self.retry_step_view)),
                name="training_retrainround_retry_step",
            ),
            *super().get_urls(),
        ]

    def timeline_json(self, request: HttpRequest, object_id: str) -> JsonResponse:
        round_ = get_object_or_404(RetrainRound, pk=object_id)
        if not self.has_view_permission(request, round_):
            raise PermissionDenied
        return JsonResponse(round_timeline(round_))

    def retry_step_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        round_ = get_object_or_404(RetrainRound, pk=object_id)
        if not self.has_change_permission(request, round_):
            raise PermissionDenied
        try:
            step = retry_failed_step(round_, request.POST.get("step") or None)
        except StepNotRetryable as exc:
            self.message_user(request, str(exc), messages.WARNING)
        else:
            self.message_user(
                request, f"{round_}: step {step.name} queued again (job #{step.job_id})."
            )
        return HttpResponseRedirect(reverse("admin:training_retrainround_change", args=[round_.pk]))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        round_ = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if round_ is not None:
            timeline = round_timeline(round_)
            steps = {s.name: s for s in round_.steps.select_related("job")}
            context.update(
                timeline=timeline,
                timeline_rows=[
                    {
                        **row,
                        "bar": progress_bar(row["percent"], row["job_status"] or ""),
                        "output": json_summary(steps[row["name"]].output),
                        "job_url": (
                            reverse("admin:curation_job_change", args=[row["job"]])
                            if row["job"]
                            else ""
                        ),
                    }
                    for row in timeline["steps"]
                ],
                timeline_statuses=",".join(s["status"] for s in timeline["steps"])
                + "|"
                + timeline["state"],
                timeline_url=reverse("admin:training_retrainround_timeline", args=[round_.pk]),
                retry_url=reverse("admin:training_retrainround_retry_step", args=[round_.pk]),
                refresh_ms=TIMELINE_REFRESH_MS,
                can_retry=self.has_change_permission(request, round_),
                # Every field of a started round is read-only: nothing to save.
                show_save=False,
                show_save_and_continue=False,
                show_save_and_add_another=False,
            )
        return super().change_view(request, object_id, form_url, extra_context=context)

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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.start_retrainround")

    @admin.action(description="Retry the failed step of selected rounds", permissions=["change"])
    def retry_failed_step(self, request: HttpRequest, queryset: QuerySet) -> None:
        for round_ in queryset:
            try:
                step = retry_failed_step(round_)
            except StepNotRetryable as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"{round_}: retrying step {step.name}")

    @admin.action(description="Refresh human results in the report", permissions=["change"])
    def refresh_human(self, request: HttpRequest, queryset: QuerySet) -> None:
        for round_ in queryset:
            refresh_human_results(round_)
        self.message_user(request, f"Refreshed {queryset.count()} report(s).")

    def has_sweep_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.start_tradeoffsweep")

    @admin.action(
        description="Start a trade-off sweep on the selected rounds' inputs", permissions=["sweep"]
    )
    def start_sweep(self, request: HttpRequest, queryset: QuerySet) -> None:
        from training.services.sweeps import SweepConfigError, start_sweep_for_round

        for round_ in queryset:
            try:
                sweep = start_sweep_for_round(round_, user=request.user)
            except SweepConfigError as error:
                self.message_user(request, f"{round_}: {error}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    format_html(
                        '{}: <a href="{}">{}</a> queued on the gpu queue (sequential and Style '
                        "Tailoring at t_s {})",
                        round_,
                        reverse("admin:training_tradeoffsweep_change", args=[sweep.pk]),
                        sweep,
                        ", ".join(map(str, sweep.settings["t_s_values"])),
                    ),
                )


def register() -> None:
    if not admin.site.is_registered(RetrainRound):
        admin.site.register(RetrainRound, RetrainRoundAdmin)
