"""A frozen version's Parquet manifest: its schema, and rows from the database into its bytes.

Both ways of freezing — `freeze_version` reading a draft's rows back, and the grid's one-pass
freeze reading the rows it writes into a draft — read them in sha256 order, turn driver rows
into Arrow batches here and write them with `write_manifest`, so the same rows always give the
same bytes, hence the same checksum, whichever path froze them (the identical-to-parent refusal
compares checksums).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from django.db import connection
from django.db.models import F, IntegerField, QuerySet, Value
from django.db.models.functions import Cast, Coalesce, NullIf

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
MANIFEST_BATCH_ROWS = 50_000
# The columns of `manifest_columns` as the driver returns them: has_alpha is read as an integer
# (SQLite has no booleans, and Arrow reads neither 0/1 as booleans nor True as an integer), and
# weight as the database's double, so rows copied through Arrow keep their exact weight.
_READ_AS = {"has_alpha": pa.int8(), "weight": pa.float64()}
ROW_TYPE = pa.struct(
    [pa.field(field.name, _READ_AS.get(field.name, field.type)) for field in MANIFEST_SCHEMA]
)
MANIFEST_COLUMNS = [field.name for field in MANIFEST_SCHEMA]


def manifest_columns(items: QuerySet, *, prefix: str = "image__", original_bytes: bool = False):
    """`items` annotated with the manifest's columns, image fields reached through `prefix`;
    `values_list(*MANIFEST_COLUMNS, …)` then selects them in ROW_TYPE's order."""
    key: Any = F(f"{prefix}storage_key")
    if original_bytes:
        # Stored bytes carry no metadata; a version whose lineage asks for `original_bytes`
        # names the files as supplied instead, where ingest kept them.
        key = Coalesce(NullIf(f"{prefix}original_key", Value("")), f"{prefix}storage_key")
    return items.annotate(
        image_sha256=F(f"{prefix}sha256"),
        storage_key=key,
        width=F(f"{prefix}width"),
        height=F(f"{prefix}height"),
        has_alpha=Cast(f"{prefix}has_alpha", IntegerField()),
    )


def rows_to_batch(rows: list[tuple], row_type: pa.StructType = ROW_TYPE) -> pa.RecordBatch:
    """Driver tuples to one Arrow batch in a single conversion (no per-column Python lists)."""
    return pa.RecordBatch.from_struct_array(pa.array(rows, type=row_type))


def manifest_part(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The manifest's columns of `batch` in the manifest's types."""
    return pa.RecordBatch.from_arrays(
        [pc.cast(batch.column(field.name), field.type) for field in MANIFEST_SCHEMA],
        schema=MANIFEST_SCHEMA,
    )


def write_manifest(parts: Iterable[pa.RecordBatch]) -> bytes:
    """The manifest's bytes from batches already in sha256 order, one row group per batch and
    fixed writer options: the same rows in the same batches always give the same bytes."""
    sink = io.BytesIO()
    with pq.ParquetWriter(
        sink, MANIFEST_SCHEMA, compression="zstd", write_statistics=False, use_dictionary=False
    ) as writer:
        for part in parts:
            writer.write_batch(part)
    return sink.getvalue()


def stream_batches(
    select: str, params: Sequence[Any], row_type: pa.StructType = ROW_TYPE
) -> Iterator[pa.RecordBatch]:
    """The rows of `select` as Arrow batches of MANIFEST_BATCH_ROWS, read through a server-side
    cursor on PostgreSQL: a million rows are never a million Python tuples at once."""
    if connection.vendor == "postgresql":
        # A cursor is planned to return its first 10 % fast (nested loops down an index); this
        # one reads every row, so plan for all of them (hash joins and one sort).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
    with connection.chunked_cursor() as cursor:
        cursor.execute(select, params)
        while batch := cursor.fetchmany(MANIFEST_BATCH_ROWS):
            yield rows_to_batch(batch, row_type)


def build_manifest(version: Any) -> bytes:
    """The manifest of a draft's rows as they are in the database, in sha256 order."""
    rows = (
        manifest_columns(
            version.items.all(), original_bytes=bool(version.lineage.get("original_bytes"))
        )
        .order_by("image_sha256")
        .values_list(*MANIFEST_COLUMNS)
    )
    select, params = rows.query.sql_with_params()
    return write_manifest(manifest_part(batch) for batch in stream_batches(select, params))
