"""Admin building blocks shared by the curation and training admins."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.html import format_html

COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_CAP + 1 rows, so a list page never runs COUNT(*) over a huge table."""

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if hasattr(object_list, "order_by"):
            return object_list.order_by()[: COUNT_CAP + 1].count()
        return len(object_list)


class PlatformAdmin(admin.ModelAdmin):
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50


def progress_bar(percent: float, status: str = "") -> str:
    colour = {"failed": "#ba2121", "cancelled": "#999", "lost": "#ba2121"}.get(status, "#417690")
    return format_html(
        '<div title="{}%" style="width:120px;background:#eee;border-radius:3px">'
        '<div style="width:{}%;background:{};color:#fff;font-size:11px;padding:1px 4px;'
        'border-radius:3px;white-space:nowrap">{}%</div></div>',
        percent,
        max(percent, 8),
        colour,
        percent,
    )
