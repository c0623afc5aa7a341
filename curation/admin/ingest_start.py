"""The admin's "Start an ingest" page: upload an archive or manifest, or name a folder inside
INGEST_ROOTS; the ingest job runs it and the batch page follows its progress and refusals."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from curation.services.ingest_uploads import (
    UPLOAD_SUFFIXES,
    IngestRequestError,
    ingest_roots,
    start_ingest_from_request,
)


class StartIngestForm(forms.Form):
    source = forms.SlugField(
        max_length=64, help_text="Where the images come from, e.g. 'stickers-2026-q4'."
    )
    upload = forms.FileField(
        required=False,
        help_text=f"An archive or a manifest ({', '.join(UPLOAD_SUFFIXES)}).",
    )
    folder = forms.CharField(
        required=False,
        max_length=1000,
        help_text="Or a folder (or archive, or manifest) inside an ingest root.",
    )


def start_ingest_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("curation.add_ingestbatch"):
        raise PermissionDenied
    form = StartIngestForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            batch = start_ingest_from_request(
                source_name=form.cleaned_data["source"],
                upload=form.cleaned_data["upload"],
                folder=form.cleaned_data["folder"],
                user=request.user,
            )
        except IngestRequestError as exc:
            field, _, message = str(exc).partition(": ")
            target = field if field in form.fields else None
            form.add_error(target, message if target else str(exc))
        else:
            model_admin.message_user(
                request,
                f"Ingest batch #{batch.pk} queued (job #{batch.job_id}); "
                "this page follows its progress.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(
                reverse("admin:curation_ingestbatch_change", args=[batch.pk])
            )
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Start an ingest",
        "opts": model_admin.model._meta,
        "form": form,
        "roots": ingest_roots(),
    }
    return TemplateResponse(request, "admin/curation/ingestbatch/start.html", context)


def start_ingest_urls(model_admin: admin.ModelAdmin) -> list:
    view = model_admin.admin_site.admin_view(
        lambda request: start_ingest_view(model_admin, request)
    )
    return [path("start/", view, name="curation_ingestbatch_start")]
