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


def test_on_the_toy_worlds_pool_the_recipe_keeps_its_stickers_with_their_captions(
    data_lead, tmp_path, settings
):
    """The demo's pool is drawn from the toy world: photographs (textured, cluttered) and
    stickers (flat colours, outline, white), each with the caption naming its content."""
    from curation.services.demo_domain import demo_domain_dataset
    from training.engine.toy_world.build import ToyWorldSettings
    from training.engine.toy_world.cache import write_pool

    settings.INGEST_LOCAL_ROOTS = [str(tmp_path)]
    pool = write_pool(tmp_path, ToyWorldSettings.small())
    version = demo_domain_dataset(data_lead, pool=pool)
    items = list(version.items.select_related("image"))
    origins = [item.image.origin for item in items]
    stickers = sum("/stickers/" in origin for origin in origins)
    assert len(items) >= 36 and stickers / len(items) >= 0.9, (len(items), stickers)
    # Captions are the pool's own ("two red circles"), not the demo's default.
    assert all(item.caption == item.image.caption != "a sticker" for item in items)
