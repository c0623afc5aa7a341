"""Admin building blocks shared by the curation and training admins."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeData

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


LIST_CAP = 12
_TABLE = 'style="border-collapse:collapse;margin:0"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #eee;vertical-align:top;text-align:left"'


def _scalar(value: object) -> str:
    if isinstance(value, SafeData):  # already rendered HTML (a progress bar, a link)
        return value
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def json_summary(value: object, depth: int = 0) -> str:
    """A JSON value as small nested tables a person can read: dicts as key/value rows, lists of
    dicts as one table with a column per key, long lists cut to their first LIST_CAP items."""
    if isinstance(value, dict):
        if not value:
            return "—"
        rows = format_html_join(
            "",
            "<tr><th " + _CELL + ">{}</th><td " + _CELL + ">{}</td></tr>",
            ((str(k).replace("_", " "), json_summary(v, depth + 1)) for k, v in value.items()),
        )
        return format_html("<table " + _TABLE + ">{}</table>", rows)
    if isinstance(value, list):
        if not value:
            return "none"
        shown, more = value[:LIST_CAP], len(value) - LIST_CAP
        tail = format_html(" … and {} more", more) if more > 0 else ""
        if all(isinstance(v, dict) for v in shown):
            columns = list(dict.fromkeys(k for v in shown for k in v))
            return format_html("{}{}", rows_table(shown, [(c, c) for c in columns], depth), tail)
        if depth > 2 or all(not isinstance(v, (dict, list)) for v in shown):
            return format_html("{}{}", ", ".join(_scalar(v) for v in shown), tail)
        return format_html(
            "{}{}",
            format_html_join("", "<div>{}</div>", ((json_summary(v, depth + 1),) for v in shown)),
            tail,
        )
    return _scalar(value)


def rows_table(rows: list[dict], columns: list[tuple[str, str]], depth: int = 0) -> str:
    """Rows (dicts) as an HTML table with the given (key, heading) columns."""
    if not rows:
        return "none"
    head = format_html_join(
        "", "<th " + _CELL + ">{}</th>", ((label.replace("_", " "),) for _, label in columns)
    )
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        (
            (
                format_html_join(
                    "",
                    "<td " + _CELL + ">{}</td>",
                    ((json_summary(row.get(key), depth + 1),) for key, _ in columns),
                ),
            )
            for row in rows
        ),
    )
    return format_html("<table " + _TABLE + "><tr>{}</tr>{}</table>", head, body)


@cache
def json_field(name: str, label: str | None = None) -> Callable[[object], str]:
    """A read-only admin column showing JSON field `name` as json_summary tables.

    Cached: the admin matches read-only entries by identity between its calls of
    get_readonly_fields, so one name must give the same function every time."""

    def show(obj: object) -> str:
        return json_summary(getattr(obj, name, None))

    show.short_description = label or name.replace("_", " ")  # type: ignore[attr-defined]
    show.__name__ = f"{name}_summary"
    return show


def summarised(names: list, json_names: tuple[str, ...]) -> list:
    """`names` (read-only fields) with each JSON field among them shown as a summary table."""
    return [json_field(n) if isinstance(n, str) and n in json_names else n for n in names]
