"""Evaluate a retrain round's checkpoint against the previous one and a prompt-engineered base.

Three arms generate the same fixed evaluation prompts × seeds: the new checkpoint, the checkpoint
it started from, and the root base model with a sticker style suffix (the baseline Style
Tailoring compares against). The evaluation CLIP named in settings (the report says which
model, its checksum, and whether its weights are random) gives text alignment, style similarity
to the round's style exemplars, content leakage and scene diversity (`eval_metrics`); human
results come from the rating rounds (`human_results`) and are refreshed as annotators work.
Every interval resamples prompts.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.files.storage import default_storage
from PIL import Image as PILImage

from curation.models import DatasetItem, StyleDescriptor
from training.models import Checkpoint, Generation, GenerationBatch, RetrainRound
from training.services import eval_metrics
from training.services.eval_scorer import load_eval_scorer
from training.services.human_results import human_results

logger = logging.getLogger(__name__)

ARMS = ("new", "previous", "prompt_engineered_base")
MAX_STYLE_REFERENCES = 32


def root_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    seen = set()
    while checkpoint.parent_id and checkpoint.pk not in seen:
        seen.add(checkpoint.pk)
        checkpoint = checkpoint.parent
    return checkpoint


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


def open_image(image_key: str) -> PILImage.Image:
    with default_storage.open(image_key, "rb") as handle:
        image = PILImage.open(handle)
        image.load()
    return image


def style_reference_images(versions: Any) -> list[PILImage.Image]:
    """The first images of the style versions among `versions` (a DatasetVersion queryset)."""
    items = (
        DatasetItem.objects.filter(version__in=versions.filter(dataset__kind="style"))
        .select_related("image")
        .order_by("id")[:MAX_STYLE_REFERENCES]
    )
    return [open_image(item.image.storage_key) for item in items if item.image.storage_key]


def _style_references(round_: RetrainRound) -> list[PILImage.Image]:
    return style_reference_images(round_.dataset_versions.all())


def _reference_content(round_: RetrainRound) -> list[str]:
    """What the style references show: their captions without the round's style words."""
    items = DatasetItem.objects.filter(
        version__in=round_.dataset_versions.filter(dataset__kind="style")
    ).order_by("id")[:MAX_STYLE_REFERENCES]
    descriptor = _style_descriptor(round_)
    contents = []
    for caption in items.values_list("caption", flat=True):
        text = caption or ""
        if descriptor is not None:
            text = text.removeprefix(descriptor.prefix).removesuffix(descriptor.suffix)
        text = text.strip(" ,")
        if text:
            contents.append(text)
    return contents


def score_batch(
    bundle: Any,
    batch: GenerationBatch,
    references: list[PILImage.Image],
    reference_content: list[str],
    preferences: list[Any] | None = None,
) -> dict[str, Any]:
    """Per-generation scores of one arm's batch and its per-prompt diversity."""
    generations = list(batch.generations.select_related("prompt", "image").order_by("id"))
    rows = [
        {
            "generation": g.pk,
            "image_key": g.image.storage_key,
            "prompt": g.prompt.text,
            "category": g.prompt.category or "uncategorised",
            "seed": g.seed,
        }
        for g in generations
    ]
    images = [open_image(g.image.storage_key) for g in generations]
    return eval_metrics.score_images(
        bundle, rows, images, references, reference_content, preferences or []
    )


def arm_checkpoints(round_: RetrainRound) -> dict[str, Checkpoint | None]:
    return {
        "new": round_.checkpoint,
        "previous": round_.base_checkpoint,
        "prompt_engineered_base": root_checkpoint(round_.base_checkpoint),
    }


def evaluate_round(round_: RetrainRound, ctx: Any = None) -> dict[str, Any]:
    """Generate the three arms (resumable), score them and return the round's report."""
    from training.services.generation import execute_generation_batch

    batches = _eval_batches(round_)
    for arm in ARMS:
        if ctx is not None:
            ctx.log(f"evaluation: generating arm {arm}")
        execute_generation_batch(batches[arm], ctx)
    scorer = load_eval_scorer()
    references = _style_references(round_)
    content = _reference_content(round_)
    arms = {
        arm: score_batch(scorer.bundle, batches[arm], references, content, scorer.preferences)
        for arm in ARMS
    }
    report = build_report(round_, arms, batches, scorer.describe())
    Checkpoint.objects.filter(pk=round_.checkpoint_id).update(metrics=report["summary"]["new"])
    return report


def build_report(
    round_: RetrainRound,
    arms: dict[str, dict[str, Any]],
    batches: dict[str, GenerationBatch],
    scorer: dict[str, Any],
) -> dict[str, Any]:
    checkpoint = round_.checkpoint
    return {
        "scorer": scorer,
        "summary": {arm: eval_metrics.summarise(scored) for arm, scored in arms.items()},
        "comparisons": eval_metrics.comparisons(arms),
        "by_category": {
            arm: eval_metrics.by_category(scored["rows"]) for arm, scored in arms.items()
        },
        **eval_metrics.ranked_grids(arms["new"]["rows"]),
        "batches": {arm: batch.pk for arm, batch in batches.items()},
        "human": _human(round_, {arm: batch.pk for arm, batch in batches.items()}),
        "lineage": checkpoint_lineage(checkpoint) if checkpoint else {},
    }


def _human(round_: RetrainRound, batch_ids: dict[str, int]) -> dict[str, Any]:
    if round_.checkpoint is None:
        return {}
    return human_results(arm_checkpoints(round_), {pk: arm for arm, pk in batch_ids.items()})


def refresh_human_results(round_: RetrainRound) -> dict[str, Any]:
    """Recompute the human part of a report as ratings arrive (admin action, API)."""
    report = dict(round_.report or {})
    report["human"] = _human(round_, report.get("batches", {}))
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
