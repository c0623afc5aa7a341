"""Pages of big things stay small: a version page previews its rows instead of a form per row."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from curation.admin import datasets as dataset_admin
from curation.models import Dataset, DatasetItem, Image, Source
from curation.services.versions import create_draft_version, freeze_version

pytestmark = pytest.mark.django_db


def _version(rows: int):
    source = Source.objects.create(name=f"s{rows}")
    images = Image.objects.bulk_create(
        Image(sha256=f"{rows:08x}{i:056x}", source=source, storage_key=f"images/{i}.png")
        for i in range(rows)
    )
    dataset = Dataset.objects.create(name=f"d{rows}", kind=Dataset.Kind.DOMAIN)
    version = create_draft_version(dataset)
    DatasetItem.objects.bulk_create(
        DatasetItem(version=version, image=image, caption=f"cap {n}", label="sticker")
        for n, image in enumerate(images)
    )
    return version


def _page(client, version) -> tuple[str, list[str]]:
    url = reverse("admin:curation_datasetversion_change", args=[version.pk])
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return response.content.decode(), [q["sql"] for q in ctx.captured_queries]


def test_large_version_page_previews_rows_and_costs_the_same(client, platform_admin, monkeypatch):
    monkeypatch.setattr(dataset_admin, "INLINE_ROWS", 5)
    monkeypatch.setattr(dataset_admin, "PREVIEW_ROWS", 3)
    client.force_login(platform_admin)
    small, _ = _page(client, _version(4))
    assert 'name="items-0-caption"' in small  # a small draft is edited inline

    bigger = _version(12)
    page, queries = _page(client, bigger)
    assert "items-0-caption" not in page and "The first 3 of more than 5 rows" in page
    assert len(re.findall(r"cap \d+", page)) == 3
    more = Image.objects.bulk_create(
        Image(sha256=f"{i:064x}", storage_key=f"images/{i}.png") for i in range(28)
    )
    DatasetItem.objects.bulk_create(DatasetItem(version=bigger, image=i) for i in more)
    page, more_queries = _page(client, bigger)
    assert len(more_queries) == len(queries)
    assert not any("COUNT(" in q.upper() and "LIMIT" not in q.upper() for q in more_queries)
    frozen = freeze_version(bigger, reason="big")
    page, _ = _page(client, frozen)
    assert "The first 3 of 40 rows" in page and "items-0-" not in page
