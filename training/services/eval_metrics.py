"""Automatic metrics of evaluation arms, every interval resampled by prompt.

Each arm's generations are scored per image (CLIP text alignment against the content prompt,
style similarity to the style references, content leakage towards what those references show)
and per prompt (scene diversity across seeds). Means carry cluster-bootstrap intervals over
prompts (`training.engine.stats`); arms compared on the same prompts get paired intervals of
their difference, both absolute and relative, which is what "new minus previous" means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from PIL import Image as PILImage

from training.engine.stats.cluster_bootstrap import Interval, cluster_difference, cluster_mean

PER_IMAGE = ("text_score", "style_score", "content_leakage")
METRICS = (*PER_IMAGE, "diversity")
GRID_SIZE = 8


def _round(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else round(number, 6)


def ci(interval: Interval | None) -> list[float] | None:
    return [round(interval.low, 4), round(interval.high, 4)] if interval else None


def score_images(
    bundle: Any,
    generations: Sequence[dict[str, Any]],
    images: Sequence[PILImage.Image],
    references: Sequence[PILImage.Image],
    reference_content: Sequence[str],
    preferences: Sequence[Any] = (),
) -> dict[str, Any]:
    """Rows (one per generation) with per-image scores, plus per-prompt diversity.

    `generations` are dicts with at least `prompt` (the content prompt, without any style
    suffix: the baseline's suffix must not buy it text alignment), `category` and `seed`.
    """
    from training.engine import metrics

    if not generations:
        return {"rows": [], "diversity_by_prompt": {}}
    image_rows = metrics.embed_images(bundle, list(images))
    prompts = [g["prompt"] for g in generations]
    text = metrics.cosine_pairs(image_rows, metrics.embed_texts(bundle, prompts))
    style = (
        metrics.mean_similarity(image_rows, metrics.embed_images(bundle, list(references)))
        if references
        else None
    )
    leakage = _content_leakage(bundle, image_rows, prompts, reference_content)
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for index, prompt in enumerate(prompts):
        by_prompt[prompt].append(index)
    diversity = {
        prompt: _round(metrics.mean_pairwise_distance(image_rows[indexes]))
        for prompt, indexes in by_prompt.items()
    }
    preference = {scorer.name: scorer.score(images, prompts) for scorer in preferences}
    rows = [
        {
            **generation,
            "text_score": _round(text[i]),
            "style_score": _round(style[i]) if style is not None else None,
            "content_leakage": leakage[i],
            "preference": {name: _round(values[i]) for name, values in preference.items()},
        }
        for i, generation in enumerate(generations)
    ]
    return {"rows": rows, "diversity_by_prompt": diversity}


def _content_leakage(
    bundle: Any, image_rows: Any, prompts: Sequence[str], reference_content: Sequence[str]
) -> list[float | None]:
    """FineStyle's content leakage: the highest similarity of a generation to what a style
    reference shows, over the references whose content is not the generation's own prompt."""
    from training.engine import metrics

    contents = sorted({c.strip() for c in reference_content if c and c.strip()})
    if not contents:
        return [None] * len(prompts)
    similarity = image_rows @ metrics.embed_texts(bundle, contents).T
    leakage: list[float | None] = []
    for index, prompt in enumerate(prompts):
        allowed = [j for j, content in enumerate(contents) if content != prompt.strip()]
        leakage.append(_round(similarity[index, allowed].max()) if allowed else None)
    return leakage


def summarise(scored: dict[str, Any]) -> dict[str, Any]:
    """Means with prompt-clustered intervals for one arm."""
    rows = scored["rows"]
    clusters = [r["prompt"] for r in rows]
    summary: dict[str, Any] = {"n": len(rows), "prompts": len(set(clusters))}
    for metric in PER_IMAGE:
        values = [r[metric] for r in rows]
        measured = [v for v in values if v is not None]
        interval = cluster_mean(values, clusters)
        summary[metric] = _round(sum(measured) / len(measured)) if measured else None
        summary[f"{metric}_ci"] = ci(interval)
    per_prompt = {p: v for p, v in scored["diversity_by_prompt"].items() if v is not None}
    interval = cluster_mean(list(per_prompt.values()), list(per_prompt))
    summary["diversity"] = (
        _round(sum(per_prompt.values()) / len(per_prompt)) if per_prompt else None
    )
    summary["diversity_ci"] = ci(interval)
    names = sorted({name for r in rows for name in r.get("preference", {})})
    summary["preference"] = {}
    for name in names:
        values = [r["preference"].get(name) for r in rows]
        measured = [v for v in values if v is not None]
        summary["preference"][name] = {
            "mean": _round(sum(measured) / len(measured)) if measured else None,
            "ci": ci(cluster_mean(values, clusters)),
        }
    return summary


def _metric_values(scored: dict[str, Any], metric: str) -> tuple[list, list]:
    if metric == "diversity":
        items = [(p, v) for p, v in scored["diversity_by_prompt"].items() if v is not None]
        return [v for _, v in items], [p for p, _ in items]
    return [r[metric] for r in scored["rows"]], [r["prompt"] for r in scored["rows"]]


def paired_difference(
    new: dict[str, Any], other: dict[str, Any], metric: str, *, relative: bool = False
) -> dict[str, Any] | None:
    """new minus other on the prompts both arms have, one resampling of prompts for both."""
    a, a_clusters = _metric_values(new, metric)
    b, b_clusters = _metric_values(other, metric)
    interval = cluster_difference(a, a_clusters, b, b_clusters, relative=relative)
    if interval is None:
        return None
    return {
        "estimate": round(interval.estimate, 4),
        "ci": ci(interval),
        "prompts": interval.clusters,
    }


def comparisons(arms: dict[str, dict[str, Any]], reference: str = "new") -> dict[str, Any]:
    """For every other arm: reference minus it, absolute and relative, per metric."""
    result: dict[str, Any] = {}
    for arm, scored in arms.items():
        if arm == reference:
            continue
        result[arm] = {
            metric: {
                "difference": paired_difference(arms[reference], scored, metric),
                "relative": paired_difference(arms[reference], scored, metric, relative=True),
            }
            for metric in METRICS
        }
    return result


def by_category(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per prompt category: n and each per-image metric with its prompt-clustered interval."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row.get("category") or "uncategorised"].append(row)
    result = {}
    for category, items in sorted(groups.items()):
        clusters = [r["prompt"] for r in items]
        entry: dict[str, Any] = {"n": len(items), "prompts": len(set(clusters))}
        for metric in PER_IMAGE:
            values = [r[metric] for r in items]
            measured = [v for v in values if v is not None]
            entry[metric] = _round(sum(measured) / len(measured)) if measured else None
            entry[f"{metric}_ci"] = ci(cluster_mean(values, clusters))
        result[category] = entry
    return result


def ranked_grids(rows: list[dict[str, Any]], size: int = GRID_SIZE) -> dict[str, list]:
    """Best and worst by text alignment; one ranked grid when they would overlap.

    With fewer than two grids' worth of images the best and worst grids would show the same
    images twice, so the report shows every image once, ranked, instead.
    """
    ranked = sorted(
        (r for r in rows if r.get("text_score") is not None),
        key=lambda r: r["text_score"],
        reverse=True,
    )
    if len(ranked) < 2 * size:
        return {"ranked": ranked, "best": [], "worst": []}
    return {"ranked": [], "best": ranked[:size], "worst": ranked[-size:][::-1]}
