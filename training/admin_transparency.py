"""Admin for transparency decoders: an action on checkpoints that starts a decoder training.

Selecting one checkpoint and running the action opens a page with the RGBA version and settings
to pick and the recent decoder trainings (progress, held-out alpha IoU/MAE, resulting
checkpoint). Starting enqueues a `train_transparency` job on the gpu queue; cancelling and
retrying are the Job admin's actions, and retrying resumes from the last resume state.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from curation.admin_base import progress_bar
from curation.models import DatasetVersion, Job
from training.models import Checkpoint
from training.services import transparency as services

START_PERMISSION = "training.start_trainingrun"
RECENT_SHOWN = 20


def rgba_versions() -> QuerySet[DatasetVersion]:
    """Frozen versions whose every row has real alpha: the only ones a decoder can train on."""
    return (
        DatasetVersion.objects.filter(state=DatasetVersion.State.FROZEN, row_count__gt=0)
        .exclude(items__image__has_alpha=False)
        .select_related("dataset")
    )


class DecoderRunForm(forms.Form):
    rgba_version = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.none(),
        help_text="Frozen versions whose every image has a real alpha channel.",
    )
    hyperparameters = forms.JSONField(
        required=False,
        help_text="Merged over the defaults shown; rows marked val/test (or else every 5th row "
        "by sha256) are held out for the alpha metrics.",
    )

    def __init__(self, *args: Any, base_checkpoint: Checkpoint, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.base_checkpoint = base_checkpoint
        self.fields["rgba_version"].queryset = rgba_versions()
        self.fields["hyperparameters"].initial = services.decoder_defaults(base_checkpoint)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        try:
            data["hyperparameters"] = services.validate_decoder_inputs(
                self.base_checkpoint, data.get("rgba_version"), data.get("hyperparameters")
            )
        except services.TransparencyRunError as error:
            field = error.field.split(".")[0]
            self.add_error(field if field in self.fields else None, error.message)
        return data


def _job_row(job: Job) -> dict[str, Any]:
    checkpoint_id = (job.result or {}).get("checkpoint")
    checkpoint = Checkpoint.objects.filter(pk=checkpoint_id).first() if checkpoint_id else None
    metrics = checkpoint.metrics if checkpoint is not None else {}
    return {
        "job": job,
        "job_url": reverse("admin:curation_job_change", args=[job.pk]),
        "progress": progress_bar(job.percent, job.status),
        "version": job.params.get("rgba_version"),
        "checkpoint": checkpoint,
        "checkpoint_url": (
            reverse("admin:training_checkpoint_change", args=[checkpoint.pk])
            if checkpoint is not None
            else ""
        ),
        "metrics": {
            key: metrics.get(key)
            for key in ("alpha_iou", "alpha_mae", "alpha_iou_before", "alpha_mae_before")
        },
    }


@admin.action(description="Train a transparency decoder (RGBA) from the selected checkpoint")
def train_transparency_decoder(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    if not request.user.has_perm(START_PERMISSION):
        modeladmin.message_user(request, "You may not start decoder trainings.", messages.ERROR)
        return None
    selected = list(queryset[:2])
    if len(selected) != 1:
        modeladmin.message_user(
            request, "Select exactly one checkpoint to train a decoder for.", messages.ERROR
        )
        return None
    base = selected[0]
    form = DecoderRunForm(request.POST if "apply" in request.POST else None, base_checkpoint=base)
    if "apply" in request.POST and form.is_valid():
        try:
            job = services.create_decoder_run(
                base,
                form.cleaned_data["rgba_version"],
                form.cleaned_data["hyperparameters"],
                user=request.user,
            )
        except services.TransparencyRunError as error:
            modeladmin.message_user(request, f"{base}: {error}", messages.ERROR)
            return None
        modeladmin.message_user(
            request,
            format_html(
                '{}: transparency decoder training <a href="{}">job #{}</a> enqueued on gpu; '
                "its checkpoint appears here when it finishes.",
                base,
                reverse("admin:curation_job_change", args=[job.pk]),
                job.pk,
            ),
        )
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"Train a transparency decoder from {base}",
        "opts": modeladmin.model._meta,
        "checkpoint": base,
        "form": form,
        "defaults": json.dumps(services.decoder_defaults(base)),
        "action_name": "train_transparency_decoder",
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "recent": [_job_row(job) for job in services.decoder_jobs().order_by("-pk")[:RECENT_SHOWN]],
    }
    return TemplateResponse(request, "admin/training/transparency_decoder_start.html", context)
