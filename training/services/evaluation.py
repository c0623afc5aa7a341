"""Evaluate a retrain round's checkpoint against the previous one and a prompt-engineered base.

Three arms generate the same fixed evaluation prompts × seeds: the new checkpoint, the checkpoint
it started from, and the root base model with a sticker style suffix (the baseline Style
Tailoring compares against). CLIP gives text alignment, style similarity to the round's style
exemplars and scene diversity across seeds; human results (pass rates, pairwise win rates) come
from the rating rounds with bootstrap confidence intervals and are refreshed as annotators work.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from curation.models import Annotation, DatasetItem, StyleDescriptor
from training.models import Checkpoint, Generation, GenerationBatch, RetrainRound

logger = logging.getLogger(__name__)

ARMS = ("new", "previous", "prompt_engineered_base")
MAX_STYLE_REFERENCES = 32
BOOTSTRAP_RESAMPLES = 2000


def root_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    seen = set()
    while checkpoint.parent_id and checkpoint.pk not in seen:
        seen.add(checkpoint.pk)
        checkpoint = checkpoint.parent
    return checkpoint


def bootstrap_ci(
    values: Sequence[float], *, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; None with fewer than two observations."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if data.size < 2:
        return None
    if np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    from scipy.stats import bootstrap

    result = bootstrap(
        (data,),
        np.mean,
        confidence_level=confidence,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return (
        round(float(result.confidence_interval.low), 4),
        round(float(result.confidence_interval.high), 4),
    )


def _style_descriptor(round_: RetrainRound) -> StyleDescriptor | None:
    return round_.style_descriptor or StyleDescriptor.objects.filter(name="sticker").first()


def _eval_batches(round_: RetrainRound) -> dict[str, GenerationBatch]:
    from training.services.generation import create_generation_batch

    arms = {
        "new": (round_.checkpoint, None),
        "previous": (round_.base_checkpoint, None),
        "prompt_engineered_base": (
            root_checkpoint(round_.base_checkpoint),
            _style_descriptor(round_),
        ),
    }
    batches = {}
    existing = {
        b.name: b for b in GenerationBatch.objects.filter(name__startswith=f"{round_.name} eval ")
    }
    for arm, (checkpoint, descriptor) in arms.items():
        name = f"{round_.name} eval {arm}"
        batch = existing.get(name)
        if batch is None:
            batch = create_generation_batch(
                checkpoint,
                round_.eval_prompt_set,
                seeds=round_.seeds,
                sampler=round_.hyperparameters.get("eval_sampler"),
                style_descriptor=descriptor,
                name=name,
            )
        batches[arm] = batch
    return batches


def _open(image_key: str) -> PILImage.Image:
    with default_storage.open(image_key, "rb") as handle:
        image = PILImage.open(handle)
        image.load()
    return image


def _style_references(round_: RetrainRound) -> list[PILImage.Image]:
    items = (
        DatasetItem.objects.filter(
            version__in=round_.dataset_versions.filter(dataset__kind="style")
        )
        .select_related("image")
        .order_by("id")[:MAX_STYLE_REFERENCES]
    )
    return [_open(item.image.storage_key) for item in items if item.image.storage_key]


def _clip_bundle() -> Any:
    from training.engine.metrics import load_metric_clip

    return load_metric_clip(settings.EVAL_CLIP_MODEL, settings.EVAL_CLIP_WEIGHTS or None)


def score_batch(
    bundle: Any, batch: GenerationBatch, references: list[PILImage.Image]
) -> dict[str, Any]:
    """Per-generation CLIP scores plus the batch means (text, style, diversity)."""
    from training.engine import metrics

    generations = list(batch.generations.select_related("prompt", "image").order_by("id"))
    if not generations:
        return {"n": 0, "rows": []}
    images = [_open(g.image.storage_key) for g in generations]
    # Score against the content prompt, not the suffixed one: the baseline's suffix must not
    # buy it text alignment.
    prompts = [g.prompt.text for g in generations]
    text = metrics.text_score(bundle, images, prompts)
    style = metrics.style_score(bundle, images, references) if references else None
    by_prompt: dict[str, list[PILImage.Image]] = defaultdict(list)
    for generation, image in zip(generations, images, strict=True):
        by_prompt[generation.prompt.text].append(image)
    per_prompt = metrics.diversity(bundle, by_prompt)
    diversity = _mean([v for v in per_prompt.values() if v is not None and not math.isnan(v)])
    rows = [
        {
            "generation": g.pk,
            "image_key": g.image.storage_key,
            "prompt": g.prompt.text,
            "category": g.prompt.category or "uncategorised",
            "seed": g.seed,
            "text_score": _float(text[i]),
            "style_score": _float(style[i]) if style is not None else None,
        }
        for i, g in enumerate(generations)
    ]
    return {
        "n": len(rows),
        "text_score": _mean([r["text_score"] for r in rows]),
        "text_score_ci": bootstrap_ci([r["text_score"] for r in rows]),
        "style_score": _mean([r["style_score"] for r in rows]),
        "style_score_ci": bootstrap_ci([r["style_score"] for r in rows]),
        "diversity": diversity,
        "diversity_by_prompt": {p: _float(v) for p, v in per_prompt.items()},
        "rows": rows,
    }


def _float(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else round(number, 6)


def _mean(values: Sequence[float | None]) -> float | None:
    clean = [v for v in values if v is not None]
    return round(float(np.mean(clean)), 6) if clean else None


def by_category(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["category"]].append(row)
    return {
        category: {
            "n": len(items),
            "text_score": _mean([r["text_score"] for r in items]),
            "style_score": _mean([r["style_score"] for r in items]),
        }
        for category, items in sorted(groups.items())
    }


def human_results(checkpoint: Checkpoint, others: dict[str, Checkpoint]) -> dict[str, Any]:
    """Pass rates of the checkpoint's generations and pairwise win rates against other arms."""
    live = Annotation.objects.filter(deleted=False)
    style = live.filter(
        task__round__kind="style",
        task__generation__batch__checkpoint=checkpoint,
        passed__isnull=False,
    )
    aligned = live.filter(
        task__round__kind="alignment",
        task__generation__batch__checkpoint=checkpoint,
        aligned__isnull=False,
    )
    passes = [1.0 if a else 0.0 for a in style.values_list("passed", flat=True)]
    alignment = [1.0 if a else 0.0 for a in aligned.values_list("aligned", flat=True)]
    result: dict[str, Any] = {
        "style_pass_rate": _mean(passes),
        "style_pass_rate_ci": bootstrap_ci(passes),
        "style_ratings": len(passes),
        "alignment_rate": _mean(alignment),
        "alignment_rate_ci": bootstrap_ci(alignment),
        "alignment_ratings": len(alignment),
        "win_rates": {},
    }
    pairwise = (
        live.filter(task__round__kind="pairwise")
        .exclude(preferred="")
        .select_related("task__generation__batch", "task__other_generation__batch")
    )
    for arm, other in others.items():
        votes = []
        for annotation in pairwise:
            left, right = annotation.task.generation, annotation.task.other_generation
            if left is None or right is None:
                continue
            sides = {left.batch.checkpoint_id: "left", right.batch.checkpoint_id: "right"}
            if checkpoint.pk in sides and other.pk in sides and len(sides) == 2:
                votes.append(1.0 if annotation.preferred == sides[checkpoint.pk] else 0.0)
        result["win_rates"][arm] = {
            "win_rate": _mean(votes),
            "ci": bootstrap_ci(votes),
            "votes": len(votes),
        }
    return result


def evaluate_round(round_: RetrainRound, ctx: Any = None) -> dict[str, Any]:
    """Generate the three arms (resumable), score them and return the round's report."""
    from training.services.generation import execute_generation_batch

    batches = _eval_batches(round_)
    for arm in ARMS:
        if ctx is not None:
            ctx.log(f"evaluation: generating arm {arm}")
        execute_generation_batch(batches[arm], ctx)
    bundle = _clip_bundle()
    references = _style_references(round_)
    arms = {arm: score_batch(bundle, batches[arm], references) for arm in ARMS}
    report = build_report(round_, arms, batches)
    Checkpoint.objects.filter(pk=round_.checkpoint_id).update(metrics=report["summary"]["new"])
    return report


def build_report(
    round_: RetrainRound, arms: dict[str, dict[str, Any]], batches: dict[str, GenerationBatch]
) -> dict[str, Any]:
    summary = {arm: {k: v for k, v in data.items() if k != "rows"} for arm, data in arms.items()}
    new_rows = arms["new"]["rows"]
    ranked = sorted(
        (r for r in new_rows if r["text_score"] is not None),
        key=lambda r: r["text_score"],
        reverse=True,
    )
    checkpoint = round_.checkpoint
    others = {
        "previous": round_.base_checkpoint,
        "prompt_engineered_base": root_checkpoint(round_.base_checkpoint),
    }
    return {
        "summary": summary,
        "by_category": {arm: by_category(data["rows"]) for arm, data in arms.items()},
        "best": ranked[:8],
        "worst": ranked[-8:][::-1],
        "batches": {arm: batch.pk for arm, batch in batches.items()},
        "human": human_results(checkpoint, others) if checkpoint else {},
        "lineage": checkpoint_lineage(checkpoint) if checkpoint else {},
    }


def refresh_human_results(round_: RetrainRound) -> dict[str, Any]:
    """Recompute the human part of a report as ratings arrive (admin action, API)."""
    report = dict(round_.report or {})
    others = {
        "previous": round_.base_checkpoint,
        "prompt_engineered_base": root_checkpoint(round_.base_checkpoint),
    }
    if round_.checkpoint:
        report["human"] = human_results(round_.checkpoint, others)
    RetrainRound.objects.filter(pk=round_.pk).update(report=report)
    return report


def checkpoint_lineage(checkpoint: Checkpoint) -> dict[str, Any]:
    """From a checkpoint back through its parents to the dataset versions and images behind it."""
    chain = []
    seen = set()
    node: Checkpoint | None = checkpoint
    while node is not None and node.pk not in seen:
        seen.add(node.pk)
        versions = [
            {
                "id": v.pk,
                "name": str(v),
                "kind": v.dataset.kind,
                "checksum": v.checksum,
                "rows": v.row_count,
                "lineage": v.lineage,
            }
            for v in node.dataset_versions.select_related("dataset")
        ]
        chain.append(
            {
                "checkpoint": node.pk,
                "name": node.name,
                "adapter": node.adapter,
                "training_run": node.training_run_id,
                "dataset_versions": versions,
            }
        )
        node = node.parent
    return {"chain": chain}


def generation_count(batch_id: int) -> int:
    return Generation.objects.filter(batch_id=batch_id).count()
