"""Computed JSON (job results, recipe runs, version diffs and lineage, checkpoint metrics) reads
as tables on admin pages, never as a raw dict; finished objects are read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.admin_base import json_summary
from curation.models import Dataset, Image, Job, PromptSet
from curation.services.versions import add_items, create_draft_version, freeze_version
from training.models import Checkpoint, GenerationBatch

pytestmark = pytest.mark.django_db


def _no_raw_dict(html: str, key: str) -> None:
    """The JSON key appears as a table heading, never quoted as in a dumped dict."""
    for quoted in (f"&quot;{key}&quot;", f"&#x27;{key}&#x27;", f'"{key}"'):
        assert quoted not in html, quoted


def test_json_summary_renders_nested_values_as_tables():
    html = json_summary(
        {"added": 3, "rows": [{"split": "train", "n": 2}, {"split": "val", "n": 1}], "ok": True}
    )
    assert "<table" in html and "<th" in html and ">train<" in html and ">yes<" in html
    long = json_summary({"sha": [f"{i:04d}" for i in range(30)]})
    assert "… and 18 more" in long
    assert json_summary({"x": "<script>"}).count("&lt;script&gt;") == 1


def test_job_version_and_checkpoint_pages_show_tables(client, data_lead):
    client.force_login(data_lead)
    job = Job.objects.create(
        kind="export_version",
        status=Job.Status.SUCCEEDED,
        params={"version_id": 1, "formats": ["parquet"]},
        result={"parquet": {"rows": 2, "files": ["a", "b"]}},
    )
    page = client.get(reverse("admin:curation_job_change", args=[job.pk])).content.decode()
    assert "<table" in page and ">parquet<" in page
    _no_raw_dict(page, "parquet")

    dataset = Dataset.objects.create(name="d", kind="domain")
    images = [Image.objects.create(sha256=f"{i:064x}", storage_key=f"k{i}.png") for i in range(3)]
    first = create_draft_version(dataset)
    add_items(first, [{"image": images[0], "caption": "c"}])
    first = freeze_version(first)
    second = create_draft_version(dataset, parent=first, lineage={"recipe_run": 7, "accepted": 2})
    add_items(second, [{"image": img, "caption": "c"} for img in images[1:]])
    second = freeze_version(second)
    page = client.get(
        reverse("admin:curation_datasetversion_change", args=[second.pk])
    ).content.decode()
    assert ">recipe run<" in page and ">added<" in page and ">removed<" in page
    _no_raw_dict(page, "recipe_run")
    _no_raw_dict(page, "added")

    checkpoint = Checkpoint.objects.create(
        name="c", path="/x", lineage={"recipe": "domain"}, metrics={"text_score": 0.31}
    )
    page = client.get(
        reverse("admin:training_checkpoint_change", args=[checkpoint.pk])
    ).content.decode()
    assert ">text score<" in page and "0.31" in page
    _no_raw_dict(page, "text_score")


def test_succeeded_generation_batch_is_read_only(client, data_lead):
    checkpoint = Checkpoint.objects.create(name="c", path="/x")
    prompts = PromptSet.objects.create(name="p")
    batch = GenerationBatch.objects.create(
        name="b", checkpoint=checkpoint, prompt_set=prompts, seeds=[0], status="succeeded"
    )
    client.force_login(data_lead)
    url = reverse("admin:training_generationbatch_change", args=[batch.pk])
    page = client.get(url)
    assert "name" not in page.context["adminform"].form.fields
    assert not page.context["has_delete_permission"]
    client.post(url, {"name": "changed", "seeds": "[1, 2]"})
    batch.refresh_from_db()
    assert batch.name == "b" and batch.seeds == [0]
