"""Admin pages: images."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from curation import models as m
from curation.admin_base import PlatformAdmin, progress_bar
from curation.media import signed_path
from curation.services.quarantine import quarantine_images, release_images


@admin.register(m.Source)
class SourceAdmin(PlatformAdmin):
    list_display = ["name", "description", "created_at"]
    search_fields = ["name"]


REFUSALS_SHOWN = 200


@admin.register(m.Refusal)
class RefusalAdmin(PlatformAdmin):
    """Every refused file with its reason; the batch page links here when it lists too many."""

    list_display = ["origin", "reason", "batch", "created_at"]
    list_filter = ["batch__source"]
    search_fields = ["origin", "reason", "=batch__id", "=sha256"]
    list_select_related = ["batch__source"]
    readonly_fields = ["batch", "origin", "sha256", "reason", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(m.IngestBatch)
class IngestBatchAdmin(PlatformAdmin):
    list_display = [
        "id",
        "source",
        "status",
        "progress",
        "ingested",
        "duplicates",
        "near_duplicates",
        "quarantined",
        "job_link",
        "created_by",
        "created_at",
    ]
    list_display_links = ["id", "source"]
    list_filter = ["status", "source"]
    list_select_related = ["source", "job", "created_by"]
    search_fields = ["=id", "source__name"]
    date_hierarchy = "created_at"
    fields = [
        "source",
        "paths_list",
        "status",
        "progress",
        "counts",
        "job_link",
        "created_by",
        "created_at",
        "finished_at",
        "images_link",
        "refusals_table",
    ]
    readonly_fields = fields
    change_list_template = "admin/curation/ingestbatch/change_list.html"
    change_form_template = "admin/curation/ingestbatch/change_form.html"
    # Seconds between reloads of a batch page while its job runs.
    refresh_seconds = 3

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # batches come from `manage.py ingest`, its job, or the start page below

    def get_urls(self) -> list:
        from curation.admin.ingest_start import start_ingest_urls

        return start_ingest_urls(self) + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        batch = self.get_object(request, object_id)
        running = batch is not None and batch.status in (
            m.IngestBatch.Status.QUEUED,
            m.IngestBatch.Status.RUNNING,
        )
        context = {
            **(extra_context or {}),
            "refresh_seconds": self.refresh_seconds if running else 0,
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="progress")
    def progress(self, obj: m.IngestBatch) -> str:
        if obj.status == m.IngestBatch.Status.DONE:
            return progress_bar(100.0, "succeeded")
        if obj.total:
            percent = round(100.0 * min(obj.position, obj.total) / obj.total, 1)
        else:
            percent = obj.job.percent if obj.job else 0.0
        return progress_bar(percent, obj.status)

    @admin.display(description="paths")
    def paths_list(self, obj: m.IngestBatch) -> str:
        return format_html_join(mark_safe("<br>"), "<code>{}</code>", ((p,) for p in obj.paths))

    @admin.display(description="counts")
    def counts(self, obj: m.IngestBatch) -> str:
        return format_html(
            "{} ingested · {} exact duplicates · {} near-duplicates · {} refused"
            " · {} of {} files settled",
            obj.ingested,
            obj.duplicates,
            obj.near_duplicates,
            obj.quarantined,
            obj.position,
            obj.total if obj.total is not None else "?",
        )

    @admin.display(description="job")
    def job_link(self, obj: m.IngestBatch) -> str:
        if obj.job is None:
            return "— (command line)"
        url = reverse("admin:curation_job_change", args=[obj.job_id])
        return format_html('<a href="{}">{}</a>', url, obj.job)

    @admin.display(description="images")
    def images_link(self, obj: m.IngestBatch) -> str:
        url = reverse("admin:curation_image_changelist") + f"?batch__id__exact={obj.pk}"
        return format_html('<a href="{}">images recorded by this batch</a>', url)

    @admin.display(description="refused files")
    def refusals_table(self, obj: m.IngestBatch) -> str:
        refusals = list(
            obj.refusals.order_by("id").values_list("origin", "reason")[:REFUSALS_SHOWN]
        )
        if not refusals:
            return "none"
        rows = format_html_join("", "<tr><td><code>{}</code></td><td>{}</td></tr>", refusals)
        more = ""
        if obj.quarantined > len(refusals):
            url = reverse("admin:curation_refusal_changelist") + f"?batch__id__exact={obj.pk}"
            more = format_html('<p><a href="{}">all {} refused files</a></p>', url, obj.quarantined)
        return format_html(
            '<table class="refusals"><thead><tr><th>file</th><th>reason</th></tr></thead>'
            "<tbody>{}</tbody></table>{}",
            rows,
            more,
        )


CHECKERBOARD = "background:repeating-conic-gradient(#ccc 0 25%,#fff 0 50%) 50%/12px 12px"


def _checkerboard_img(key: str, size: int, extra_style: str = "") -> str:
    # The checkerboard shows transparent stickers as cut-outs, as raters will see them.
    return format_html(
        '<img src="{}" style="max-height:{}px;max-width:{}px;{};{}" loading="lazy">',
        signed_path(key),
        size,
        size,
        mark_safe(CHECKERBOARD),
        extra_style,
    )


class FormatFilter(admin.SimpleListFilter):
    """The formats ingest stores, listed without a DISTINCT scan of the whole pool."""

    title = "format"
    parameter_name = "format"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        from curation.ingestion.validate import ACCEPTED_FORMATS

        # An image keeps the format it arrived in: a raster one Pillow opened, or SVG.
        return [(name, name) for name in (*ACCEPTED_FORMATS, "SVG")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(format=self.value()) if self.value() else queryset


@admin.register(m.Image)
class ImageAdmin(PlatformAdmin):
    """At a million rows every part of the list page must cost the same as at a thousand: no
    date hierarchy (it scans every row's date) and no DISTINCT over a column for a filter."""

    list_display = [
        "thumbnail",
        "sha256_short",
        "width",
        "height",
        "format",
        "has_alpha",
        "status",
        "source",
        "origin_name",
        "created_at",
    ]
    list_filter = [
        "status",
        "has_alpha",
        FormatFilter,
        "source",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["=sha256", "origin", "caption"]
    list_select_related = ["source", "duplicate_of"]
    readonly_fields = [
        "preview",
        "sha256",
        "phash",
        "width",
        "height",
        "format",
        "has_alpha",
        "storage_key",
        "duplicate_of",
        "source",
        "batch",
        "origin",
        "quarantine_reason",
        "quarantined_by",
        "quarantined_at",
    ]
    actions = ["quarantine", "release"]

    @admin.display(description="image")
    def thumbnail(self, obj: m.Image) -> str:
        if obj.storage_key:
            return _checkerboard_img(obj.storage_key, 64)
        original = obj.duplicate_of
        if original is not None and original.storage_key:
            # A near-duplicate keeps no bytes of its own: show what it resembles, faded.
            return format_html(
                '<span title="near-duplicate of {}">≈ {}</span>',
                original.sha256[:12],
                _checkerboard_img(original.storage_key, 48, "opacity:.5"),
            )
        return "—"

    @admin.display(description="image")
    def preview(self, obj: m.Image) -> str:
        if obj.storage_key:
            return _checkerboard_img(obj.storage_key, 384)
        return self.thumbnail(obj)

    @admin.display(description="sha256")
    def sha256_short(self, obj: m.Image) -> str:
        return obj.sha256[:12]

    @admin.display(description="file", ordering="origin")
    def origin_name(self, obj: m.Image) -> str:
        # The file name keeps the list narrow; the full path or URL is in the tooltip.
        name = obj.origin.rstrip("/").rsplit("/", 1)[-1]
        return format_html('<span title="{}">{}</span>', obj.origin, name)

    @admin.action(description="Quarantine selected images…", permissions=["change"])
    def quarantine(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        form = QuarantineForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            count = quarantine_images(
                queryset, reason=form.cleaned_data["reason"], user=request.user
            )
            already = queryset.count() - count
            note = f" ({already} were already quarantined and keep their reason)" if already else ""
            self.message_user(request, f"{count} image(s) quarantined{note}.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Quarantine images",
            "opts": self.model._meta,
            "form": form,
            "images": list(queryset[:QUARANTINE_LISTED]),
            "count": queryset.count(),
            "selected": list(queryset.values_list("pk", flat=True)),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/curation/image/quarantine.html", context)

    @admin.action(description="Release selected images from quarantine", permissions=["change"])
    def release(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = release_images(queryset)
        skipped = queryset.count() - count
        self.message_user(request, f"{count} image(s) released from quarantine.")
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected image(s) were not quarantined and were left as they are.",
                messages.WARNING,
            )


QUARANTINE_LISTED = 50


class QuarantineForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text="Recorded on each image with your name and the time; shown when releasing.",
    )
