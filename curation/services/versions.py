"""Dataset versions: drafts, freezing into an immutable Parquet manifest, and exports."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, Max, OuterRef, QuerySet
from django.utils import timezone

from curation.models import Dataset, DatasetItem, DatasetVersion, Image
from curation.services.manifests import MANIFEST_SCHEMA, build_manifest
from curation.services.planner import refresh_statistics
from curation.services.storage import store_bytes

__all__ = ["MANIFEST_SCHEMA", "build_manifest"]  # where importers have always found them

DIFF_LIST_CAP = 1000


def next_version_number(dataset: Dataset) -> int:
    return (dataset.versions.aggregate(n=Max("number"))["n"] or 0) + 1


@transaction.atomic
def create_draft_version(
    dataset: Dataset,
    *,
    parent: DatasetVersion | None = None,
    reason: str = "",
    lineage: dict[str, Any] | None = None,
    copy_rows: bool = True,
) -> DatasetVersion:
    """A new draft; starting from a parent copies its rows so edits are a diff against it
    (`copy_rows=False`: the caller writes them, as the grid's one-pass freeze does)."""
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=next_version_number(dataset),
        parent=parent,
        reason=reason,
        lineage=lineage or {},
    )
    if parent is not None and copy_rows:
        add_selected_items(
            version,
            parent.items.values_list("image_id", "caption", "label", "weight", "split"),
        )
    return version


def add_selected_items(version: DatasetVersion, rows: QuerySet) -> int:
    """Add the rows a queryset selects to a draft in one `INSERT … SELECT`; returns how many.

    `rows` is a values_list of columns named image_id, caption, label, weight and split. The rows
    never become Python objects, so a million-row version is one statement. Images already in
    the draft are skipped, as `add_items` skips them.
    """
    if version.is_frozen:
        raise ValueError(f"{version} is frozen; start a new version from it instead")
    select, params = rows.order_by().query.sql_with_params()
    table = connection.ops.quote_name(DatasetItem._meta.db_table)
    with connection.cursor() as cursor:
        # `WHERE true` keeps SQLite from reading ON CONFLICT as a join's ON clause.
        cursor.execute(
            f"INSERT INTO {table} (version_id, image_id, caption, label, weight, split)"
            f" SELECT %s, chosen.image_id, chosen.caption, chosen.label, chosen.weight,"
            f" chosen.split FROM ({select}) chosen WHERE true ON CONFLICT DO NOTHING",
            [version.pk, *params],
        )
        return cursor.rowcount


def add_items(version: DatasetVersion, rows: Iterable[dict[str, Any]]) -> int:
    """Add rows {image, caption, label, weight, split} to a draft; existing images are skipped."""
    if version.is_frozen:
        raise ValueError(f"{version} is frozen; start a new version from it instead")
    items = [
        DatasetItem(
            version=version,
            image=row["image"] if isinstance(row["image"], Image) else None,
            image_id=row["image"] if not isinstance(row["image"], Image) else row["image"].pk,
            caption=row.get("caption", ""),
            label=str(row.get("label", "")),
            weight=float(row.get("weight", 1.0)),
            split=row.get("split", DatasetItem.Split.TRAIN),
        )
        for row in rows
    ]
    before = version.items.count()
    # ignore_conflicts returns every object, inserted or not: count rows instead.
    DatasetItem.objects.bulk_create(items, ignore_conflicts=True, batch_size=1000)
    return version.items.count() - before


def _only_in(version: DatasetVersion, other: DatasetVersion) -> QuerySet:
    """Items of `version` whose image `other` lacks (an anti-join: no sets of a million ids)."""
    return version.items.filter(
        ~Exists(DatasetItem.objects.filter(version=other, image_id=OuterRef("image_id")))
    )


def _diff(version: DatasetVersion) -> dict[str, Any]:
    if version.parent is None:
        return {}
    parent = version.parent
    added, removed = _only_in(version, parent), _only_in(parent, version)
    return {
        "parent": parent.pk,
        "added": added.count(),
        "removed": removed.count(),
        "added_sha256": _first_sha256(added),
        "removed_sha256": _first_sha256(removed),
    }


def _first_sha256(items: QuerySet) -> list[str]:
    return list(
        items.order_by("image__sha256").values_list("image__sha256", flat=True)[:DIFF_LIST_CAP]
    )


class VersionUnchanged(ValueError):
    """Freezing would make a version identical to its parent: nothing is created."""


@transaction.atomic
def freeze_version(
    version: DatasetVersion, *, user: Any = None, reason: str = ""
) -> DatasetVersion:
    """Write the manifest, record its checksum and diff, and make the version immutable.

    Raises VersionUnchanged when the rows are exactly the parent's (same manifest checksum):
    a second version with nothing new would only blur the lineage.
    """
    version = lock_draft(version)
    # An image quarantined after it was added to the draft never reaches a frozen manifest.
    withheld, _ = version.items.filter(image__status=Image.Status.QUARANTINED).delete()
    if withheld:
        version.lineage = {**version.lineage, "withheld_quarantined": withheld}
    if not version.items.exists():
        raise ValueError(f"{version} has no rows; add images before freezing")
    refresh_statistics(DatasetItem)  # the draft's rows were most likely just bulk-inserted
    return seal(version, build_manifest(version), version.items.count(), user=user, reason=reason)


def lock_draft(version: DatasetVersion) -> DatasetVersion:
    """The draft, locked for the transaction that freezes it; refuses a frozen version."""
    version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if version.is_frozen:
        raise ValueError(f"{version} is already frozen")
    return version


def seal(
    version: DatasetVersion, data: bytes, rows: int, *, user: Any = None, reason: str = ""
) -> DatasetVersion:
    """Store the manifest `data` of the draft's `rows` rows and make the version immutable.
    Only inside the transaction that wrote the rows and locked the draft (`lock_draft`)."""
    checksum = hashlib.sha256(data).hexdigest()
    parent = version.parent
    if parent is not None and parent.is_frozen and parent.checksum == checksum:
        raise VersionUnchanged(
            f"{version} is identical to its parent {parent} (same {rows} rows, "
            f"checksum {checksum[:12]}); nothing was frozen"
        )
    version.manifest_path = store_bytes(data, "parquet", prefix="manifests", sha256=checksum)
    version.checksum = checksum
    version.row_count = rows
    version.diff = _diff(version)
    version.reason = reason or version.reason
    version.frozen_by = user if getattr(user, "pk", None) else None
    version.frozen_at = timezone.now()
    version.state = DatasetVersion.State.FROZEN
    version.save()
    return version
