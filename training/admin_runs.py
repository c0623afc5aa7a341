"""Admin for training runs: the form that only offers frozen versions and checks a run before
it is saved, start / cancel / resume (actions and buttons), progress, loss curve, validation
previews, log tail, the versions used and the checkpoints made."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from curation.admin_base import PlatformAdmin, progress_bar
from curation.media import signed_path
from curation.models import DatasetVersion
from training import models as m
from training.plots import loss_curve_svg

LOG_TAIL_SHOWN = 40
EDITABLE_STATUSES = (m.TrainingRun.Status.DRAFT,)


def _job_link(job: Any) -> SafeString | str:
    if job is None:
        return "—"
    url = reverse("admin:curation_job_change", args=[job.pk])
    return format_html('<a href="{}">job #{} ({})</a>', url, job.pk, job.status)


def _button_parts(run: m.TrainingRun | None) -> list[str]:
    """The start / cancel / resume buttons a run's page offers in its state."""
    start = '<input type="submit" name="_start" value="Save and start">'
    if run is None or run.pk is None:
        return [start]
    parts = []
    if run.status in (m.TrainingRun.Status.DRAFT,):
        parts.append(start)
    if run.job is not None and run.job.is_active:
        parts.append('<input type="submit" name="_cancel" value="Cancel run">')
    if run.status in (
        m.TrainingRun.Status.FAILED,
        m.TrainingRun.Status.CANCELLED,
        m.TrainingRun.Status.WAITING,
    ):
        parts.append('<input type="submit" name="_resume" value="Resume run">')
    return parts


# What a user sets on a run: the form's fields, editable while its status is in EDITABLE_STATUSES.
RUN_FIELDS = [
    "name",
    "recipe",
    "adapter",
    "base_checkpoint",
    "dataset_versions",
    "hyperparameters",
]


class TrainingRunForm(forms.ModelForm):
    """Only frozen versions can be picked; recipe roles and hyperparameters are checked here so
    a run that could not start is never saved."""

    class Meta:
        model = m.TrainingRun
        fields = RUN_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        from training.services.runs.inputs import default_hyperparameters

        super().__init__(*args, **kwargs)
        if "dataset_versions" in self.fields:
            self.fields["dataset_versions"].queryset = DatasetVersion.objects.filter(
                state=DatasetVersion.State.FROZEN
            ).select_related("dataset")
            self.fields["dataset_versions"].help_text = (
                "Only frozen versions are listed. domain → one domain version; sequential and "
                "style_tailoring → one alignment and one style version; styledrop_iterative → "
                "one style version (the references)."
            )
        if "base_checkpoint" in self.fields:
            self.fields["base_checkpoint"].required = True
        if "hyperparameters" in self.fields:
            if not self.instance.pk and not self.initial.get("hyperparameters"):
                self.initial["hyperparameters"] = default_hyperparameters()
            self.fields["hyperparameters"].help_text = (
                "Merged over the defaults for the chosen base model when saved (tiny base: "
                f"{json.dumps(default_hyperparameters(base_checkpoint=_TinyMarker()))})."
            )
        if "name" in self.fields:
            self.fields["name"].required = False

    def clean(self) -> dict[str, Any]:
        from training.services.runs.inputs import TrainingRunError, validate_run_inputs

        data = super().clean()
        if self.errors or "recipe" not in self.fields:
            return data
        try:
            data["hyperparameters"] = validate_run_inputs(
                recipe=data.get("recipe"),
                adapter=data.get("adapter"),
                dataset_versions=list(data.get("dataset_versions") or []),
                base_checkpoint=data.get("base_checkpoint"),
                hyperparameters=data.get("hyperparameters") or {},
            )
        except TrainingRunError as error:
            field = error.field.split(".")[0]
            self.add_error(field if field in self.fields else None, error.message)
        if not data.get("name") and not self.errors:
            versions = ", ".join(map(str, data["dataset_versions"]))
            data["name"] = f"{data['recipe']}/{data['adapter']} on {versions}"[:160]
        return data


class _TinyMarker:
    """Stands in for a tiny base checkpoint when showing the tiny defaults in help text."""

    config = {"tiny": True}
    parent = None


@admin.register(m.TrainingRun)
class TrainingRunAdmin(PlatformAdmin):
    form = TrainingRunForm
    list_display = ["name", "recipe", "adapter", "status", "progress", "created_at"]
    list_filter = ["status", "recipe", "adapter"]
    search_fields = ["name"]
    list_select_related = ["job"]
    date_hierarchy = "created_at"
    filter_horizontal = ["dataset_versions"]
    actions = ["start", "cancel", "resume"]
    run_fields = RUN_FIELDS
    status_fields = [
        "status",
        "progress",
        "buttons",
        "job_link",
        "loss_plot",
        "preview_grids",
        "log_tail",
        "versions_used",
        "checkpoints_made",
        "output_dir",
    ]

    def get_fields(self, request: HttpRequest, obj: m.TrainingRun | None = None) -> list[str]:
        if obj is None:
            return [*self.run_fields, "buttons"]
        # A finished run has no buttons: no row, rather than a label with nothing beside it.
        shown = [f for f in self.status_fields if f != "buttons" or _button_parts(obj)]
        return [*self.run_fields, *shown]

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.TrainingRun | None = None
    ) -> list[str]:
        if obj is None:
            return ["buttons"]
        if obj.status in EDITABLE_STATUSES:
            return list(self.status_fields)
        return [*self.run_fields, *self.status_fields]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("job", "base_checkpoint")

    def save_model(self, request: HttpRequest, obj: m.TrainingRun, form: Any, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    # ---- displays ------------------------------------------------------------------------------
    @admin.display(description="progress")
    def progress(self, obj: m.TrainingRun) -> str:
        if obj.job is None:
            return "—"
        job = obj.job
        return format_html(
            "{} <span>step {} of {} {}</span>",
            progress_bar(job.percent, job.status),
            job.progress_done,
            job.progress_total or "?",
            job.progress_message,
        )

    @admin.display(description="job")
    def job_link(self, obj: m.TrainingRun) -> SafeString | str:
        return _job_link(obj.job)

    @admin.display(description="loss curve")
    def loss_plot(self, obj: m.TrainingRun) -> SafeString:
        return loss_curve_svg(obj.loss_curve or [])

    @admin.display(description="validation previews")
    def preview_grids(self, obj: m.TrainingRun) -> SafeString | str:
        previews = obj.previews or []
        if not previews:
            every = (obj.hyperparameters.get("previews") or {}).get("every")
            return (
                "— none yet" if every else "— off (hyperparameters.previews.every sets how often)"
            )
        last = previews[-1]
        figures = format_html_join(
            "",
            '<figure style="margin:0;flex:none;text-align:center" data-step="{}">'
            '<img src="{}" alt="preview at step {}" style="min-height:128px;max-height:256px;image-rendering:pixelated" loading="lazy">'
            "<figcaption>step {}</figcaption></figure>",
            ((p["step"], signed_path(p["grid_key"]), p["step"], p["step"]) for p in previews),
        )
        return format_html(
            '<div class="preview-strip" style="display:flex;gap:12px;overflow-x:auto">{}</div>'
            "<div>rows: {} · columns: seeds {}</div>",
            figures,
            " | ".join(last["prompts"]),
            ", ".join(str(s) for s in last["seeds"]),
        )

    @admin.display(description="job log (tail)")
    def log_tail(self, obj: m.TrainingRun) -> SafeString | str:
        if obj.job is None or not obj.job.log_tail:
            return "—"
        lines = obj.job.log_tail.splitlines()[-LOG_TAIL_SHOWN:]
        text = "\n".join(lines) + (f"\n\n{obj.job.error[-2000:]}" if obj.job.error else "")
        return format_html('<pre style="max-height:320px;overflow:auto">{}</pre>', text)

    @admin.display(description="dataset versions (checksums)")
    def versions_used(self, obj: m.TrainingRun) -> SafeString | str:
        rows = obj.dataset_versions.select_related("dataset")
        return (
            format_html_join(
                "",
                '<div><a href="{}">{}</a> [{}] <code>{}</code></div>',
                (
                    (
                        reverse("admin:curation_datasetversion_change", args=[v.pk]),
                        v,
                        v.dataset.kind,
                        v.checksum,
                    )
                    for v in rows
                ),
            )
            or "—"
        )

    @admin.display(description="checkpoints")
    def checkpoints_made(self, obj: m.TrainingRun) -> SafeString | str:
        return (
            format_html_join(
                "",
                '<div><a href="{}">{}</a> (step {})</div>',
                (
                    (reverse("admin:training_checkpoint_change", args=[c.pk]), c.name, c.step)
                    for c in obj.checkpoints.all()
                ),
            )
            or "—"
        )

    @admin.display(description="run")
    def buttons(self, obj: m.TrainingRun | None) -> SafeString:
        return SafeString(" ".join(_button_parts(obj)))

    # ---- start / cancel / resume ---------------------------------------------------------------
    def has_start_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("training.start_trainingrun")

    def _do(self, request: HttpRequest, run: m.TrainingRun, what: str) -> None:
        from curation.services.jobs import JobNotRetryable
        from training.services.runs import jobs as run_jobs
        from training.services.runs.inputs import TrainingRunError

        if not self.has_start_permission(request):
            self.message_user(request, "You may not start or stop training runs.", messages.ERROR)
            return
        try:
            if what == "start":
                job = run_jobs.enqueue_training(run, request.user)
                self.message_user(request, f"{run}: training job #{job.pk} enqueued on gpu.")
            elif what == "cancel":
                job = run_jobs.cancel_training(run)
                self.message_user(request, f"{run}: cancellation requested ({job}).")
            else:
                job = run_jobs.resume_training(run, request.user)
                self.message_user(
                    request, f"{run}: job #{job.pk} resumes from its last checkpoint."
                )
        except (TrainingRunError, run_jobs.RunNotStartable, JobNotRetryable) as error:
            self.message_user(request, f"{run}: {error}", messages.ERROR)

    @admin.action(description="Start selected training runs", permissions=["start"])
    def start(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in queryset:
            self._do(request, run, "start")

    @admin.action(description="Cancel selected training runs", permissions=["start"])
    def cancel(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in queryset.select_related("job"):
            self._do(request, run, "cancel")

    @admin.action(description="Resume selected runs (retry the failed job)", permissions=["start"])
    def resume(self, request: HttpRequest, queryset: QuerySet) -> None:
        for run in queryset.select_related("job"):
            self._do(request, run, "resume")

    def _button_response(self, request: HttpRequest, obj: m.TrainingRun) -> HttpResponse | None:
        for name, what in (("_start", "start"), ("_cancel", "cancel"), ("_resume", "resume")):
            if name in request.POST:
                self._do(request, obj, what)
                return HttpResponseRedirect(
                    reverse("admin:training_trainingrun_change", args=[obj.pk])
                )
        return None

    def response_add(self, request: HttpRequest, obj: m.TrainingRun, post_url_continue=None):
        return self._button_response(request, obj) or super().response_add(
            request, obj, post_url_continue
        )

    def response_change(self, request: HttpRequest, obj: m.TrainingRun):
        return self._button_response(request, obj) or super().response_change(request, obj)
