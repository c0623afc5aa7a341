"""The review grid: a data lead ranks, accepts, rejects and freezes a recipe run's images.

Two orders: ranked (score desc, id asc) and review next (certainty asc, id asc: the images whose
label the run is least sure of first, so each decision teaches the next run the most). Pages
are keyset-paginated on the order's key, which an index of RecipeScore covers, so a page deep
in a million-row run costs one indexed range query and never a COUNT over the run. Decisions are small CSRF-protected POSTs
the page's script sends (one per click or key press); every page works without script too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from curation.media import signed_path
from curation.models import RecipeRun, RecipeScore
from curation.models.images import usable_q
from curation.selectors.recipes import decisions_summary
from curation.services import review as svc
from curation.services.thumbnails import thumbnail_key

PAGE_SIZE = 60
REVIEW_PERMISSION = "curation.change_recipescore"
FREEZE_PERMISSION = "curation.freeze_datasetversion"
LF_VOTES = {"sticker": 1, "not": 0, "abstain": -1}
# order name → (field, descending); ties broken by id ascending either way.
ORDERS = {"ranked": ("score", True), "uncertain": ("certainty", False)}


def _data_lead(*permissions: str):
    """Staff with `permissions`; anonymous users go to the login page, others get 403."""

    def decorate(view):
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("admin:login"))
            if not user.is_active or not user.is_staff or not user.has_perms(permissions):
                raise PermissionDenied("Reviewing recipe runs is for data leads.")
            return view(request, *args, **kwargs)

        return guarded

    return decorate


@dataclass
class GridFilters:
    decision: str = ""
    min_score: float | None = None
    has_alpha: str = ""  # "yes", "no" or ""
    source: str = ""
    lf: str = ""  # "<lf name>:<sticker|not|abstain>"
    order: str = "ranked"

    @classmethod
    def from_query(cls, query: Any) -> tuple[GridFilters, list[str]]:
        errors = []
        filters = cls(
            decision=query.get("decision", ""),
            has_alpha=query.get("has_alpha", ""),
            source=query.get("source", "").strip(),
            lf=query.get("lf", ""),
            order=query.get("order", "") or "ranked",
        )
        if filters.order not in ORDERS:
            errors.append(f"order: {filters.order!r} is not ranked or uncertain")
            filters.order = "ranked"
        if filters.decision and filters.decision not in RecipeScore.Decision.values:
            errors.append(f"decision: {filters.decision!r} is not one of the decisions")
            filters.decision = ""
        if filters.has_alpha not in ("", "yes", "no"):
            errors.append("has alpha: choose yes, no or any")
            filters.has_alpha = ""
        raw = query.get("min_score", "").strip()
        if raw:
            try:
                filters.min_score = float(raw)
            except ValueError:
                errors.append(f"min score: {raw!r} is not a number")
        if filters.lf and (":" not in filters.lf or filters.lf.rsplit(":", 1)[1] not in LF_VOTES):
            errors.append("labelling function: expected NAME:sticker, NAME:not or NAME:abstain")
            filters.lf = ""
        return filters, errors

    def apply(self, scores: QuerySet) -> QuerySet:
        if self.decision:
            scores = scores.filter(decision=self.decision)
        if self.min_score is not None:
            scores = scores.filter(score__gte=self.min_score)
        if self.has_alpha:
            scores = scores.filter(image__has_alpha=self.has_alpha == "yes")
        if self.source:
            scores = scores.filter(image__source__name=self.source)
        if self.lf:
            name, vote = self.lf.rsplit(":", 1)
            scores = scores.filter(**{f"lf_votes__{name}": LF_VOTES[vote]})
        return scores

    def query(self) -> dict[str, str]:
        values = {
            "decision": self.decision,
            "min_score": "" if self.min_score is None else repr(self.min_score),
            "has_alpha": self.has_alpha,
            "source": self.source,
            "lf": self.lf,
            "order": "" if self.order == "ranked" else self.order,
        }
        return {k: v for k, v in values.items() if v}


def _cursor(score: RecipeScore, field: str) -> str:
    return f"{getattr(score, field)!r}_{score.pk}"


def _parse_cursor(value: str) -> tuple[float, int] | None:
    try:
        score, pk = value.rsplit("_", 1)
        return float(score), int(pk)
    except ValueError:
        return None


def _page(
    scores: QuerySet, order: str, after: str, before: str
) -> tuple[list[RecipeScore], bool, bool]:
    """One page in `order` (see ORDERS) and whether pages exist after and before it.

    A cursor (value, pk) is continued by two index seeks: the rest of its tie group (`score =
    v AND id > pk`, in id order), then, if the page is not full, the rows past it (`score <
    v`). One condition `score < v OR (score = v AND id > pk)` cannot seek the index on
    (run, score desc, id) with its mixed directions: a page 90 % deep into a million-row run
    read 900,000 index entries before its first row, and as many inside a tie group, which a
    label model's few hundred vote patterns make large (a synthetic 1M run with one score:
    0.136 s a page against 0.048 s)."""
    field, descending = ORDERS[order]
    start = _parse_cursor(before) if before else None
    if start is not None:  # walk back: values the other way, ties by id down
        rows = _continue(scores, field, start, descending=not descending, ids_up=False)
        more_before = len(rows) > PAGE_SIZE
        return list(reversed(rows[:PAGE_SIZE])), True, more_before
    start = _parse_cursor(after) if after else None
    if start is not None:
        rows = _continue(scores, field, start, descending=descending, ids_up=True)
    else:
        rows = list(scores.order_by(f"-{field}" if descending else field, "pk")[: PAGE_SIZE + 1])
    return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE, start is not None


def _continue(
    scores: QuerySet, field: str, cursor: tuple[float, int], *, descending: bool, ids_up: bool
) -> list[RecipeScore]:
    """Up to PAGE_SIZE + 1 rows after `cursor`, `field` walking down (`descending`) or up and
    ties by id up or down: first the cursor's own tie group, then the values past it."""
    value, pk = cursor
    tie_key, tie_after = ("pk", "pk__gt") if ids_up else ("-pk", "pk__lt")
    rows = list(scores.filter(**{field: value, tie_after: pk}).order_by(tie_key)[: PAGE_SIZE + 1])
    if len(rows) <= PAGE_SIZE:
        past = {f"{field}__{'lt' if descending else 'gt'}": value}
        key = f"-{field}" if descending else field
        rows += list(scores.filter(**past).order_by(key, tie_key)[: PAGE_SIZE + 1 - len(rows)])
    return rows


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _grid_context(request: HttpRequest, run: RecipeRun, **extra: Any) -> dict[str, Any]:
    filters, errors = GridFilters.from_query(request.GET)
    lf_names = [lf.get("name") or lf.get("kind") for lf in run.config.get("lfs", [])]
    if filters.lf and filters.lf.rsplit(":", 1)[0] not in lf_names:
        errors.append(f"labelling function: {filters.lf.rsplit(':', 1)[0]!r} is not in this run")
        filters.lf = ""
    scores = filters.apply(
        RecipeScore.objects.filter(usable_q("image__"), run=run).select_related(
            "image", "image__source"
        )
    )
    rows, has_next, has_prev = _page(
        scores, filters.order, request.GET.get("after", ""), request.GET.get("before", "")
    )
    field = ORDERS[filters.order][0]
    base = reverse("curation-review", args=[run.pk])
    query = filters.query()
    tiles = [
        {
            "score": row,
            "src": signed_path(thumbnail_key(row.image)) if row.image.storage_key else "",
            "votes": ", ".join(f"{k}={v}" for k, v in sorted(row.lf_votes.items())),
        }
        for row in rows
    ]
    return {
        **admin.site.each_context(request),
        "title": f"Review {run}",
        "run": run,
        "tiles": tiles,
        "filters": filters,
        "filter_errors": errors,
        "decisions": RecipeScore.Decision.choices,
        "lf_names": lf_names,
        "threshold": run.config.get("score_threshold", run.recipe.threshold),
        "accepted": RecipeScore.objects.filter(
            usable_q("image__"), run=run, decision=RecipeScore.Decision.ACCEPTED
        ).count(),
        "next_url": f"{base}?{urlencode({**query, 'after': _cursor(rows[-1], field)})}"
        if has_next and rows
        else "",
        "prev_url": f"{base}?{urlencode({**query, 'before': _cursor(rows[0], field)})}"
        if has_prev and rows
        else "",
        "first_url": f"{base}?{urlencode(query)}",
        "review_next_url": f"{base}?{urlencode({'order': 'uncertain', 'decision': 'unreviewed'})}",
        "ranked_url": base,
        "decisions_summary": decisions_summary(run),
        "lf_stats": [
            {**row, "accuracy_text": _rate(row.get("accuracy"))} for row in run.stats.get("lf", [])
        ],
        "dataset_name": request.POST.get("dataset_name", f"{run.recipe.name}-domain"),
        "reason": request.POST.get("reason", ""),
        "default_caption": request.POST.get("default_caption", "a sticker"),
        **extra,
    }


@require_GET
@_data_lead(REVIEW_PERMISSION)
def review_grid(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(RecipeRun.objects.select_related("recipe", "index__space"), pk=run_id)
    return render(request, "curation/review_grid.html", _grid_context(request, run))


def _score_ids(request: HttpRequest) -> list[int]:
    if request.content_type == "application/json":
        data = json.loads(request.body or b"{}")
        raw = data.get("ids") or [data.get("id")]
    else:
        raw = request.POST.getlist("id")
    try:
        return [int(i) for i in raw if i is not None]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"id: expected score ids, got {raw!r}") from exc


@require_POST
@_data_lead(REVIEW_PERMISSION)
def review_decide(request: HttpRequest, run_id: int) -> HttpResponse:
    """Set the decision of one or more scores: `id` (repeatable) and `decision`."""
    run = get_object_or_404(RecipeRun.objects.select_related("recipe"), pk=run_id)
    try:
        ids = _score_ids(request)
        if request.content_type == "application/json":
            decision = json.loads(request.body or b"{}").get("decision", "")
        else:
            decision = request.POST.get("decision", "")
        if not ids:
            raise ValueError("id: give at least one score id")
        changed = svc.set_decision(run, ids, decision, user=request.user)
    except (ValueError, json.JSONDecodeError) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"changed": changed, "ids": ids, "decision": decision})


@require_POST
@_data_lead(REVIEW_PERMISSION)
def review_accept_above(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(RecipeRun, pk=run_id)
    raw = request.POST.get("threshold", "")
    try:
        threshold = float(raw)
    except ValueError:
        messages.error(request, f"threshold: {raw!r} is not a number")
    else:
        changed = svc.accept_above(run, threshold)
        messages.success(request, f"Accepted {changed} unreviewed images scoring ≥ {threshold}.")
    return HttpResponseRedirect(reverse("curation-review", args=[run.pk]))


@require_POST
@_data_lead(REVIEW_PERMISSION, FREEZE_PERMISSION)
def review_freeze(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(RecipeRun.objects.select_related("recipe", "index__space"), pk=run_id)
    try:
        version = svc.freeze_domain_version(
            run,
            dataset_name=request.POST.get("dataset_name", ""),
            reason=request.POST.get("reason", ""),
            user=request.user,
            default_caption=request.POST.get("default_caption", "").strip(),
        )
    except ValueError as exc:
        context = _grid_context(request, run, freeze_error=str(exc))
        return render(request, "curation/review_grid.html", context, status=400)
    messages.success(
        request,
        f"Froze {version} ({version.row_count} rows, checksum {version.checksum[:12]}).",
    )
    return HttpResponseRedirect(reverse("admin:curation_datasetversion_change", args=[version.pk]))
