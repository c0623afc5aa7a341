"""The demo stage end to end on the fixture pool: ingest, embed, index, recipe, freeze."""

from __future__ import annotations

import pytest

from curation.models import Dataset, DatasetVersion, EmbeddingShard, VectorIndex

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_demo_domain_dataset_freezes_the_stickers(data_lead):
    from curation.services.demo_domain import DEMO_DATASET, demo_domain_dataset

    version = demo_domain_dataset(data_lead)
    assert version.is_frozen and version.dataset.kind == Dataset.Kind.DOMAIN
    assert version.dataset.name == DEMO_DATASET and version.row_count > 0
    images = [item.image for item in version.items.select_related("image")]
    # The fixture pool's stickers are RGBA cut-outs, its photos opaque JPEGs.
    assert all(image.has_alpha for image in images)
    assert all(item.caption == "a sticker" for item in version.items.all())
    assert set(EmbeddingShard.objects.values_list("status", flat=True)) == {"done"}
    index = VectorIndex.objects.get()
    assert version.lineage["index"] == {"id": index.pk, "space": "demo-tiny-clip", "version": 1}
    assert version.lineage["recipe"] == "demo-stickers"

    # A rerun picks the same rows: no copy of the version is frozen, the first one is returned.
    again = demo_domain_dataset(data_lead)
    assert again == version and DatasetVersion.objects.filter(dataset=version.dataset).count() == 1
