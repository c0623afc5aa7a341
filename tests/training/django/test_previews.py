"""Validation previews reach the TrainingRun and its admin page, as the data lead sees it."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from curation.media import signed_path
from curation.services import jobs as job_services
from training.models import TrainingRun
from training.services.runs.inputs import create_training_run
from training.services.runs.jobs import enqueue_training


@pytest.mark.django_db
def test_previews_are_stored_on_the_run_and_shown_beside_the_loss_curve(
    versions, tiny_base, data_lead, client, no_dispatch, django_capture_on_commit_callbacks
):
    previews = {
        "every": 2,
        "prompts": ["a red circle", "a star"],
        "seeds": [0, 3],
        "sampler": {"steps": 2},
    }
    run = create_training_run(
        recipe="domain",
        adapter="lora",
        dataset_versions=[versions["domain"]],
        base_checkpoint=tiny_base,
        hyperparameters={"steps": 4, "checkpoint_every": 2, "previews": previews},
        user=data_lead,
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = enqueue_training(run, data_lead)
    job_services.execute_job(job.pk)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED
    assert [p["step"] for p in run.previews] == [2, 4]
    for preview in run.previews:
        assert default_storage.exists(preview["grid_key"])
        assert preview["prompts"] == previews["prompts"] and preview["seeds"] == [0, 3]
    assert run.previews[0]["grid_sha256"] != run.previews[1]["grid_sha256"]

    client.force_login(data_lead)
    page = client.get(reverse("admin:training_trainingrun_change", args=[run.pk]))
    html = page.content.decode()
    labels = html.lower()
    assert page.status_code == 200 and "validation previews" in labels
    assert labels.index("loss curve") < labels.index("validation previews")
    for preview in run.previews:
        assert f'data-step="{preview["step"]}"' in html
        assert signed_path(preview["grid_key"]) in html
    assert "a red circle | a star" in html
    image = client.get(signed_path(run.previews[-1]["grid_key"]), follow=True)
    assert image.status_code == 200
    body = b"".join(image.streaming_content) if image.streaming else image.content
    assert body.startswith(b"\x89PNG")


@pytest.mark.django_db
def test_a_run_without_previews_says_how_to_turn_them_on(versions, tiny_base, data_lead, client):
    run = create_training_run(
        recipe="domain",
        adapter="lora",
        dataset_versions=[versions["domain"]],
        base_checkpoint=tiny_base,
        hyperparameters={"steps": 4},
        user=data_lead,
    )
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    client.force_login(data_lead)
    html = client.get(reverse("admin:training_trainingrun_change", args=[run.pk])).content.decode()
    assert "off (hyperparameters.previews.every sets how often)" in html


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_data_lead_sees_the_preview_grids_over_time_in_the_browser(
    live_server, versions, tiny_base, data_lead, no_dispatch
):
    from tests.browser import chromium_page, screenshot

    run = create_training_run(
        recipe="domain",
        adapter="lora",
        dataset_versions=[versions["domain"]],
        base_checkpoint=tiny_base,
        hyperparameters={
            "steps": 4,
            "checkpoint_every": 2,
            "previews": {
                "every": 2,
                "prompts": ["a red circle"],
                "seeds": [0, 1, 2],
                "sampler": {"steps": 2},
            },
        },
        user=data_lead,
    )
    job = enqueue_training(run, data_lead)  # transaction=True: on_commit runs at once
    job_services.execute_job(job.pk)
    with chromium_page(live_server.url) as page:
        page.goto("/admin/login/")
        page.fill("#id_username", data_lead.username)
        page.fill("#id_password", "pw-for-tests-only")
        page.click('input[type="submit"]')
        page.goto(reverse("admin:training_trainingrun_change", args=[run.pk]))
        figures = page.locator(".preview-strip figure")
        assert figures.count() == 2
        assert [figures.nth(i).get_attribute("data-step") for i in range(2)] == ["2", "4"]
        images = page.locator(".preview-strip img")
        for i in range(2):
            images.nth(i).scroll_into_view_if_needed()
            page.wait_for_function(
                "img => img.complete && img.naturalWidth > 0", arg=images.nth(i).element_handle()
            )
            # three seeds of 32 px side by side, one prompt row
            assert images.nth(i).evaluate("img => [img.naturalWidth, img.naturalHeight]") == [
                96,
                32,
            ]
        page.locator(".preview-strip").scroll_into_view_if_needed()
        screenshot(page, "admin-run-previews")
