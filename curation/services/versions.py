"""Dataset versions: drafts, freezing into an immutable Parquet manifest, and exports."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.db import transaction
from django.db.models import F, Max, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from curation.models import Dataset, DatasetItem, DatasetVersion, Image
from curation.services.storage import store_bytes

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_sha256", pa.string()),
        ("storage_key", pa.string()),
        ("caption", pa.string()),
        ("label", pa.string()),
        ("weight", pa.float32()),
        ("split", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("has_alpha", pa.bool_()),
    ]
)
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
) -> DatasetVersion:
    """A new draft; starting from a parent copies its rows so edits are a diff against it."""
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=next_version_number(dataset),
        parent=parent,
        reason=reason,
        lineage=lineage or {},
    )
    if parent is not None:
        DatasetItem.objects.bulk_create(
            DatasetItem(
                version=version,
                image_id=item.image_id,
                caption=item.caption,
                label=item.label,
                weight=item.weight,
                split=item.split,
            )
            for item in parent.items.all()
        )
    return version


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


MANIFEST_BATCH_ROWS = 50_000


def build_manifest(version: DatasetVersion) -> bytes:
    """Stream the rows into Parquet in record batches: a million-row version never holds more
    than one batch of Python objects, and no row is saved one by one."""
    # Stored bytes carry no metadata; a version whose lineage asks for `original_bytes` names
    # the files as supplied instead, where ingest kept them.
    key: Any = F("image__storage_key")
    if version.lineage.get("original_bytes"):
        key = Coalesce(NullIf("image__original_key", Value("")), "image__storage_key")
    rows = (
        version.items.order_by("image__sha256")
        .annotate(key=key)
        .values_list(
            "image__sha256",
            "key",
            "caption",
            "label",
            "weight",
            "split",
            "image__width",
            "image__height",
            "image__has_alpha",
        )
        .iterator(chunk_size=5000)
    )
    sink = io.BytesIO()
    # Fixed writer options so the same rows always give the same bytes, hence the same checksum.
    with pq.ParquetWriter(
        sink, MANIFEST_SCHEMA, compression="zstd", write_statistics=False, use_dictionary=False
    ) as writer:
        batch: list[tuple] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= MANIFEST_BATCH_ROWS:
                writer.write_batch(_record_batch(batch))
                batch = []
        if batch:
            writer.write_batch(_record_batch(batch))
    return sink.getvalue()


def _record_batch(rows: list[tuple]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [
            pa.array(column, type=field.type)
            for column, field in zip(columns, MANIFEST_SCHEMA, strict=True)
        ],
        schema=MANIFEST_SCHEMA,
    )


def _diff(version: DatasetVersion) -> dict[str, Any]:
    if version.parent is None:
        return {}
    mine = set(version.items.values_list("image__sha256", flat=True))
    theirs = set(version.parent.items.values_list("image__sha256", flat=True))
    added, removed = sorted(mine - theirs), sorted(theirs - mine)
    return {
        "parent": version.parent.pk,
        "added": len(added),
        "removed": len(removed),
        "added_sha256": added[:DIFF_LIST_CAP],
        "removed_sha256": removed[:DIFF_LIST_CAP],
    }


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
    version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if version.is_frozen:
        raise ValueError(f"{version} is already frozen")
    # An image quarantined after it was added to the draft never reaches a frozen manifest.
    withheld, _ = version.items.filter(image__status=Image.Status.QUARANTINED).delete()
    if withheld:
        version.lineage = {**version.lineage, "withheld_quarantined": withheld}
    if not version.items.exists():
        raise ValueError(f"{version} has no rows; add images before freezing")
    data = build_manifest(version)
    checksum = hashlib.sha256(data).hexdigest()
    parent = version.parent
    if parent is not None and parent.is_frozen and parent.checksum == checksum:
        raise VersionUnchanged(
            f"{version} is identical to its parent {parent} (same {version.items.count()} rows, "
            f"checksum {checksum[:12]}); nothing was frozen"
        )
    version.manifest_path = store_bytes(data, "parquet", prefix="manifests", sha256=checksum)
    version.checksum = checksum
    version.row_count = version.items.count()
    version.diff = _diff(version)
    version.reason = reason or version.reason
    version.frozen_by = user if getattr(user, "pk", None) else None
    version.frozen_at = timezone.now()
    version.state = DatasetVersion.State.FROZEN
    version.save()
    return version
