"""Human results of a retrain round's arms, refreshed as annotators work.

Pass rates (style, alignment) per arm, with "new minus previous" as a paired interval; pairwise
A/B votes of all arms fitted together with Bradley–Terry allowing ties (Davidson) and the new
arm's win rates with ties counted as half. Every interval resamples prompts: ratings of the
seeds of one prompt share that prompt's difficulty.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from curation.models import Annotation
from training.engine.stats.bradley_terry import Vote, fit_votes, win_rates
from training.engine.stats.cluster_bootstrap import cluster_difference, cluster_mean
from training.models import Checkpoint
from training.services.eval_metrics import ci

PREFERRED_OUTCOMES = {"left": "left", "right": "right", "tie": "tie"}


def arm_generations(arm: str, checkpoint: Checkpoint) -> Q:
    """Generations of an arm: its checkpoint, and for the baseline only suffixed prompts."""
    query = Q(task__generation__batch__checkpoint=checkpoint)
    if arm == "prompt_engineered_base":
        return query & Q(task__generation__batch__style_descriptor__isnull=False)
    if arm == "previous":
        return query & Q(task__generation__batch__style_descriptor__isnull=True)
    return query


def _ratings(kind: str, field: str, query: Q) -> tuple[list[float], list[str]]:
    rows = (
        Annotation.objects.filter(
            deleted=False, task__round__kind=kind, **{f"{field}__isnull": False}
        )
        .filter(query)
        .values_list(field, "task__generation__prompt__text")
    )
    return [1.0 if value else 0.0 for value, _ in rows], [prompt or "" for _, prompt in rows]


def _rate(values: list[float], prompts: list[str]) -> dict[str, Any]:
    interval = cluster_mean(values, prompts)
    return {
        "rate": round(sum(values) / len(values), 4) if values else None,
        "ci": ci(interval),
        "ratings": len(values),
        "prompts": len(set(prompts)),
    }


def pairwise_votes(batch_arms: dict[int, str]) -> list[Vote]:
    """Votes between generations of two different arms' batches; skipped tasks drop out."""
    rows = (
        Annotation.objects.filter(deleted=False, task__round__kind="pairwise")
        .exclude(preferred="")
        .filter(
            task__generation__batch_id__in=list(batch_arms),
            task__other_generation__batch_id__in=list(batch_arms),
        )
        .values_list(
            "preferred",
            "task__generation__batch_id",
            "task__other_generation__batch_id",
            "task__generation__prompt__text",
        )
    )
    votes = []
    for preferred, left, right, prompt in rows:
        outcome = PREFERRED_OUTCOMES.get(preferred)
        if outcome is None or batch_arms[left] == batch_arms[right]:
            continue
        votes.append(Vote(prompt or "", batch_arms[left], batch_arms[right], outcome))
    return votes


def human_results(arms: dict[str, Checkpoint], batch_arms: dict[int, str]) -> dict[str, Any]:
    """`arms` maps arm name to checkpoint; `batch_arms` maps eval batch id to arm name."""
    result: dict[str, Any] = {"style_pass_rate": {}, "alignment_rate": {}, "differences": {}}
    samples: dict[str, dict[str, tuple[list[float], list[str]]]] = {"style": {}, "alignment": {}}
    for arm, checkpoint in arms.items():
        if checkpoint is None:
            continue
        query = arm_generations(arm, checkpoint)
        samples["style"][arm] = _ratings("style", "passed", query)
        samples["alignment"][arm] = _ratings("alignment", "aligned", query)
        result["style_pass_rate"][arm] = _rate(*samples["style"][arm])
        result["alignment_rate"][arm] = _rate(*samples["alignment"][arm])
    for kind, key in (("style", "style_pass_rate"), ("alignment", "alignment_rate")):
        new = samples[kind].get("new")
        for arm, other in samples[kind].items():
            if arm == "new" or new is None:
                continue
            interval = cluster_difference(new[0], new[1], other[0], other[1])
            result["differences"].setdefault(arm, {})[key] = (
                {
                    "estimate": round(interval.estimate, 4),
                    "ci": ci(interval),
                    "prompts": interval.clusters,
                }
                if interval
                else None
            )
    votes = pairwise_votes(batch_arms)
    result["bradley_terry"] = fit_votes(votes)
    result["win_rates"] = win_rates(votes, "new") if votes else {}
    return result
