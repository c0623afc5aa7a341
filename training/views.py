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


HEADLINE_ROWS = (
    ("style_pass_rate", "Visual quality (style pass rate)", "+14.0 %"),
    ("prompt_alignment", "Prompt alignment (CLIP text alignment)", "+16.2 %"),
    ("scene_diversity", "Scene diversity", "+15.3 %"),
)


def _sweeps(round_: RetrainRound) -> list[dict]:
    """The round's trade-off sweeps, newest first, each with its plane when it has a report."""
    from training.engine.toy_world.sweep import plane_svg

    sweeps = []
    for sweep in round_.tradeoff_sweeps.select_related("job").order_by("-id"):
        report = sweep.report or {}
        points = report.get("points", {})
        front = set(report.get("pareto_front", []))
        headline = report.get("headline", {})
        sweeps.append(
            {
                "sweep": sweep,
                "report": report,
                "plane_svg": mark_safe(plane_svg(report)) if points else "",
                "points": [
                    {"arm": arm, "on_front": arm in front, **p} for arm, p in points.items()
                ],
                "headline": [
                    {
                        "key": key,
                        "label": label,
                        "paper": paper,
                        "estimate": (headline.get(key) or {}).get("estimate"),
                        "low": (headline.get(key) or {}).get("low"),
                        "high": (headline.get(key) or {}).get("high"),
                    }
                    for key, label, paper in HEADLINE_ROWS
                ],
            }
        )
    return sweeps


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
        "sweeps": _sweeps(round_),
    }
    html = render_to_string("training/round_report.html", context, request=request)
    response = HttpResponse(html)
    if export:
        response["Content-Disposition"] = f'attachment; filename="round-{round_.pk}-report.html"'
    return response
