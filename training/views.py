"""Round report pages: timeline, metrics with plots, best/worst grids; exportable as one HTML file."""

from __future__ import annotations

import base64

from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.utils.safestring import mark_safe

from curation.media import signed_path
from training.models import RetrainRound
from training.services.report_plots import category_svg, trend_svg


def _data_uri(key: str) -> str:
    with default_storage.open(key, "rb") as handle:
        return "data:image/png;base64," + base64.b64encode(handle.read()).decode()


def _trend_points() -> list[dict]:
    points = []
    for round_ in (
        RetrainRound.objects.exclude(report={}).order_by("id").only("id", "name", "report")
    ):
        new = round_.report.get("summary", {}).get("new", {})
        points.append(
            {
                "label": f"#{round_.pk}",
                **{k: new.get(k) for k in ("text_score", "style_score", "diversity")},
            }
        )
    return points


@staff_member_required
def round_report(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.has_perm("training.view_retrainround"):
        raise PermissionDenied
    round_ = get_object_or_404(
        RetrainRound.objects.select_related("checkpoint", "base_checkpoint"), pk=pk
    )
    export = request.GET.get("export") == "1"
    report = round_.report or {}
    image_src = _data_uri if export else signed_path
    grids = {
        name: [{**row, "src": image_src(row["image_key"])} for row in report.get(name, [])]
        for name in ("ranked", "best", "worst")
    }
    context = {
        "round": round_,
        "steps": list(round_.steps.select_related("job")),
        "report": report,
        "arms": report.get("summary", {}),
        "human": report.get("human", {}),
        "grids": grids,
        "trend_svg": mark_safe(trend_svg(_trend_points())) if report else "",
        "category_svg": mark_safe(category_svg(report["by_category"]))
        if report.get("by_category")
        else "",
        "export": export,
    }
    html = render_to_string("training/round_report.html", context, request=request)
    response = HttpResponse(html)
    if export:
        response["Content-Disposition"] = f'attachment; filename="round-{round_.pk}-report.html"'
    return response
