"""Exporting a checkpoint from the admin: the action a data lead runs, the gpu job, the zip
behind the checkpoint page's signed link, and what loads from it in plain diffusers."""

from __future__ import annotations

import io
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse
from safetensors import safe_open

from curation.models import Job
from curation.services import jobs as job_services
from tests.training.engine.test_export import MAX_PIXEL_DIFFERENCE, _plain_pipeline
from training.engine.export import load_lora_checked
from training.engine.generation import SamplerSettings, generate
from training.models import Checkpoint
from training.services.checkpoint_exports import JOB_KIND
from training.services.checkpoints import register_base_model
from training.services.demo_training import run_job_inline
from training.services.runs.inputs import create_training_run

CHANGELIST = "admin:training_checkpoint_changelist"
DOWNLOAD_LINK = r'href="([^"]+)" download class="checkpoint-export-download" data-format="{}"'


@pytest.fixture(autouse=True)
def _exports_in_tmp(settings, tmp_path):
    settings.EXPORTS_ROOT = tmp_path / "exports"


def _train(base: Checkpoint, version, user, adapter: str = "lora") -> Checkpoint:
    hyperparameters = {
        "steps": 2,
        "batch_size": 2,
        "learning_rate": 5e-2,
        "use_ema": True,
    }
    if adapter == "lora":
        hyperparameters["adapter_params"] = {"rank": 2, "alpha": 4}
    run = create_training_run(
        recipe="domain",
        adapter=adapter,
        dataset_versions=[version],
        base_checkpoint=base,
        hyperparameters=hyperparameters,
        user=user,
    )
    job = run_job_inline("train", {"run_id": run.pk}, user=user, target=run)
    return Checkpoint.objects.get(pk=job.result["checkpoint"])


def _act(client, action: str, checkpoints, capture, **data):
    """Run a list action and follow where it leads; returns (final page, messages shown)."""
    with capture(execute=True):
        response = client.post(
            reverse(CHANGELIST),
            {"action": action, ACTION_CHECKBOX_NAME: [c.pk for c in checkpoints], **data},
            follow=True,
        )
    shown = response.context.get("messages") if response.context else None
    return response, [str(m) for m in shown or []]


def _run_exports() -> list[Job]:
    jobs = list(Job.objects.filter(kind=JOB_KIND, status=Job.Status.QUEUED).order_by("pk"))
    for job in jobs:
        job_services.execute_job(job.pk)
        job.refresh_from_db()
    return jobs


def _download(client, checkpoint: Checkpoint, fmt: str, out: Path) -> Path:
    """Follow the checkpoint page's download link for `fmt` and unzip it under `out`."""
    page = client.get(reverse("admin:training_checkpoint_change", args=[checkpoint.pk]))
    assert page.status_code == 200
    links = re.findall(DOWNLOAD_LINK.format(fmt), page.content.decode())
    assert len(links) == 1, page.content.decode()
    response = client.get(links[0])
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    roots = {name.split("/", 1)[0] for name in archive.namelist()}
    assert len(roots) == 1  # one folder, named after the checkpoint and format
    archive.extractall(out)
    return out / roots.pop()


@pytest.mark.django_db
def test_data_lead_exports_a_lora_for_diffusers_and_kohya_and_both_load_in_plain_diffusers(
    client,
    tiny_base,
    versions,
    data_lead,
    no_dispatch,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    checkpoint = _train(tiny_base, versions["domain"], data_lead)
    client.force_login(data_lead)
    capture = django_capture_on_commit_callbacks
    response, said = _act(client, "export_for_diffusers", [checkpoint], capture)
    # One checkpoint: the action goes to its page, where the export's state shows.
    assert response.redirect_chain == [
        (reverse("admin:training_checkpoint_change", args=[checkpoint.pk]), 302)
    ]
    job = Job.objects.get(kind=JOB_KIND)
    assert job.queue == "gpu" and job.created_by == data_lead and no_dispatch == [job.pk]
    assert job.params == {
        "checkpoint_id": checkpoint.pk,
        "format": "diffusers",
        "use_ema": True,
    }
    assert f"job #{job.pk}</a> queued on gpu" in said[0]
    waiting = response
    assert 'http-equiv="refresh"' in waiting.content.decode()  # reloads while it runs
    assert 'data-status="queued"' in waiting.content.decode()

    [job] = _run_exports()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.result["tensors_written"] == 2 * job.result["lora_modules"] > 0
    assert job.result["ema"] is True and job.result["rank"] == 2 and job.result["alpha"] == 4
    folder = _download(client, checkpoint, "diffusers", tmp_path / "diffusers")
    assert folder.name == f"{checkpoint.name}-diffusers"
    assert (folder / "export.json").is_file()
    with safe_open(str(folder / "pytorch_lora_weights.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert len(keys) == job.result["tensors_written"] and all(k.startswith("unet.") for k in keys)

    # A fresh plain diffusers pipeline loads the download and draws what the engine draws.
    settings = SamplerSettings(steps=2, resolution=32, guidance_scale=2.0)
    engine = generate(["a cat"], [3], settings, checkpoint=checkpoint.path, device="cpu")
    plain = _plain_pipeline(Path(tiny_base.path), "sd")
    untouched = np.asarray(generate(["a cat"], [3], settings, pipeline=plain)[0].image, np.int16)
    assert load_lora_checked(plain, folder) == job.result["lora_modules"]
    loaded = np.asarray(generate(["a cat"], [3], settings, pipeline=plain)[0].image, np.int16)
    reference = np.asarray(engine[0].image, np.int16)
    assert np.abs(loaded - reference).max() <= MAX_PIXEL_DIFFERENCE
    assert np.abs(untouched - reference).max() > 10 * MAX_PIXEL_DIFFERENCE

    response, said = _act(client, "export_for_kohya", [checkpoint], capture)
    [kohya_job] = _run_exports()
    assert kohya_job.status == Job.Status.SUCCEEDED, kohya_job.error
    folder = _download(client, checkpoint, "kohya", tmp_path / "kohya")
    with safe_open(str(folder / "lora_kohya.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
        assert handle.metadata()["ss_network_dim"] == "2"
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert len(keys) == kohya_job.result["tensors_written"] == 3 * kohya_job.result["lora_modules"]
    kohya_plain = _plain_pipeline(Path(tiny_base.path), "sd")
    assert load_lora_checked(kohya_plain, folder / "lora_kohya.safetensors") > 0

    page = client.get(reverse("admin:training_checkpoint_change", args=[checkpoint.pk]))
    text = page.content.decode()
    assert 'http-equiv="refresh"' not in text  # nothing runs any more
    assert text.count('class="checkpoint-export"') == 2
    assert f"{job.result['tensors_written']} tensors" in text


@pytest.mark.django_db
def test_exporting_again_reuses_the_finished_export_unless_replace_is_asked(
    client,
    tiny_base,
    versions,
    data_lead,
    no_dispatch,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    checkpoint = _train(tiny_base, versions["domain"], data_lead)
    client.force_login(data_lead)
    _act(client, "export_for_kohya", [checkpoint], capture)
    _, said = _act(client, "export_for_kohya", [checkpoint], capture)
    assert "already running" in said[0]
    assert Job.objects.filter(kind=JOB_KIND).count() == 1
    [first] = _run_exports()

    _, said = _act(client, "export_for_kohya", [checkpoint], capture)
    assert "already exported as kohya (A1111/ComfyUI) by" in said[0] and "reusing it" in said[0]
    assert Job.objects.filter(kind=JOB_KIND).count() == 1  # no second job

    form = client.post(
        reverse(CHANGELIST), {"action": "export_with_options", ACTION_CHECKBOX_NAME: checkpoint.pk}
    )
    assert form.status_code == 200 and "replace" in form.context["form"].fields
    _, said = _act(
        client,
        "export_with_options",
        [checkpoint],
        capture,
        apply="1",
        format="kohya",
        weights="ema",
        replace="on",
    )
    assert "queued on gpu" in said[0]
    [second] = _run_exports()
    assert (
        second.status == Job.Status.SUCCEEDED
        and second.result["download"] == first.result["download"]
    )  # the same zip, replaced: the page lists the variant once
    page = client.get(reverse("admin:training_checkpoint_change", args=[checkpoint.pk]))
    assert page.content.decode().count('class="checkpoint-export"') == 1
    assert f"job #{second.pk}" in page.content.decode()

    # The same export from another copy of the base folder is not reused: it is made from it.
    import shutil

    shutil.copytree(tiny_base.path, tmp_path / "base-elsewhere")
    options = {"apply": "1", "format": "kohya", "weights": "ema"}
    elsewhere = str(tmp_path / "base-elsewhere")
    _, said = _act(
        client, "export_with_options", [checkpoint], capture, **options, base_model=elsewhere
    )
    assert "queued on gpu" in said[0], said
    [third] = _run_exports()
    assert third.status == Job.Status.SUCCEEDED and third.result["base_model"] == elsewhere
    # ... and asking for that one again reuses it.
    _, said = _act(
        client, "export_with_options", [checkpoint], capture, **options, base_model=elsewhere
    )
    assert "reusing it" in said[0], said

    # Raw weights are another export, not the EMA one again.
    response = client.post(
        reverse("admin:training_checkpoint_export", args=[checkpoint.pk]),
        {"format": "kohya", "weights": "raw"},
    )
    assert response.status_code == 302
    raw = Job.objects.filter(kind=JOB_KIND).latest("pk")
    assert raw.params["use_ema"] is False and raw.pk != second.pk


@pytest.mark.django_db
def test_refusals_say_why_and_queue_nothing(
    client,
    tiny_base,
    versions,
    data_lead,
    annotator,
    no_dispatch,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    capture = django_capture_on_commit_callbacks
    moved = register_base_model(
        shutil.copytree(tiny_base.path, tmp_path / "base-copy"), "base-copy", tiny=True
    )
    lora = _train(moved, versions["domain"], data_lead)
    full = _train(tiny_base, versions["domain"], data_lead, adapter="full")
    client.force_login(data_lead)

    _, said = _act(client, "export_for_kohya", [tiny_base, full], capture)
    assert len(said) == 2  # newest first, as the list shows them
    assert said[1] == (
        f"{tiny_base.name} is a base model: its folder {tiny_base.path} already is a diffusers "
        "folder; export a trained checkpoint"
    )
    assert said[0].startswith(
        f"{full.name}: format 'kohya': a full checkpoint exports as a diffusers folder"
    )
    routed = Checkpoint.objects.create(
        name="routed", path=lora.path, adapter="styleinject", training_run=lora.training_run
    )
    _, said = _act(client, "export_for_diffusers", [routed], capture)
    assert said == [
        "routed: adapter 'styleinject' has no format other tools load; only LoRA-type adapters "
        "(lora, styledrop, finestyle, kv_lora) and full checkpoints export"
    ]
    assert not Job.objects.filter(kind=JOB_KIND).exists()

    # The base folder the LoRA was trained on goes away: refused, naming it.
    shutil.rmtree(tmp_path / "base-copy")
    _, said = _act(client, "export_for_diffusers", [lora], capture)
    assert f"{tmp_path / 'base-copy'}: no such folder" in said[0]
    assert "moved or was deleted" in said[0]
    assert not Job.objects.filter(kind=JOB_KIND).exists()
    # ... and exports once its new place is given.
    shutil.copytree(tiny_base.path, tmp_path / "base-new")
    _act(
        client,
        "export_with_options",
        [lora],
        capture,
        apply="1",
        format="diffusers",
        weights="ema",
        base_model=str(tmp_path / "base-new"),
    )
    [job] = _run_exports()
    assert job.status == Job.Status.SUCCEEDED and job.result["base_model"] == str(
        tmp_path / "base-new"
    )

    # A refusal found only when the job runs fails it once, with the message, no traceback.
    shutil.copytree(tiny_base.path, tmp_path / "base-copy")
    _act(client, "export_for_kohya", [lora], capture)
    shutil.rmtree(tmp_path / "base-copy")
    [failed] = _run_exports()
    assert failed.status == Job.Status.FAILED and failed.attempt == 1
    assert failed.error.startswith(f"refused: {lora.name}: base_model: ")
    assert "Traceback" not in failed.error
    page = client.get(reverse("admin:training_checkpoint_change", args=[lora.pk]))
    assert (
        'data-status="failed"' in page.content.decode()
        and "no such folder" in page.content.decode()
    )

    # A full checkpoint exports as a diffusers pipeline folder.
    _act(client, "export_for_diffusers", [full], capture)
    [merged] = _run_exports()
    assert merged.status == Job.Status.SUCCEEDED and merged.result["writes"] == "pipeline_folder"
    folder = _download(client, full, "diffusers", tmp_path / "full")
    assert (folder / "model_index.json").is_file() and (folder / "unet").is_dir()
    assert merged.result["tensors_written"] > 0 and merged.result["lora_modules"] == 0

    client.force_login(annotator)
    denied, _ = _act(client, "export_for_diffusers", [lora], capture)
    assert "/login/" in denied.redirect_chain[-1][0]
    assert (
        client.get(reverse("admin:training_checkpoint_export", args=[lora.pk])).status_code == 302
    )

    # Staff who may see checkpoints but not start runs get no export action and no export page.
    from django.contrib.auth.models import Permission, User

    viewer = User.objects.create_user("checkpoint-viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_checkpoint"))
    client.force_login(viewer)
    listed = client.get(reverse(CHANGELIST))
    assert listed.status_code == 200 and "export_for_diffusers" not in listed.content.decode()
    queued = Job.objects.filter(kind=JOB_KIND).count()
    _act(client, "export_for_diffusers", [lora], capture)
    assert Job.objects.filter(kind=JOB_KIND).count() == queued
    assert (
        client.get(reverse("admin:training_checkpoint_export", args=[lora.pk])).status_code == 403
    )


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_data_lead_exports_from_the_checkpoint_list_in_the_browser(
    live_server, tiny_base, versions, data_lead, no_dispatch, tmp_path, monkeypatch
):
    from tests.browser import chromium_page, screenshot

    # The job runs here while the page is open: Django's ORM inside Playwright's sync loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setattr("training.admin_exports.REFRESH_SECONDS", 1)
    checkpoint = _train(tiny_base, versions["domain"], data_lead)
    with chromium_page(live_server.url) as page:
        page.goto("/admin/login/")
        page.fill("#id_username", data_lead.username)
        page.fill("#id_password", "pw-for-tests-only")
        page.click('input[type="submit"]')
        page.goto(reverse(CHANGELIST))
        page.check(f'input[name="{ACTION_CHECKBOX_NAME}"][value="{checkpoint.pk}"]')
        page.select_option('select[name="action"]', "export_for_kohya")
        page.click('button[name="index"]')
        page.wait_for_url(f"**/checkpoint/{checkpoint.pk}/change/")
        assert "queued on gpu" in page.locator(".messagelist").inner_text()
        assert page.locator('tr.checkpoint-export-job[data-status="queued"]').count() == 1

        # While the export runs the page reloads itself to follow it ...
        with page.expect_navigation(timeout=30_000):
            pass
        assert page.locator("#export-refresh-note").count() == 1
        # ... but not over what the lead is typing: the edit stays, the note says why.
        page.fill("#id_name", "renamed while it exports")
        page.evaluate("window.__not_reloaded = true")
        page.wait_for_timeout(4_000)  # four refresh periods
        assert page.evaluate("window.__not_reloaded === true")
        assert page.input_value("#id_name") == "renamed while it exports"
        assert page.locator('#export-refresh-note[data-held="true"]').count() == 1
        assert "unsaved changes" in page.locator("#export-refresh-note").inner_text()

        [job] = _run_exports()
        assert job.status == Job.Status.SUCCEEDED, job.error
        page.reload()
        row = page.locator('tr.checkpoint-export[data-format="kohya"]')
        assert row.count() == 1 and f"{job.result['tensors_written']} tensors" in row.inner_text()
        with page.expect_download() as download:
            row.locator("a.checkpoint-export-download").click()
        archive = zipfile.ZipFile(download.value.path())
        assert f"{checkpoint.name}-kohya/lora_kohya.safetensors" in archive.namelist()
        row.scroll_into_view_if_needed()
        screenshot(page, "admin-checkpoint-exports")
