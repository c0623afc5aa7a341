"""Admin for checkpoint exports: list actions ("Export for diffusers", "Export for kohya
(A1111/ComfyUI)", "Export with options…"), an options page per checkpoint, and the exports
panel on the checkpoint's page (state, what was written, the zip behind a signed URL).

The admin only asks: training.services.checkpoint_exports refuses or queues, the
`export_checkpoint` job writes, training.selectors.checkpoint_exports reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from curation.admin_base import progress_bar
from curation.media import signed_path
from training.models import Checkpoint
from training.selectors import checkpoint_exports as selectors
from training.services import checkpoint_exports as services

# Exports load weights on the gpu queue, like training and generation: the same permission.
EXPORT_PERMISSION = "training.start_trainingrun"
REFRESH_SECONDS = 5
OPTIONS_TEMPLATE = "admin/training/checkpoint_export.html"


class ExportForm(forms.Form):
    format = forms.ChoiceField(
        choices=[(f, services.FORMAT_LABELS[f]) for f in services.FORMATS],
        widget=forms.RadioSelect,
        initial="diffusers",
        help_text="diffusers: pytorch_lora_weights.safetensors for pipeline.load_lora_weights "
        "(a full checkpoint: a whole diffusers folder). kohya: lora_unet_… keys for A1111 and "
        "ComfyUI (LoRA only, UNet families only).",
    )
    weights = forms.ChoiceField(
        choices=[("ema", "EMA weights (what generate samples with)"), ("raw", "raw weights")],
        widget=forms.RadioSelect,
        initial="ema",
        help_text="A run that kept no EMA has only its raw weights: both choices give them.",
    )
    replace = forms.BooleanField(
        required=False,
        help_text="Write it again even if this export already finished (its folder and zip are "
        "replaced). Otherwise the finished export is reused.",
    )
    base_model = forms.CharField(
        max_length=1024,
        required=False,
        label="Base model folder",
        help_text="Only if the base model the checkpoint was trained on moved: its new folder "
        "on this server (same family).",
    )


def _message(
    modeladmin: admin.ModelAdmin, request: HttpRequest, name: str, asked: Any, fmt: str
) -> None:
    job, label = asked.job, services.FORMAT_LABELS[fmt]
    job_link = format_html(
        '<a href="{}">job #{}</a>', reverse("admin:curation_job_change", args=[job.pk]), job.pk
    )
    if asked.outcome == "queued":
        text = format_html(
            "{}: {} export {} queued on gpu; the zip appears under “exports” on the "
            "checkpoint's page when it finishes.",
            name,
            label,
            job_link,
        )
        modeladmin.message_user(request, text, messages.SUCCESS)
    elif asked.outcome == "running":
        text = format_html("{}: a {} export is already running ({}).", name, label, job_link)
        modeladmin.message_user(request, text, messages.WARNING)
    else:
        text = format_html(
            "{}: already exported as {} by {} ({} tensors written); reusing it — download it "
            "from the checkpoint's page, or tick “replace” under “Export with options…” to write "
            "it again.",
            name,
            label,
            job_link,
            (job.result or {}).get("tensors_written"),
        )
        modeladmin.message_user(request, text, messages.INFO)


def request_exports(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    checkpoints: Iterable[Checkpoint],
    fmt: str,
    **options: Any,
) -> int:
    """Ask for one export per checkpoint, with a message for each; returns how many were
    queued, running or reused (refusals are error messages)."""
    asked = 0
    for checkpoint in checkpoints:
        try:
            result = services.request_export(checkpoint, fmt, user=request.user, **options)
        except services.CheckpointExportRefused as error:
            modeladmin.message_user(request, str(error), messages.ERROR)
            continue
        _message(modeladmin, request, checkpoint.name, result, fmt)
        asked += 1
    return asked


def _after(request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    """One checkpoint: go to its page, where the export's state shows; several: the list."""
    if len(ids := list(queryset.values_list("pk", flat=True)[:2])) == 1:
        return HttpResponseRedirect(reverse("admin:training_checkpoint_change", args=ids))
    return None


@admin.action(description="Export for diffusers (EMA weights)", permissions=["export"])
def export_for_diffusers(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    request_exports(modeladmin, request, queryset, "diffusers")
    return _after(request, queryset)


@admin.action(description="Export for kohya (A1111/ComfyUI, EMA weights)", permissions=["export"])
def export_for_kohya(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    request_exports(modeladmin, request, queryset, "kohya")
    return _after(request, queryset)


def _options(form: ExportForm) -> dict[str, Any]:
    data = form.cleaned_data
    return {
        "use_ema": data["weights"] == "ema",
        "replace": data["replace"],
        "base_model": data["base_model"].strip(),
    }


def _options_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    checkpoints: list[Checkpoint],
    form: ExportForm,
    action: str = "",
) -> TemplateResponse:
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": "Export "
        + (checkpoints[0].name if len(checkpoints) == 1 else f"{len(checkpoints)} checkpoints"),
        "opts": modeladmin.model._meta,
        "checkpoints": checkpoints,
        "form": form,
        "action_name": action,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, OPTIONS_TEMPLATE, context)


@admin.action(
    description="Export with options… (format, EMA or raw, replace)", permissions=["export"]
)
def export_with_options(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    form = ExportForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        request_exports(
            modeladmin, request, queryset, form.cleaned_data["format"], **_options(form)
        )
        return _after(request, queryset)
    return _options_page(modeladmin, request, list(queryset), form, "export_with_options")


# ---- the checkpoint page ---------------------------------------------------------------------


def _written(result: dict[str, Any]) -> str:
    if result.get("writes") == "pipeline_folder":
        what = "diffusers pipeline folder"
    else:
        what = f"LoRA {result.get('file')}: {result.get('lora_modules')} modules"
        if result.get("rank") is not None:
            what += f", rank {result['rank']}, alpha {result['alpha']}"
    return (
        f"{what}; {result.get('tensors_written')} tensors, "
        f"{filesizeformat(result.get('bytes_written') or 0)}"
    )


def exports_panel(checkpoint: Checkpoint) -> SafeString | str:
    """The checkpoint page's exports: downloads of finished ones, then running or failed jobs."""
    if checkpoint.pk is None:
        return "—"
    downloads = selectors.checkpoint_downloads(checkpoint)
    pending = selectors.unfinished_exports(checkpoint)
    start = reverse("admin:training_checkpoint_export", args=[checkpoint.pk])
    rows = format_html_join(
        "",
        '<tr class="checkpoint-export" data-format="{}" data-weights="{}"><td>{}</td><td>{}</td>'
        '<td>{}</td><td><a href="{}" download class="checkpoint-export-download" '
        'data-format="{}">download zip ({})</a></td><td><a href="{}">job #{}</a> {}<br>'
        '<code style="word-break:break-all">{}</code></td></tr>',
        (
            (
                d["format"],
                "ema" if d["use_ema"] else "raw",
                services.FORMAT_LABELS.get(d["format"], d["format"]),
                "EMA" if d["ema"] else "raw",
                _written(d),
                signed_path(d["download"]),
                d["format"],
                filesizeformat(d.get("zip_bytes") or 0),
                reverse("admin:curation_job_change", args=[d["job"]]),
                d["job"],
                d["finished_at"].strftime("%Y-%m-%d %H:%M") if d["finished_at"] else "",
                d.get("out_dir", ""),
            )
            for d in downloads
        ),
    )
    states = format_html_join(
        "",
        '<tr class="checkpoint-export-job" data-status="{}"><td>{}</td><td>{}</td><td>{} {}</td>'
        '<td>{}</td><td><a href="{}">job #{}</a> ({})</td></tr>',
        (
            (
                job.status,
                services.FORMAT_LABELS.get(job.params.get("format"), job.params.get("format")),
                "EMA" if job.params.get("use_ema", True) else "raw",
                progress_bar(job.percent, job.status),
                job.progress_message,
                job.error.strip().splitlines()[-1] if job.error else "",
                reverse("admin:curation_job_change", args=[job.pk]),
                job.pk,
                job.status,
            )
            for job in pending
        ),
    )
    start_link = format_html(
        '<a href="{}" class="checkpoint-export-start">Export this checkpoint…</a>', start
    )
    if not downloads and not pending:
        return format_html(
            "none yet. {} (or select it in the list and run “Export for diffusers” / "
            "“Export for kohya”)",
            start_link,
        )
    return format_html(
        '<table class="checkpoint-exports"><thead><tr><th>format</th><th>weights</th>'
        "<th>written</th><th>download</th><th>job</th></tr></thead><tbody>{}{}</tbody></table>"
        "<p>{}</p>",
        rows,
        states,
        start_link,
    )


class CheckpointExportMixin(admin.ModelAdmin):
    """The export actions, the per-checkpoint options page and a page that refreshes itself
    while one of its exports runs."""

    change_form_template = "admin/training/checkpoint/change_form.html"

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(EXPORT_PERMISSION)

    def get_urls(self) -> list:
        return [
            path(
                "<int:pk>/export/",
                self.admin_site.admin_view(self.export_view),
                name="training_checkpoint_export",
            ),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_export_permission(request):
            raise PermissionDenied
        checkpoint = get_object_or_404(Checkpoint, pk=pk)
        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            request_exports(
                self, request, [checkpoint], form.cleaned_data["format"], **_options(form)
            )
            return HttpResponseRedirect(
                reverse("admin:training_checkpoint_change", args=[checkpoint.pk])
            )
        return _options_page(self, request, [checkpoint], form)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        running = object_id.isdigit() and selectors.has_active_export(int(object_id))
        context = {**(extra_context or {}), "refresh_seconds": REFRESH_SECONDS if running else 0}
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.display(description="exports")
    def exports(self, obj: Checkpoint) -> SafeString | str:
        return exports_panel(obj)
