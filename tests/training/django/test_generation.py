"""Generation batches: stored content-addressed, idempotent and resumable, rounds created."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from curation.models import AnnotationRound, Image, Job, LabelTask, StyleDescriptor
from curation.services import jobs as job_services
from training.models import Generation, GenerationBatch
from training.services.generation import (
    GenerationBatchError,
    create_generation_batch,
    enqueue_generation,
)


def _pixels(image: Image) -> np.ndarray:
    with default_storage.open(image.storage_key, "rb") as handle:
        return np.asarray(PILImage.open(handle).convert("RGBA"), dtype=np.int16)


def _run(batch, user, capture) -> Job:
    with capture(execute=True):
        job = enqueue_generation(batch, user)
    assert job.kind == "generate" and job.queue == "gpu"
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    return job


@pytest.mark.django_db
def test_batch_stores_images_and_is_idempotent(
    tiny_base, prompt_set, data_lead, no_dispatch, django_capture_on_commit_callbacks
):
    descriptor = StyleDescriptor.objects.create(name="sticker", suffix="sticker, white border")
    batch = create_generation_batch(
        tiny_base,
        prompt_set,
        [0, 1],
        sampler={"steps": 2},
        style_descriptor=descriptor,
        auto_round_kinds=["alignment"],
    )
    job = _run(batch, data_lead, django_capture_on_commit_callbacks)
    assert job.status == Job.Status.SUCCEEDED, job.error
    batch.refresh_from_db()
    assert batch.status == GenerationBatch.Status.SUCCEEDED
    assert batch.sampler["steps"] == 2 and batch.sampler["resolution"] == 32  # recorded in full
    generations = list(batch.generations.select_related("image", "prompt"))
    assert len(generations) == 4 and job.result["created"] == 4
    assert {g.prompt_text for g in generations} == {
        "a cat, sticker, white border",
        "a red house, sticker, white border",
    }
    for generation in generations:
        image = generation.image
        assert image.source.name == "generated" and image.width == 32 and image.format == "PNG"
        assert default_storage.exists(image.storage_key) and image.sha256 in image.storage_key
    assert len({g.image.sha256 for g in generations}) == 4  # seeds and prompts differ
    round_ = AnnotationRound.objects.get(generation_batch=batch)
    assert round_.kind == "alignment" and round_.tasks.count() >= 4
    assert job.result["rounds"] == {"alignment": round_.pk}

    # Lose one generation (a crash between images): a rerun draws only that one, identically.
    # A generation already pushed for rating is protected, so the unrated task goes first.
    lost = generations[1]
    lost_pixels = _pixels(lost.image)
    LabelTask.objects.filter(generation=lost).delete()
    lost.delete()
    images_before = Image.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_generation(batch, data_lead)
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["created"] == 1 and batch.generations.count() == 4
    redrawn = Generation.objects.get(batch=batch, prompt=lost.prompt, seed=lost.seed)
    # The same (weights, prompt, seed, settings) gives the same image; drawn alone instead of in
    # a batch of two, convolutions may round differently by a level or so.
    assert np.abs(_pixels(redrawn.image) - lost_pixels).max() <= 3
    assert Image.objects.count() <= images_before + 1
    assert AnnotationRound.objects.filter(generation_batch=batch).count() == 1


@pytest.mark.django_db
def test_bad_batch_settings_are_refused(tiny_base, prompt_set):
    with pytest.raises(GenerationBatchError, match="seeds"):
        create_generation_batch(tiny_base, prompt_set, [0, 0])
    with pytest.raises(GenerationBatchError, match="sampler"):
        create_generation_batch(tiny_base, prompt_set, [0], sampler={"scheduler": "nope"})
    with pytest.raises(GenerationBatchError, match="auto_round_kinds"):
        create_generation_batch(tiny_base, prompt_set, [0], auto_round_kinds=["pairwise"])
