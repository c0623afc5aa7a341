"""A data lead's review of a recipe run: decisions per image, and freezing the accepted ones.

Freezing makes a DatasetVersion of kind `domain` through curation.services.versions: a draft
whose parent is the dataset's latest frozen version (so its diff says what this review added),
the accepted images as rows, and lineage naming the run, the recipe as it ran and the index.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from django.db import transaction

from curation.models import Dataset, DatasetVersion, RecipeRun, RecipeScore
from curation.models.images import usable_q
from curation.services.versions import add_items, create_draft_version, freeze_version

Decision = RecipeScore.Decision
ADD_CHUNK = 50_000


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
    return RecipeScore.objects.filter(
        run=run, score__gte=float(threshold), decision=Decision.UNREVIEWED
    ).update(decision=Decision.ACCEPTED)


def _best_text_captions(run: RecipeRun, image_ids: list[int]) -> dict[int, str]:
    """Each image's closest text query of the run, where vectors and a text encoder exist."""
    texts = [q["text"] for q in run.config.get("text_queries", [])]
    if not texts or run.index is None or not image_ids:
        return {}
    from curation.retrieval.clip_models import encode_texts
    from curation.selectors.search import image_vectors_by_id
    from curation.services.embeddings import bundle_for

    space = run.index.space
    text_vectors = encode_texts(bundle_for(space), texts)
    # One pass over the shards that hold these images; unembedded ones get the default caption.
    found = image_vectors_by_id(space, image_ids)
    if not found:
        return {}
    ids = np.fromiter(found.keys(), dtype=np.int64, count=len(found))
    best = np.argmax(np.stack(list(found.values())) @ text_vectors.T, axis=1)
    return {int(i): texts[int(b)] for i, b in zip(ids, best, strict=True)}


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
    `default_caption`. Raises ValueError naming the field for a bad name, reason or selection.
    """
    dataset_name = (dataset_name or "").strip()
    if not dataset_name:
        raise ValueError("dataset name: required")
    if not (reason or "").strip():
        raise ValueError("reason: say why this version is frozen")
    chosen = RecipeScore.objects.filter(run=run, decision=Decision.ACCEPTED)
    accepted = list(
        chosen.filter(usable_q("image__")).order_by("-score", "pk").values_list("image_id", "score")
    )
    withheld = chosen.count() - len(accepted)
    if not accepted:
        detail = f" ({withheld} accepted images are quarantined)" if withheld else ""
        raise ValueError(
            f"accepted images: none usable yet{detail}; accept images in the grid before freezing"
        )
    image_ids = [image_id for image_id, _ in accepted]
    # A join, not `pk__in` a million ids (SQLite caps a statement's parameters).
    own = dict(
        chosen.exclude(image__caption="").values_list("image_id", "image__caption").iterator()
    )
    matched = _best_text_captions(run, [i for i in image_ids if i not in own])
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
        "accepted": len(image_ids),
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
        version = create_draft_version(dataset, parent=parent, reason=reason, lineage=lineage)
        # In chunks, so a million accepted images never sit in memory as model objects at once.
        for start in range(0, len(image_ids), ADD_CHUNK):
            add_items(
                version,
                [
                    {
                        "image": image_id,
                        "caption": own.get(image_id) or matched.get(image_id) or default_caption,
                        "label": "sticker",
                        "weight": 1.0,
                    }
                    for image_id in image_ids[start : start + ADD_CHUNK]
                ],
            )
        return freeze_version(version, user=user, reason=reason)
