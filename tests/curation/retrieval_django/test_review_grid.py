"""The review grid through the test client: who may see it, paging, decisions and freezing."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from curation.models import Dataset, DatasetVersion, RecipeScore
from curation.services.recipes import ensure_heuristics_recipe, run_recipe_job, start_recipe_run
from curation.views import review as views

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(pool):
    recipe = ensure_heuristics_recipe("grid-recipe", threshold=0.5)
    return run_recipe_job(start_recipe_run(recipe, run_async=False))


def _tile_ids(response) -> list[int]:
    return [
        int(i) for i in re.findall(r'class="tile"[^>]*data-id="(\d+)"', response.content.decode())
    ]


def _ranked(run) -> list[int]:
    return list(run.scores.order_by("-score", "pk").values_list("pk", flat=True))


def test_only_data_leads_see_the_grid(client, run, annotator, data_lead):
    url = reverse("curation-review", args=[run.pk])
    response = client.get(url)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]
    client.force_login(annotator)
    assert client.get(url).status_code == 403
    assert client.post(reverse("curation-review-decide", args=[run.pk])).status_code == 403
    client.force_login(data_lead)
    response = client.get(url)
    assert response.status_code == 200
    assert _tile_ids(response) == _ranked(run)  # sorted by score
    page = response.content.decode()
    assert "/media/s/" in page and "repeating-conic-gradient" in page  # signed, checkerboard
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from another origin


def test_keyset_pages_and_filters(
    client, run, data_lead, monkeypatch, django_assert_max_num_queries
):
    monkeypatch.setattr(views, "PAGE_SIZE", 7)
    client.force_login(data_lead)
    url = reverse("curation-review", args=[run.pk])
    first = client.get(url)
    ranked = _ranked(run)
    assert _tile_ids(first) == ranked[:7]
    next_url = first.context["next_url"]
    second = client.get(next_url)
    assert _tile_ids(second) == ranked[7:14]
    third = client.get(second.context["next_url"])
    assert _tile_ids(third) == ranked[14:] and not third.context["next_url"]
    back = client.get(third.context["prev_url"])
    assert _tile_ids(back) == ranked[7:14]
    with django_assert_max_num_queries(12) as captured:
        client.get(next_url)
    assert not any("COUNT(*)" in q["sql"] and "decision" not in q["sql"] for q in captured)

    alpha = client.get(url, {"has_alpha": "no"})
    photos = set(run.scores.filter(image__has_alpha=False).values_list("pk", flat=True))
    assert set(_tile_ids(alpha)) <= photos and _tile_ids(alpha)
    high = client.get(url, {"min_score": "0.5"})
    assert all(RecipeScore.objects.get(pk=i).score >= 0.5 for i in _tile_ids(high))
    votes = client.get(url, {"lf": "has_alpha:sticker"})
    stickers = set(run.scores.filter(image__has_alpha=True).values_list("pk", flat=True))
    assert set(_tile_ids(votes)) <= stickers and len(_tile_ids(votes)) == 7
    bad = client.get(url, {"min_score": "high", "decision": "maybe"})
    assert "min score: &#x27;high&#x27; is not a number" in bad.content.decode()


def test_decide_accept_above_and_freeze(client, run, data_lead, pool):
    client.force_login(data_lead)
    decide = reverse("curation-review-decide", args=[run.pk])
    ranked = _ranked(run)
    response = client.post(
        decide, {"ids": ranked[:2], "decision": "accepted"}, content_type="application/json"
    )
    assert response.json() == {"changed": 2, "ids": ranked[:2], "decision": "accepted"}
    client.post(decide, {"id": ranked[2], "decision": "rejected"})  # form-encoded works too
    bad = client.post(
        decide, {"id": ranked[3], "decision": "maybe"}, content_type="application/json"
    )
    assert bad.status_code == 400 and "decision 'maybe'" in bad.json()["error"]
    decisions = dict(run.scores.values_list("pk", "decision"))
    assert [decisions[i] for i in ranked[:4]] == ["accepted", "accepted", "rejected", "unreviewed"]

    freeze = reverse("curation-review-freeze", args=[run.pk])
    missing = client.post(freeze, {"dataset_name": "stickers-domain", "reason": ""})
    assert missing.status_code == 400 and "reason: say why" in missing.content.decode()

    response = client.post(
        freeze,
        {"dataset_name": "stickers-domain", "reason": "first pick", "default_caption": "a sticker"},
    )
    version = DatasetVersion.objects.get(dataset__name="stickers-domain")
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:curation_datasetversion_change", args=[version.pk]
    )
    assert version.is_frozen and version.dataset.kind == Dataset.Kind.DOMAIN
    accepted_images = set(run.scores.filter(pk__in=ranked[:2]).values_list("image_id", flat=True))
    assert set(version.items.values_list("image_id", flat=True)) == accepted_images
    assert set(version.items.values_list("caption", flat=True)) == {"a sticker"}
    assert version.lineage["recipe_run"] == run.pk and version.lineage["index"] is None
    assert version.lineage["recipe_config"]["name"] == "grid-recipe"
    assert version.frozen_by == data_lead and version.checksum

    # Bulk accept: every unreviewed image at or above the threshold; the rejection stays.
    client.post(reverse("curation-review-accept-above", args=[run.pk]), {"threshold": "0.5"})
    above = set(run.scores.filter(score__gte=0.5).values_list("pk", flat=True)) - {ranked[2]}
    assert set(run.scores.filter(decision="accepted").values_list("pk", flat=True)) == above
    client.post(freeze, {"dataset_name": "stickers-domain", "reason": "bulk"})
    second = DatasetVersion.objects.get(dataset__name="stickers-domain", number=2)
    assert second.parent == version and second.row_count == len(above)
    assert second.diff["added"] == len(above) - 2 and second.diff["removed"] == 0

    # Freezing the same selection again would copy version 2: refused, nothing created.
    again = client.post(freeze, {"dataset_name": "stickers-domain", "reason": "same again"})
    assert again.status_code == 400
    assert "identical to its parent" in again.content.decode()
    assert "nothing was frozen" in again.content.decode()
    assert DatasetVersion.objects.filter(dataset__name="stickers-domain").count() == 2


def test_decisions_need_the_csrf_token(run, data_lead):
    client = Client(enforce_csrf_checks=True)
    client.force_login(data_lead)
    decide = reverse("curation-review-decide", args=[run.pk])
    response = client.post(decide, {"id": _ranked(run)[0], "decision": "accepted"})
    assert response.status_code == 403
    assert not run.scores.filter(decision="accepted").exists()


def test_large_images_get_a_cached_thumbnail(pool):
    import io

    from PIL import Image as PILImage

    from curation.models import Source
    from curation.services.storage import read_bytes
    from curation.services.thumbnails import thumbnail_key

    from .conftest import store_image

    big = PILImage.new("RGBA", (900, 600), (0, 0, 0, 0))
    data = io.BytesIO()
    big.save(data, "PNG")
    image = store_image(data.getvalue(), source=Source.objects.get(name="stickers"), has_alpha=True)
    key = thumbnail_key(image)
    assert key != image.storage_key and key == thumbnail_key(image)
    thumb = PILImage.open(io.BytesIO(read_bytes(key)))
    assert thumb.size == (256, 171) and thumb.mode == "RGBA"
    assert thumbnail_key(pool["stickers"][0]) == pool["stickers"][0].storage_key  # small: as is
