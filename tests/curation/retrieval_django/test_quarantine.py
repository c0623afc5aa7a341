"""Quarantine is a state every reader respects, with a reason, a person and a time."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from curation.models import (
    AnnotationRound,
    Dataset,
    DatasetVersion,
    Image,
    LabelTask,
    Recipe,
    RecipeScore,
)
from curation.selectors.search import SearchFilters, search_images
from curation.services import embeddings as emb
from curation.services.exports import export_version
from curation.services.indexes import build_vector_index
from curation.services.quarantine import quarantine_images, release_images
from curation.services.recipes import ensure_heuristics_recipe, run_recipe_job, start_recipe_run
from curation.services.review import freeze_domain_version
from curation.services.rounds.push import task_payload
from curation.services.version_images import add_images_to_version
from curation.services.versions import create_draft_version, freeze_version
from training.services.manifests import StorageResolver

pytestmark = pytest.mark.django_db


def _index():
    space = emb.ensure_space("tiny-clip", name="quarantine")
    emb.plan_embedding(space, 10)
    for shard in emb.pending_shards(space):
        emb.run_embed_shard(shard)
    return build_vector_index(space)


def test_reason_is_required_and_release_is_explicit(pool, data_lead):
    bad = Image.objects.filter(pk__in=[i.pk for i in pool["stickers"][:2]])
    with pytest.raises(ValueError, match="reason"):
        quarantine_images(bad, reason="  ", user=data_lead)
    assert quarantine_images(bad, reason="watermarked", user=data_lead) == 2
    first = Image.objects.get(pk=pool["stickers"][0].pk)
    assert first.status == Image.Status.QUARANTINED and first.quarantine_reason == "watermarked"
    assert first.quarantined_by == data_lead and first.quarantined_at is not None
    # Quarantining again keeps the first reason; releasing touches quarantined images only.
    assert quarantine_images(bad, reason="other", user=None) == 0
    assert Image.objects.get(pk=first.pk).quarantine_reason == "watermarked"
    assert release_images(Image.objects.all()) == 2
    first.refresh_from_db()
    assert first.status == Image.Status.OK and first.quarantine_reason == ""
    assert first.quarantined_by is None and Image.objects.usable().count() == 20


def test_search_recipes_grid_and_freezing_leave_quarantined_images_out(pool, client, data_lead):
    index = _index()  # built before the quarantine: its vectors still hold the images
    recipe = Recipe.objects.create(
        name="q", text_queries=["a sticker"], labelling_functions=[], top_k=20
    )
    before = run_recipe_job(start_recipe_run(recipe, run_async=False))
    RecipeScore.objects.filter(run=before).update(decision=RecipeScore.Decision.ACCEPTED)
    hidden = pool["stickers"][:3] + pool["photos"][:2]
    hidden_ids = {i.pk for i in hidden}
    quarantine_images(Image.objects.filter(pk__in=hidden_ids), reason="licence unclear")

    found = search_images(text="a sticker", k=20, index=index)
    assert len(found) == 15 and not {i.pk for i, _ in found} & hidden_ids
    everything = search_images(text="a sticker", k=20, index=index, filters=SearchFilters(None))
    assert not {i.pk for i, _ in everything} & hidden_ids

    after = run_recipe_job(start_recipe_run(recipe, run_async=False))  # index top-k path
    assert after.scores.count() == 15
    assert not set(after.scores.values_list("image_id", flat=True)) & hidden_ids
    heuristics = run_recipe_job(start_recipe_run(ensure_heuristics_recipe(), run_async=False))
    assert not set(heuristics.scores.values_list("image_id", flat=True)) & hidden_ids

    client.force_login(data_lead)
    page = client.get(reverse("curation-review", args=[before.pk]))
    assert page.status_code == 200
    assert len(page.context["tiles"]) == 15 and page.context["accepted"] == 15
    assert not {t["score"].image_id for t in page.context["tiles"]} & hidden_ids

    version = freeze_domain_version(before, dataset_name="domain", reason="first cut")
    assert version.row_count == 15 and version.lineage["withheld_quarantined"] == 5
    assert not set(version.items.values_list("image_id", flat=True)) & hidden_ids


def test_frozen_versions_exports_manifests_and_pushes_withhold_them(pool, tmp_path):
    dataset = Dataset.objects.create(name="all", kind=Dataset.Kind.DOMAIN)
    draft = create_draft_version(dataset, reason="every image")
    add_images_to_version(draft, Image.objects.all())
    late = pool["stickers"][0]
    quarantine_images(Image.objects.filter(pk=late.pk), reason="found a face in it")
    version = freeze_version(draft, reason="every image")  # quarantined after it was added
    assert version.row_count == 19 and version.lineage["withheld_quarantined"] == 1
    assert add_images_to_version(create_draft_version(dataset), Image.objects.all()) == 19

    after = pool["photos"][0]  # quarantined after freezing: the frozen manifest still names it
    quarantine_images(Image.objects.filter(pk=after.pk), reason="privacy")
    result = export_version(version, "folder", tmp_path / "export")
    assert result.rows == 18 and result.withheld == [after.sha256]
    assert not list((tmp_path / "export").glob(f"*/{after.sha256}.*"))
    summary = json.loads((tmp_path / "export" / "export.json").read_text())
    assert summary["withheld"] == [after.sha256]

    resolver = StorageResolver.for_versions([version])
    assert after.sha256 not in resolver.keys and len(resolver.keys) == 18
    with pytest.raises(FileNotFoundError, match="quarantined"):
        resolver(type("Row", (), {"image_sha256": after.sha256})())

    round_ = AnnotationRound.objects.create(name="r", kind=AnnotationRound.Kind.STYLE)
    round_.style_exemplars.add(pool["stickers"][1], after)
    task = LabelTask.objects.create(round=round_, key="t1", image=after)
    with pytest.raises(ValueError, match="quarantined, not pushed"):
        task_payload(LabelTask.objects.select_related("round", "image").get(pk=task.pk), [])
    assert list(round_.style_exemplars.usable()) == [pool["stickers"][1]]
    assert DatasetVersion.objects.filter(state=DatasetVersion.State.FROZEN).count() == 1


def test_admin_action_asks_for_a_reason_and_records_who(pool, client, data_lead):
    client.force_login(data_lead)
    url = reverse("admin:curation_image_changelist")
    picked = [str(pool["photos"][3].pk), str(pool["photos"][4].pk)]
    form = client.post(url, {"action": "quarantine", "_selected_action": picked})
    assert form.status_code == 200 and b"Quarantine images" in form.content
    assert not Image.objects.quarantined().exists()  # nothing happens before a reason is given
    empty = client.post(url, {"action": "quarantine", "_selected_action": picked, "apply": "1"})
    assert empty.status_code == 200 and empty.context["form"].errors["reason"]
    done = client.post(
        url,
        {"action": "quarantine", "_selected_action": picked, "apply": "1", "reason": "blurry"},
        follow=True,
    )
    assert "2 image(s) quarantined." in done.content.decode()
    rows = Image.objects.quarantined()
    assert {(i.quarantine_reason, i.quarantined_by) for i in rows} == {("blurry", data_lead)}
    released = client.post(url, {"action": "release", "_selected_action": picked}, follow=True)
    assert "2 image(s) released from quarantine." in released.content.decode()
    assert not Image.objects.quarantined().exists()


def test_quarantine_and_release_through_the_api(pool, api_client, annotator, data_lead):
    image = pool["stickers"][0]
    quarantine_url = reverse("image-quarantine", args=[image.pk])
    release_url = reverse("image-release", args=[image.pk])
    api_client.force_authenticate(annotator)
    assert api_client.post(quarantine_url, {"reason": "x"}).status_code == 403

    api_client.force_authenticate(data_lead)
    missing = api_client.post(quarantine_url, {}, format="json")
    assert missing.status_code == 400 and "reason" in missing.json()
    done = api_client.post(quarantine_url, {"reason": "licence unclear"}, format="json")
    assert done.status_code == 200
    body = done.json()
    assert body["status"] == "quarantined" and body["quarantine_reason"] == "licence unclear"
    assert body["quarantined_by"] == data_lead.username and body["quarantined_at"]
    again = api_client.post(quarantine_url, {"reason": "other"}, format="json")
    assert (
        again.status_code == 409
        and "already quarantined: licence unclear" in again.json()["detail"]
    )
    listed = api_client.get(reverse("image-detail", args=[image.pk])).json()
    assert listed["quarantine_reason"] == "licence unclear"

    released = api_client.post(release_url)
    assert released.status_code == 200 and released.json()["status"] == "ok"
    assert released.json()["quarantined_by"] is None
    assert api_client.post(release_url).status_code == 409
