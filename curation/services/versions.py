"""Dataset versions: drafts, freezing into an immutable Parquet manifest, and exports."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.db import connection, transaction
from django.db.models import Exists, F, Max, OuterRef, QuerySet, Value
from django.db.models.functions import Coalesce, NullIf
from django.utils import timezone

from curation.models import Dataset, DatasetItem, DatasetVersion, Image
from curation.services.planner import refresh_statistics
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
        add_selected_items(
            version,
            parent.items.values_list("image_id", "caption", "label", "weight", "split"),
        )
    return version


@dataclass(frozen=True)
class CaptionChoice:
    """Which of `texts` captions each image: `image_ids[i]` takes `texts[text_index[i]]`."""

    image_ids: np.ndarray
    text_index: np.ndarray
    texts: list[str]


def add_selected_items(
    version: DatasetVersion, rows: QuerySet, *, captions: CaptionChoice | None = None
) -> int:
    """Add the rows a queryset selects to a draft in one `INSERT … SELECT`; returns how many.

    `rows` is a values_list of columns named image_id, caption, label, weight and split. The rows
    never become Python objects, so a million-row version is one statement. `captions` replaces
    the caption of the images it names, joined in the same statement (an `UPDATE` afterwards
    would write every row twice, and PostgreSQL's MVCC makes each update a new row version).
    Images already in the draft are skipped, as `add_items` skips them.
    """
    if version.is_frozen:
        raise ValueError(f"{version} is frozen; start a new version from it instead")
    select, params = rows.order_by().query.sql_with_params()
    table = connection.ops.quote_name(DatasetItem._meta.db_table)
    caption, join, head, tail = "chosen.caption", "", [], []
    with connection.cursor() as cursor:
        if captions is not None and len(captions.image_ids):
            join, tail = _caption_pick(cursor, captions)
            cases = " ".join("WHEN %s THEN %s" for _ in captions.texts)
            caption = f"COALESCE(CASE pick.text_index {cases} END, chosen.caption)"
            head = [value for pair in enumerate(captions.texts) for value in pair]
        # `WHERE true` keeps SQLite from reading ON CONFLICT as a join's ON clause.
        cursor.execute(
            f"INSERT INTO {table} (version_id, image_id, caption, label, weight, split)"
            f" SELECT %s, chosen.image_id, {caption}, chosen.label, chosen.weight, chosen.split"
            f" FROM ({select}) chosen{join} WHERE true ON CONFLICT DO NOTHING",
            [version.pk, *head, *params, *tail],
        )
        added = cursor.rowcount
        if join and connection.vendor != "postgresql":
            cursor.execute("DROP TABLE temp.caption_pick")
    return added


def _caption_pick(cursor: Any, captions: CaptionChoice) -> tuple[str, list[Any]]:
    """A `LEFT JOIN` to (image_id, text_index) rows: two array parameters unnested on
    PostgreSQL; on SQLite a temporary table keyed by image id (it caps a statement's parameters
    far below a million, and a JSON table function has no index to join on)."""
    ids = np.asarray(captions.image_ids, dtype=np.int64).tolist()
    choice = np.asarray(captions.text_index, dtype=np.int64).tolist()
    if connection.vendor == "postgresql":
        arrays = ["{" + ",".join(map(str, values)) + "}" for values in (ids, choice)]
        join = " LEFT JOIN unnest(%s::bigint[], %s::int[]) AS pick(image_id, text_index)"
        return join + " ON pick.image_id = chosen.image_id", arrays
    cursor.execute("DROP TABLE IF EXISTS temp.caption_pick")  # left by a failed freeze
    cursor.execute(
        "CREATE TEMP TABLE caption_pick (image_id INTEGER PRIMARY KEY, text_index INTEGER)"
    )
    rows = zip(ids, choice, strict=True)
    cursor.executemany("INSERT INTO temp.caption_pick VALUES (%s, %s)", rows)
    return " LEFT JOIN temp.caption_pick pick ON pick.image_id = chosen.image_id", []


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
    )
    select, params = rows.query.sql_with_params()
    sink = io.BytesIO()
    # Fixed writer options so the same rows always give the same bytes, hence the same checksum.
    # The rows go from the driver's tuples straight into Arrow columns, a batch at a time (a
    # server-side cursor on PostgreSQL), without the ORM's per-row conversions.
    if connection.vendor == "postgresql":
        # A cursor is planned to return its first 10 % fast (nested loops down the sha256
        # index); this one reads every row, so plan for all of them (sort a hash join).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
    with (
        pq.ParquetWriter(
            sink, MANIFEST_SCHEMA, compression="zstd", write_statistics=False, use_dictionary=False
        ) as writer,
        connection.chunked_cursor() as cursor,
    ):
        cursor.execute(select, params)
        while batch := cursor.fetchmany(MANIFEST_BATCH_ROWS):
            writer.write_batch(_record_batch(batch))
    return sink.getvalue()


def _record_batch(rows: list[tuple]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [
            _column(column, field.type)
            for column, field in zip(columns, MANIFEST_SCHEMA, strict=True)
        ],
        schema=MANIFEST_SCHEMA,
    )


def _column(values: tuple, kind: pa.DataType) -> pa.Array:
    # SQLite hands booleans back as 0/1, which Arrow refuses to read as booleans.
    if kind == pa.bool_():
        return pa.array(np.asarray(values, dtype=bool))
    return pa.array(values, type=kind)


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
    version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if version.is_frozen:
        raise ValueError(f"{version} is already frozen")
    # An image quarantined after it was added to the draft never reaches a frozen manifest.
    withheld, _ = version.items.filter(image__status=Image.Status.QUARANTINED).delete()
    if withheld:
        version.lineage = {**version.lineage, "withheld_quarantined": withheld}
    if not version.items.exists():
        raise ValueError(f"{version} has no rows; add images before freezing")
    refresh_statistics(DatasetItem)  # the draft's rows were most likely just bulk-inserted
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
