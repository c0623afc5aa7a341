"""Dataset versions: drafts, freezing to a checksummed Parquet manifest, immutability, diffs."""

from __future__ import annotations

import hashlib

import pyarrow.parquet as pq
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from curation.models import Dataset, DatasetItem, DatasetVersion, FrozenVersionError, Image
from curation.services.versions import add_items, create_draft_version, freeze_version


def _images(n: int, offset: int = 0) -> list[Image]:
    return [
        Image.objects.create(
            sha256=f"{i + offset:064x}", width=32, height=32, format="PNG", storage_key=f"k{i}"
        )
        for i in range(n)
    ]


@pytest.mark.django_db
def test_freeze_writes_checksummed_manifest_and_locks(data_lead):
    dataset = Dataset.objects.create(name="domain", kind="domain")
    version = create_draft_version(dataset, reason="first cut")
    images = _images(5)
    add_items(
        version,
        [{"image": img, "caption": f"c{i}", "label": "sticker"} for i, img in enumerate(images)],
    )
    version = freeze_version(version, user=data_lead)
    assert version.is_frozen and version.row_count == 5 and version.frozen_by == data_lead
    data = default_storage.open(version.manifest_path).read()
    assert hashlib.sha256(data).hexdigest() == version.checksum
    table = pq.read_table(default_storage.path(version.manifest_path))
    assert table.num_rows == 5
    assert sorted(table.column("image_sha256").to_pylist()) == sorted(i.sha256 for i in images)

    with pytest.raises(FrozenVersionError):
        version.reason = "changed"
        version.save()
    with pytest.raises(FrozenVersionError):
        DatasetItem.objects.create(version=version, image=_images(1, offset=100)[0])
    with pytest.raises(FrozenVersionError):
        version.items.first().delete()
    with pytest.raises(FrozenVersionError):
        DatasetVersion.objects.get(pk=version.pk).delete()
    with pytest.raises(ValueError, match="already frozen"):
        freeze_version(version)


@pytest.mark.django_db
def test_child_version_diff_and_deterministic_checksum():
    dataset = Dataset.objects.create(name="style", kind="style")
    images = _images(4)
    v1 = create_draft_version(dataset)
    add_items(v1, [{"image": img} for img in images[:3]])
    v1 = freeze_version(v1)
    v2 = create_draft_version(dataset, parent=v1)
    assert v2.number == 2 and v2.items.count() == 3
    v2.items.filter(image=images[0]).delete()
    add_items(v2, [{"image": images[3]}])
    v2 = freeze_version(v2)
    assert v2.diff["added"] == 1 and v2.diff["removed"] == 1
    assert v2.diff["added_sha256"] == [images[3].sha256]
    # The same rows give the same manifest bytes: a rebuilt v1 has v1's checksum.
    v3 = create_draft_version(dataset)
    add_items(v3, [{"image": img} for img in images[:3]])
    assert freeze_version(v3).checksum == v1.checksum


@pytest.mark.django_db
def test_a_version_identical_to_its_parent_is_refused(client, data_lead):
    from curation.models import DatasetVersion
    from curation.services.versions import VersionUnchanged

    dataset = Dataset.objects.create(name="same", kind="style")
    images = _images(2)
    v1 = create_draft_version(dataset)
    add_items(v1, [{"image": img, "caption": "c"} for img in images])
    v1 = freeze_version(v1)
    copy = create_draft_version(dataset, parent=v1)
    with pytest.raises(VersionUnchanged, match="identical to its parent"):
        freeze_version(copy)
    copy.refresh_from_db()
    assert not copy.is_frozen and DatasetVersion.objects.filter(state="frozen").count() == 1

    client.force_login(data_lead)
    response = client.post(
        reverse("admin:curation_datasetversion_changelist"),
        {"action": "freeze", "_selected_action": [copy.pk]},
        follow=True,
    )
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert any(tag == "warning" and "nothing was frozen" in text for tag, text in shown), shown
    copy.refresh_from_db()
    assert not copy.is_frozen
    # A changed caption is a real change: it freezes.
    copy.items.update(caption="new caption")
    assert freeze_version(copy).is_frozen


@pytest.mark.django_db
def test_empty_version_cannot_be_frozen():
    version = create_draft_version(Dataset.objects.create(name="e", kind="eval"))
    with pytest.raises(ValueError, match="no rows"):
        freeze_version(version)


@pytest.mark.django_db
def test_admin_freeze_action_and_read_only_page(client, data_lead):
    dataset = Dataset.objects.create(name="domain", kind="domain")
    version = create_draft_version(dataset)
    add_items(version, [{"image": img} for img in _images(2)])
    client.force_login(data_lead)
    response = client.post(
        reverse("admin:curation_datasetversion_changelist"),
        {"action": "freeze", "_selected_action": [version.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert any("frozen: 2 rows" in m for m in messages), messages
    version.refresh_from_db()
    assert version.is_frozen
    page = client.get(reverse("admin:curation_datasetversion_change", args=[version.pk]))
    assert page.status_code == 200
    assert b'name="reason"' not in page.content  # every field read-only
    assert b"Delete" not in page.content or b"deletelink" not in page.content
