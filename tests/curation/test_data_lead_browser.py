"""A data lead in a real browser: logs in through the admin login page, follows a rating round
(list and page), watches a retrain round's timeline while its steps run and after, retries the
failed step, downloads an export, and opens the API docs with every non-local request blocked.

The retrain steps' work is replaced by quick recorded functions (training itself is tested
elsewhere); the steps still run as real `retrain.step` jobs, executed here between page checks
while the open page refreshes itself.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from curation.models import Annotation, AnnotationRound, Dataset, Job
from curation.services import jobs as job_services
from curation.services.jobs import enqueue_job, execute_job
from curation.services.rounds.create import create_round
from curation.services.versions import add_items, create_draft_version, freeze_version
from tests.browser import ARTIFACTS, chromium_page, screenshot
from tests.curation.rounds.conftest import make_image
from training.models import Checkpoint, Generation, GenerationBatch, RetrainRound
from training.services import loops

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _login(page, username: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw-for-tests-only")
    page.click('input[type="submit"]')
    page.wait_for_selector("#site-name")


def _rating_round() -> AnnotationRound:
    from curation.models import Prompt, PromptSet

    prompts = PromptSet.objects.create(name="browser-prompts")
    checkpoint = Checkpoint.objects.create(name="browser-ckpt", path="/x")
    batch = GenerationBatch.objects.create(
        name="browser-batch", checkpoint=checkpoint, prompt_set=prompts, seeds=[1]
    )
    for n, text in enumerate(["a cat", "a dog", "a fox", "an owl"]):
        prompt = Prompt.objects.create(prompt_set=prompts, text=text)
        Generation.objects.create(
            batch=batch, prompt=prompt, prompt_text=text, seed=1, image=make_image(500 + n)
        )
    round_ = create_round(
        name="browser alignment round", kind="alignment", generation_batch=batch, overlap=2
    )
    AnnotationRound.objects.filter(pk=round_.pk).update(labelstudio_project_id=42)
    ids = iter(range(9000, 9100))
    for task in list(round_.tasks.order_by("id"))[:3]:
        for user_id, email in ((71, "ana@example.com"), (72, "ben@example.com")):
            Annotation.objects.create(
                task=task,
                labelstudio_id=next(ids),
                labelstudio_user_id=user_id,
                annotator_email=email,
                raw={},
                aligned=user_id == 71 or task.pk % 2 == 0,
            )
    from curation.services.aggregation import compute_round_quality

    compute_round_quality(round_)
    return round_


def _retrain_round(monkeypatch) -> tuple[RetrainRound, list]:
    failures = {"evaluate": 1}

    def make(name):
        def step(round_, ctx):
            if failures.get(name):
                failures[name] -= 1
                raise RuntimeError(f"{name} broke: out of memory (simulated)")
            return {"did": name, "images": 4}

        return step

    monkeypatch.setattr(loops, "STEP_FUNCTIONS", {n: make(n) for n in RetrainRound.STEPS})
    dataset_a = Dataset.objects.create(name="browser-align", kind="alignment")
    dataset_s = Dataset.objects.create(name="browser-style", kind="style")
    versions = []
    for i, dataset in enumerate((dataset_a, dataset_s)):
        draft = create_draft_version(dataset)
        add_items(draft, [{"image": make_image(600 + i), "caption": "a sticker"}])
        versions.append(freeze_version(draft))
    from curation.models import PromptSet

    return loops.start_retrain_round(
        base_checkpoint=Checkpoint.objects.create(name="browser-base", path="/base"),
        dataset_versions=versions,
        prompt_set=PromptSet.objects.create(name="gen", purpose="generation"),
        eval_prompt_set=PromptSet.objects.create(name="eval", purpose="evaluation"),
        name="browser retrain round",
    ), versions


def _run_one_step() -> bool:
    job = Job.objects.filter(kind="retrain.step", status="queued").order_by("id").first()
    if job is None:
        return False
    execute_job(job.pk)
    return True


def test_data_lead_follows_rounds_retries_downloads_and_reads_docs_offline(
    live_server, data_lead, settings, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setattr(job_services, "dispatch", lambda pk, run_after=None: None)
    settings.JOB_MAX_ATTEMPTS = 1
    settings.LABEL_STUDIO_URL = "http://127.0.0.1:9"  # links only; never opened
    rating = _rating_round()
    retrain, versions = _retrain_round(monkeypatch)
    with chromium_page(live_server.url) as page:
        _login(page, data_lead.username)
        screenshot(page, "lead-01-admin-index")
        captions = page.locator("#content-main .module caption").all_text_contents()
        assert [c.strip() for c in captions][:2] == ["1 · Image pool", "2 · Recipes"], captions

        # Rating rounds: the list says how far each is and how well raters agree.
        page.goto(reverse("admin:curation_annotationround_changelist"))
        row = page.locator("#result_list tbody tr", has_text="browser alignment round")
        text = row.inner_text()
        assert "75.0%" in text and "α" in text, text  # 6 of 4 tasks × overlap 2
        assert row.locator('a[href="http://127.0.0.1:9/projects/42/data"]').count() == 1
        screenshot(page, "lead-02-round-list")
        row.locator("th a, td a").first.click()
        page.wait_for_selector("text=annotators: progress and quality")
        assert f"/{rating.pk}/change/" in page.url
        body = page.inner_text("#content-main")
        assert "ana@example.com" in body and "ben@example.com" in body
        assert "6 of 8 wanted annotations" in body
        screenshot(page, "lead-03-round-page")

        # A retrain round while it runs: the page refreshes itself as steps finish.
        url = reverse("admin:training_retrainround_change", args=[retrain.pk])
        page.goto(url)
        timeline = page.locator("#round-timeline")
        assert timeline.get_attribute("data-active") == "true"
        assert page.locator('tr[data-step="train"] .step-status').inner_text() == "pending"
        screenshot(page, "lead-04-retrain-running")
        assert _run_one_step()  # train succeeds; evaluate is queued
        page.wait_for_selector('tr[data-step="train"] .step-status:text-is("succeeded")')
        assert _run_one_step()  # evaluate fails
        page.wait_for_selector('tr[data-step="evaluate"] .step-status:text-is("failed")')
        assert "out of memory (simulated)" in page.inner_text('tr[data-step="evaluate"]')
        screenshot(page, "lead-05-retrain-failed")

        page.click('tr[data-step="evaluate"] button.retry-step')
        page.wait_for_selector(".messagelist")
        assert "step evaluate queued again" in page.inner_text(".messagelist")
        while _run_one_step():
            pass
        page.wait_for_selector('#round-timeline[data-active="false"]', timeout=30_000)
        statuses = page.locator("#round-timeline .step-status").all_inner_texts()
        assert statuses == ["succeeded"] * 5, statuses
        assert page.locator("button.retry-step").count() == 0
        screenshot(page, "lead-06-retrain-finished")

        # An export, downloaded from the version page through its signed link.
        export = enqueue_job(
            "export_version",
            params={"version_id": versions[1].pk, "formats": ["folder"]},
            target=versions[1],
        )
        execute_job(export.pk)
        page.goto(reverse("admin:curation_datasetversion_change", args=[versions[1].pk]))
        with page.expect_download() as info:
            page.click('a.export-download[data-format="folder"]')
        saved = ARTIFACTS / "lead-export-folder.zip"
        info.value.save_as(saved)
        names = zipfile.ZipFile(io.BytesIO(saved.read_bytes())).namelist()
        assert any(n.endswith("folder/export.json") for n in names), names
        assert any(n.endswith("metadata.jsonl") for n in names), names
        screenshot(page, "lead-07-version-downloads")

        # API docs with the network closed: everything must come from the platform itself.
        blocked: list[str] = []

        def only_local(route):
            if route.request.url.startswith(live_server.url):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", only_local)
        page.goto("/api/docs/")
        page.wait_for_selector(".swagger-ui .opblock-tag", timeout=30_000)
        assert page.locator(".swagger-ui .opblock").count() > 10
        assert "Sticker curation platform API" in page.inner_text(".swagger-ui .info")
        screenshot(page, "lead-08-api-docs-offline")
        assert not [u for u in blocked if "swagger" in u or "cdn" in u], blocked
