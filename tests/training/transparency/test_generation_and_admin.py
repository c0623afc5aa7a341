"""RGBA generation with a decoder checkpoint, checkerboard display, and the admin start action."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image as PILImage

from curation.labelstudio.configs import config_for
from curation.models import Job
from curation.services import jobs as job_services
from training.models import Checkpoint
from training.services.generation import (
    GenerationBatchError,
    create_generation_batch,
    enqueue_generation,
)
from training.services.transparency import JOB_KIND, create_decoder_run


def _train_decoder(base, version, user, capture) -> Checkpoint:
    with capture(execute=True):
        job = create_decoder_run(
            base,
            version,
            {"steps": 30, "batch_size": 8, "learning_rate": 3e-3, "resolution": 16},
            user=user,
        )
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    return Checkpoint.objects.get(pk=job.result["checkpoint"])


@pytest.mark.django_db
def test_batch_with_a_decoder_stores_rgba_pngs_with_real_alpha(
    client,
    tiny_base,
    rgba_version,
    prompt_set,
    data_lead,
    no_dispatch,
    django_capture_on_commit_callbacks,
):
    decoder = _train_decoder(tiny_base, rgba_version, data_lead, django_capture_on_commit_callbacks)
    with pytest.raises(GenerationBatchError, match="is not a transparency decoder"):
        create_generation_batch(
            tiny_base, prompt_set, [0], sampler={"transparency_decoder": tiny_base.pk}
        )
    batch = create_generation_batch(
        tiny_base, prompt_set, [0, 1], sampler={"steps": 2, "transparency_decoder": decoder.pk}
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_generation(batch, data_lead)
    job_services.execute_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    batch.refresh_from_db()
    assert batch.sampler["transparency_decoder"] == decoder.pk  # recorded as the checkpoint id

    generations = list(batch.generations.select_related("image"))
    assert len(generations) == 4
    for generation in generations:
        image = generation.image
        with default_storage.open(image.storage_key, "rb") as handle:
            stored = PILImage.open(io.BytesIO(handle.read()))
        alpha = np.asarray(stored)[..., 3] if stored.mode == "RGBA" else None
        assert stored.format == "PNG" and stored.mode == "RGBA"
        assert alpha.min() < alpha.max(), "alpha is constant"
        assert image.has_alpha and image.format == "PNG"

    # Raters see the cut-out: admin thumbnails and Label Studio configs draw a checkerboard.
    client.force_login(data_lead)
    page = client.get(reverse("admin:training_generationbatch_change", args=[batch.pk]))
    assert page.status_code == 200 and "repeating-conic-gradient" in page.content.decode()
    for kind in ("alignment", "style", "pairwise"):
        config = config_for(kind)
        assert "<Style>" in config and "repeating-conic-gradient" in config
        assert re.search(r'className="[^"]*\bchecker\b[^"]*"', config), kind


def _action(client, base, data=None):
    return client.post(
        reverse("admin:training_checkpoint_changelist"),
        {"action": "train_transparency_decoder", ACTION_CHECKBOX_NAME: [base.pk], **(data or {})},
    )


@pytest.mark.django_db
def test_admin_start_action_for_a_data_lead_refused_for_an_annotator(
    client,
    tiny_base,
    rgba_version,
    data_lead,
    annotator,
    no_dispatch,
    django_capture_on_commit_callbacks,
):
    from .conftest import make_shapes_version

    rgb = make_shapes_version(3, 0, rgba=False)
    client.force_login(data_lead)
    form_page = _action(client, tiny_base)
    assert form_page.status_code == 200
    offered = set(form_page.context["form"].fields["rgba_version"].queryset)
    assert offered == {rgba_version} and rgb not in offered  # only all-RGBA frozen versions
    assert "Recent decoder trainings" in form_page.content.decode()

    refused = _action(
        client, tiny_base, {"apply": "1", "rgba_version": rgb.pk, "hyperparameters": "{}"}
    )
    assert refused.status_code == 200 and "rgba_version" in refused.context["form"].errors
    bad = _action(
        client,
        tiny_base,
        {"apply": "1", "rgba_version": rgba_version.pk, "hyperparameters": '{"steps": -1}'},
    )
    assert "must be an integer" in str(bad.context["form"].errors)
    assert not Job.objects.filter(kind=JOB_KIND).exists()

    with django_capture_on_commit_callbacks(execute=True):
        started = _action(
            client,
            tiny_base,
            {"apply": "1", "rgba_version": rgba_version.pk, "hyperparameters": '{"steps": 5}'},
        )
    assert started.status_code == 302
    job = Job.objects.get(kind=JOB_KIND)
    assert job.queue == "gpu" and job.created_by == data_lead and no_dispatch == [job.pk]
    assert job.params["hyperparameters"]["steps"] == 5
    assert job.params["hyperparameters"]["resolution"] == 32  # tiny defaults filled in
    assert job.target_id == tiny_base.pk
    listing = client.get(reverse("admin:training_checkpoint_changelist"), follow=True)
    assert f"job #{job.pk}" in listing.content.decode()

    client.force_login(annotator)
    denied = _action(
        client,
        tiny_base,
        {"apply": "1", "rgba_version": rgba_version.pk, "hyperparameters": "{}"},
    )
    assert denied.status_code == 302 and "/login/" in denied["Location"]
    assert Job.objects.filter(kind=JOB_KIND).count() == 1
