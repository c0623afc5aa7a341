"""Admin pages: datasets."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from curation import models as m
from curation.admin_base import PlatformAdmin, summarised


@admin.register(m.Dataset)
class DatasetAdmin(PlatformAdmin):
    list_display = ["name", "kind", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name", "description"]


class DatasetItemInline(admin.TabularInline):
    model = m.DatasetItem
    extra = 0
    raw_id_fields = ["image"]
    fields = ["image", "caption", "label", "weight", "split"]
    show_change_link = False
    max_num = 200

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("image")

    def _frozen(self, obj: m.DatasetVersion | None) -> bool:
        return bool(obj and obj.is_frozen)

    def has_add_permission(self, request: HttpRequest, obj: m.DatasetVersion | None = None) -> bool:
        return not self._frozen(obj) and super().has_add_permission(request, obj)

    def has_change_permission(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> bool:
        return not self._frozen(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> bool:
        return not self._frozen(obj) and super().has_delete_permission(request, obj)


INLINE_ROWS = 200  # a version with more rows shows a preview, not one form row per item
PREVIEW_ROWS = 50


@admin.register(m.DatasetVersion)
class DatasetVersionAdmin(PlatformAdmin):
    list_display = [
        "__str__",
        "dataset",
        "state",
        "row_count",
        "checksum_short",
        "frozen_by",
        "frozen_at",
    ]
    list_filter = ["state", "dataset__kind", "dataset"]
    list_select_related = ["dataset", "frozen_by"]
    search_fields = ["dataset__name", "reason", "=checksum"]
    date_hierarchy = "created_at"
    inlines = [DatasetItemInline]
    actions = ["freeze", "export"]
    # Written by freezing and by the services that build versions; shown as tables.
    exclude = ["diff", "lineage"]

    @admin.display(description="checksum")
    def checksum_short(self, obj: m.DatasetVersion) -> str:
        return obj.checksum[:12]

    def _large(self, obj: m.DatasetVersion | None) -> bool:
        # One LIMIT/OFFSET probe per page, never a COUNT: the same cost at a million rows.
        if not (obj and obj.pk):
            return False
        if not hasattr(obj, "_many_rows"):
            obj._many_rows = obj.items.order_by("pk")[INLINE_ROWS:].exists()
        return obj._many_rows

    def get_inlines(self, request: HttpRequest, obj: m.DatasetVersion | None = None) -> list:
        return [] if self._large(obj) else super().get_inlines(request, obj)

    @admin.display(description="rows")
    def items_preview(self, obj: m.DatasetVersion) -> str:
        if not self._large(obj):
            return "edited below" if obj.pk and not obj.is_frozen else "listed below"
        rows = obj.items.select_related("image").order_by("pk")[:PREVIEW_ROWS]
        body = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((r.image.sha256[:12], r.caption, r.label, r.weight, r.split) for r in rows),
        )
        total = obj.row_count if obj.is_frozen else f"more than {INLINE_ROWS}"
        return format_html(
            "<p>The first {} of {} rows (the manifest and the exports hold them all).</p>"
            "<table><tr><th>sha256</th><th>caption</th><th>label</th><th>weight</th>"
            "<th>split</th></tr>{}</table>",
            PREVIEW_ROWS,
            total,
            body,
        )

    @admin.display(description="downloads")
    def downloads(self, obj: m.DatasetVersion) -> str:
        from curation.media import signed_path
        from curation.selectors.exports import version_downloads

        if obj.pk is None or not obj.is_frozen:
            return "freeze the version, then export it"
        found = version_downloads(obj)
        if not found:
            return 'none yet: run the "Export selected frozen versions" action from the list'
        return format_html_join(
            " · ",
            '<a href="{}" download class="export-download" data-format="{}">{} ({} rows, zip)</a>',
            ((signed_path(d["key"]), d["format"], d["format"], d["rows"]) for d in found),
        )

    def get_readonly_fields(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> list[str]:
        always = [
            "state",
            "manifest_path",
            "checksum",
            "row_count",
            "diff",
            "lineage",
            "frozen_by",
            "frozen_at",
            "number",
        ]
        if obj and obj.is_frozen:
            always = [f.name for f in self.model._meta.fields]
        return summarised([*always, "downloads", "items_preview"], ("diff", "lineage"))

    def has_delete_permission(
        self, request: HttpRequest, obj: m.DatasetVersion | None = None
    ) -> bool:
        if obj and obj.is_frozen:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(
        self, request: HttpRequest, obj: m.DatasetVersion, form: object, change: bool
    ) -> None:
        from curation.services.versions import next_version_number

        if not change:
            obj.number = next_version_number(obj.dataset)
        super().save_model(request, obj, form, change)

    @admin.action(
        description="Freeze selected versions (write manifest, make immutable)",
        permissions=["freeze"],
    )
    def freeze(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.versions import VersionUnchanged, freeze_version

        for version in queryset.filter(state=m.DatasetVersion.State.DRAFT):
            try:
                version = freeze_version(version, user=request.user, reason=version.reason)
            except VersionUnchanged as exc:
                self.message_user(request, str(exc), messages.WARNING)
            except ValueError as exc:
                self.message_user(request, f"{version}: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{version} frozen: {version.row_count} rows, checksum {version.checksum[:12]}.",
                )

    def has_freeze_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("curation.freeze_datasetversion")

    @admin.action(
        description="Export selected frozen versions (Parquet, image folder, WebDataset)",
        permissions=["view"],
    )
    def export(self, request: HttpRequest, queryset: QuerySet) -> None:
        from curation.services.exports import FORMATS, exports_root
        from curation.services.jobs import enqueue_job

        for version in queryset.select_related("dataset"):
            if not version.is_frozen:
                self.message_user(
                    request,
                    f"{version}: a draft cannot be exported; freeze it first.",
                    messages.ERROR,
                )
                continue
            job = enqueue_job(
                "export_version",
                params={"version_id": version.pk, "formats": list(FORMATS)},
                user=request.user,
                target=version,
            )
            self.message_user(
                request,
                f"{version}: export job #{job.pk} queued; files go under "
                f"{exports_root() / f'{version.dataset.name}-v{version.number}'} and download "
                "links appear on the version's page when it finishes.",
            )
