"""A data lead's review of a recipe run: decisions per image, and freezing the accepted ones.

Freezing makes a DatasetVersion of kind `domain` through curation.services.versions: a draft
whose parent is the dataset's latest frozen version (so its diff says what this review added),
the accepted images as rows, and lineage naming the run, the recipe as it ran and the index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import (
    Case,
    CharField,
    Exists,
    FloatField,
    OuterRef,
    Q,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, NullIf

from curation.models import Dataset, DatasetItem, DatasetVersion, Image, RecipeRun, RecipeScore
from curation.models.images import usable_q
from curation.services.freeze_pass import TextCaptions, fill_and_freeze
from curation.services.manifests import manifest_columns
from curation.services.planner import refresh_statistics
from curation.services.versions import create_draft_version

Decision = RecipeScore.Decision
BULK_DECISIONS = 10_000


def set_decision(
    run: RecipeRun, score_ids: Iterable[int], decision: str, *, user: Any = None
) -> int:
    """Accept, reject or reset scores of this run; returns how many rows changed.

    The decision is also recorded for the run's recipe, so the recipe's next run learns from it.
    """
    from curation.services.decisions import record_decisions

    if decision not in Decision.values:
        raise ValueError(f"decision {decision!r}: expected one of {Decision.values}")
    scores = RecipeScore.objects.filter(run=run, pk__in=list(score_ids))
    with transaction.atomic():
        image_ids = list(scores.values_list("image_id", flat=True))
        changed = scores.update(decision=decision)
        record_decisions(run.recipe, dict.fromkeys(image_ids, decision), run=run, user=user)
    return changed


def accept_above(run: RecipeRun, threshold: float) -> int:
    """Accept every unreviewed image scoring at least `threshold`; rejections stay.

    Not recorded as the recipe's decisions: it would teach the recipe its own guesses.
    """
    changed = RecipeScore.objects.filter(
        run=run, score__gte=float(threshold), decision=Decision.UNREVIEWED
    ).update(decision=Decision.ACCEPTED)
    if changed > BULK_DECISIONS:
        # The freeze that follows joins the accepted scores to their images: planned on
        # statistics from before this update, a million accepted rows look like none.
        refresh_statistics(RecipeScore)
    return changed


def _text_captions(run: RecipeRun) -> TextCaptions | None:
    """The run's text queries, to caption images without a caption of their own by the closest
    one, where vectors and a text encoder exist. Vectors are compared a batch at a time as one
    matrix product: a million images never become a million Python objects."""
    texts = [q["text"] for q in run.config.get("text_queries", [])]
    if not texts or run.index is None:
        return None
    from curation.retrieval.clip_models import encode_texts
    from curation.selectors.search import closest_text_chooser
    from curation.services.embeddings import bundle_for

    space = run.index.space
    return TextCaptions(texts, closest_text_chooser(space, encode_texts(bundle_for(space), texts)))


def freeze_domain_version(
    run: RecipeRun,
    *,
    dataset_name: str,
    reason: str,
    user: Any = None,
    default_caption: str = "",
) -> DatasetVersion:
    """Freeze the run's accepted images as the next version of domain dataset `dataset_name`.

    Captions: the image's own caption, else the run's best matching text query, else
    `default_caption`. Images already in the parent version keep their row. Raises ValueError
    naming the field for a bad name, reason or selection.

    The draft is filled and frozen in one pass (`fill_and_freeze`): the parent's rows and the
    accepted images are read once, written to the draft and into the manifest together.
    """
    dataset_name = (dataset_name or "").strip()
    if not dataset_name:
        raise ValueError("dataset name: required")
    if not (reason or "").strip():
        raise ValueError("reason: say why this version is frozen")
    chosen = RecipeScore.objects.filter(run=run, decision=Decision.ACCEPTED)
    usable = chosen.filter(usable_q("image__"))
    accepted = usable.count()
    withheld = chosen.count() - accepted
    if not accepted:
        detail = f" ({withheld} accepted images are quarantined)" if withheld else ""
        raise ValueError(
            f"accepted images: none usable yet{detail}; accept images in the grid before freezing"
        )
    index = run.index
    lineage = {
        "recipe_run": run.pk,
        "recipe": run.recipe.name,
        "recipe_config": run.config,
        "index": (
            {"id": index.pk, "space": index.space.name, "version": index.version}
            if index is not None
            else None
        ),
        "accepted": accepted,
        "withheld_quarantined": withheld,
    }
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(
            name=dataset_name, defaults={"kind": Dataset.Kind.DOMAIN}
        )
        if dataset.kind != Dataset.Kind.DOMAIN:
            raise ValueError(
                f"dataset name: {dataset_name!r} is a {dataset.kind} dataset, not a domain one"
            )
        parent = (
            dataset.versions.filter(state=DatasetVersion.State.FROZEN).order_by("-number").first()
        )
        sources = []
        if parent is not None:
            # The parent's rows as they are (not re-captioned), less images quarantined since.
            quarantined = Q(image__status=Image.Status.QUARANTINED)
            lineage["withheld_quarantined"] += parent.items.filter(quarantined).count()
            kept = parent.items.exclude(quarantined).annotate(text_caption=Value(0))
            sources.append(manifest_columns(kept))
            usable = usable.exclude(
                Exists(DatasetItem.objects.filter(version=parent, image_id=OuterRef("image_id")))
            )
        version = create_draft_version(
            dataset, parent=parent, reason=reason, lineage=lineage, copy_rows=False
        )
        new = usable.annotate(
            caption=Coalesce(
                NullIf("image__caption", Value("")),
                Value(default_caption),
                output_field=TextField(),
            ),
            label=Value("sticker", output_field=CharField()),
            weight=Cast(Value(1.0), FloatField()),  # a double, not a numeric literal
            split=Value(DatasetItem.Split.TRAIN.value, output_field=CharField()),
            text_caption=Case(When(image__caption="", then=Value(1)), default=Value(0)),
        )
        sources.append(manifest_columns(new))
        return fill_and_freeze(
            version, sources, captions=_text_captions(run), user=user, reason=reason
        )
