"""FineStyle concept scaling on the Django side: a frozen style version in, a new frozen version
with its references plus concept sub-image / sub-prompt rows out, traced back to its source."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PILImage

from curation.models import Dataset, DatasetVersion, Image, Job
from curation.services import jobs as job_services
from curation.services.storage import read_bytes
from curation.services.versions import add_items, create_draft_version, freeze_version
from tests.training.django.conftest import stored_image
from training.engine.concept_scaling import sub_prompt
from training.services.concept_scaling import (
    ConceptScalingError,
    enqueue_concept_scaling,
    scale_concepts,
)

DESCRIPTOR = "in flat sticker style"


@pytest.fixture
def references(db) -> DatasetVersion:
    dataset = Dataset.objects.create(name="refs", kind=Dataset.Kind.STYLE)
    version = create_draft_version(dataset, reason="test")
    add_items(
        version,
        [
            {"image": stored_image((200, 40, 40), "x"), "caption": "a fox under a tree"},
            {"image": stored_image((30, 90, 220), "y"), "caption": "a red house"},
        ],
    )
    return freeze_version(version, reason="test")


def _check_scaled(scaled: DatasetVersion, source: DatasetVersion, words: dict) -> None:
    assert scaled.is_frozen and scaled.pk != source.pk
    assert scaled.dataset.name == "refs-concepts" and scaled.dataset.kind == "style"
    source_items = {i.image_id: i for i in source.items.all()}
    items = list(scaled.items.select_related("image"))
    assert scaled.row_count == len(items)
    originals = [i for i in items if i.image_id in source_items]
    assert {i.image_id: i.caption for i in originals} == {
        pk: i.caption for pk, i in source_items.items()
    }
    lineage = scaled.lineage
    assert lineage["source_version"] == {
        "id": source.pk,
        "dataset": "refs",
        "number": source.number,
        "checksum": source.checksum,
    }
    assert lineage["threshold"] == 0.8 and lineage["words"] == words and not lineage["failed"]
    crops = {c["image"]: (row, c) for row in lineage["rows"] for c in row["crops"] if c["kept"]}
    assert crops, "the tiny base found no concept region"
    concept_items = [i for i in items if i.image_id not in source_items]
    assert {i.image_id for i in concept_items} == set(crops)
    for item in concept_items:
        row, crop = crops[item.image_id]
        assert item.label == "concept" and item.caption == sub_prompt(crop["word"], DESCRIPTOR)
        assert item.caption == crop["sub_prompt"]
        assert crop["word"] in row["words"] and row["image"] in source_items
        # The stored crop is exactly the box of the source image it claims to come from.
        source_image = Image.objects.get(pk=row["image"])
        assert row["sha256"] == source_image.sha256
        left, upper, right, lower = crop["box"]
        stored = PILImage.open(io.BytesIO(read_bytes(item.image.storage_key)))
        assert stored.size == (right - left, lower - upper) == (item.image.width, item.image.height)
        assert item.image.sha256 == crop["sha256"]


@pytest.mark.django_db
def test_scale_concepts_freezes_a_new_version_of_crops_with_lineage(references, tiny_base):
    first = references.items.select_related("image").get(caption="a fox under a tree")
    words = {first.image.sha256: ["fox", "tree"], "a red house": ["house"]}
    scaled = scale_concepts(
        references,
        words,
        base_checkpoint=tiny_base,
        threshold=0.8,
        min_area=0.02,
        descriptor=DESCRIPTOR,
        user=None,
    )
    _check_scaled(scaled, references, words)
    by_prompt = {row["prompt"]: row for row in scaled.lineage["rows"]}
    assert by_prompt["a fox under a tree"]["words"] == ["fox", "tree"]
    assert by_prompt["a red house"]["words"] == ["house"]
    assert references.items.count() == 2  # the source version is untouched


@pytest.mark.django_db
def test_scale_concepts_job_runs_on_the_gpu_queue(
    references, tiny_base, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    words = {"a fox under a tree": "fox, tree", "a red house": ["house"]}
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_concept_scaling(
            references,
            words,
            base_checkpoint=tiny_base,
            threshold=0.8,
            descriptor=DESCRIPTOR,
            user=data_lead,
        )
    assert job.kind == "finestyle.scale_concepts" and job.queue == "gpu"
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    scaled = DatasetVersion.objects.get(pk=job.result["version"])
    assert job.result["source_version"] == references.pk and scaled.frozen_by == data_lead
    _check_scaled(
        scaled, references, {"a fox under a tree": ["fox", "tree"], "a red house": ["house"]}
    )


@pytest.mark.django_db
def test_bad_inputs_name_the_field(references, tiny_base):
    draft = create_draft_version(references.dataset, reason="draft")
    with pytest.raises(ConceptScalingError, match="draft") as caught:
        scale_concepts(
            draft, {}, base_checkpoint=tiny_base, threshold=0.5, min_area=0.02, user=None
        )
    assert caught.value.field == "version"
    with pytest.raises(ConceptScalingError) as caught:
        scale_concepts(
            references, {"x": 3}, base_checkpoint=tiny_base, threshold=0.5, min_area=0, user=None
        )
    assert caught.value.field == "words_by_image_or_prompt['x']"
    with pytest.raises(ConceptScalingError) as caught:
        scale_concepts(
            references, {}, base_checkpoint=tiny_base, threshold=1.5, min_area=0, user=None
        )
    assert caught.value.field == "threshold"
    # At a low threshold the tiny base's regions cover whole images: nothing new to add.
    with pytest.raises(ConceptScalingError, match="smaller than its image") as caught:
        scale_concepts(references, {}, base_checkpoint=tiny_base, threshold=0.4, user=None)
    assert caught.value.field == "threshold"
    assert not Dataset.objects.filter(name="refs-concepts").exists()


@pytest.mark.django_db
def test_a_bad_reference_is_recorded_and_the_rest_still_scaled(references, tiny_base):
    from django.core.files.storage import default_storage

    broken = stored_image((5, 250, 120), "z")
    default_storage.delete(broken.storage_key)  # only this test stores this colour
    dataset = references.dataset
    version = create_draft_version(dataset, parent=references, reason="with a broken row")
    add_items(version, [{"image": broken, "caption": "a lost cat"}])
    version = freeze_version(version, reason="test")
    scaled = scale_concepts(
        version, None, base_checkpoint=tiny_base, threshold=0.8, descriptor=DESCRIPTOR, user=None
    )
    (failed,) = scaled.lineage["failed"]
    assert failed["image"] == broken.pk and broken.storage_key in failed["error"]
    rows = {row["prompt"]: row for row in scaled.lineage["rows"]}
    assert set(rows) == {"a fox under a tree", "a red house"}
    # No words given: the prompt's content words, as the engine's fallback chooses them.
    assert rows["a fox under a tree"]["words"] == ["fox", "under", "tree"]
    assert not rows["a fox under a tree"]["words_given"]
    assert scaled.items.filter(label="concept").exists()
