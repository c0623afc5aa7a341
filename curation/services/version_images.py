"""Fill a draft DatasetVersion from a queryset of images, optionally only transparent ones."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from curation.models import DatasetItem, DatasetVersion, Image
from curation.services.versions import add_items

CHUNK = 2000


def add_images_to_version(
    version: DatasetVersion,
    image_queryset: QuerySet[Image],
    *,
    rgba_only: bool = False,
    label: str = "",
    weight: float = 1.0,
    split: str = DatasetItem.Split.TRAIN,
    caption: str | None = None,
) -> int:
    """Add the usable images of `image_queryset` to a draft; returns how many rows were added.

    Only images with stored bytes and status ok qualify (near-duplicates and quarantined images
    never enter a dataset). `rgba_only` keeps images with a real alpha channel, the training set
    of the transparency decoder; the filter is written into the version's lineage so the frozen
    version says how it was built. Captions default to each image's own caption.
    """
    if version.is_frozen:
        raise ValueError(f"{version} is frozen; start a new version from it instead")
    images = image_queryset.usable()
    if rgba_only:
        images = images.filter(has_alpha=True)
    before = version.items.count()
    chunk: list[dict[str, Any]] = []
    for pk, own_caption in (
        images.order_by("pk").values_list("pk", "caption").iterator(chunk_size=CHUNK)
    ):
        chunk.append(
            {
                "image": pk,
                "caption": own_caption if caption is None else caption,
                "label": label,
                "weight": weight,
                "split": split,
            }
        )
        if len(chunk) >= CHUNK:
            add_items(version, chunk)
            chunk = []
    if chunk:
        add_items(version, chunk)
    filters = dict(version.lineage.get("filters", {}))
    if rgba_only:
        filters["rgba_only"] = True
    if filters:
        version.lineage = {**version.lineage, "filters": filters}
        version.save(update_fields=["lineage", "updated_at"])
    # Counted, not summed from add_items: bulk_create(ignore_conflicts) reports skipped rows too.
    return version.items.count() - before
