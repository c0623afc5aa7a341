"""List pages cost the same number of queries for 3 rows as for 40: no N+1, no unbounded COUNT."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from curation.models import Dataset, DatasetVersion, Image, Job, Source
from curation.services.versions import create_draft_version


def _populate(n: int, start: int) -> None:
    source, _ = Source.objects.get_or_create(name="pool")
    dataset, _ = Dataset.objects.get_or_create(name="d", kind="domain")
    for i in range(start, start + n):
        Image.objects.create(sha256=f"{i:064x}", source=source, storage_key=f"images/{i}.png")
        Job.objects.create(kind="noop", progress_total=10, progress_done=i % 10)
        create_draft_version(dataset)


def _queries(client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return [q["sql"] for q in ctx.captured_queries]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    [
        "curation_image",
        "curation_job",
        "curation_datasetversion",
        "curation_ingestbatch",
        "training_trainingrun",
    ],
)
def test_changelist_queries_do_not_grow_with_rows(client, platform_admin, name):
    client.force_login(platform_admin)
    url = reverse(f"admin:{name}_changelist")
    _populate(3, 0)
    few = _queries(client, url)
    _populate(40, 3)
    many = _queries(client, url)
    assert len(many) == len(few), "\n".join(many)
    counts = [q for q in many if "COUNT(" in q.upper()]
    assert all("LIMIT" in q.upper() for q in counts), counts
    assert DatasetVersion.objects.count() == 43
