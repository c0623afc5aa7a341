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
import pyarrow.csv as pacsv
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
    select: str,
    params: Sequence[Any],
    row_type: pa.StructType = ROW_TYPE,
    *,
    writes_between: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The rows of `select` as Arrow batches of exactly MANIFEST_BATCH_ROWS (the last one
    shorter): a million rows are never a million Python tuples at once.

    PostgreSQL sends them by `COPY … TO STDOUT` as CSV that Arrow's reader parses: no row ever
    becomes Python objects, which cost more than the query (the freeze's read-back of a
    million rows: 2.2× to 1.5× pyarrow's own manifest). A COPY holds the connection until its
    last row, so a caller that writes on it between batches (`writes_between`, the grid's
    freeze copying each batch into its draft) is served by a server-side cursor instead."""
    if connection.vendor == "postgresql" and not writes_between:
        yield from _exact_batches(_copied_batches(select, params, row_type))
        return
    if connection.vendor == "postgresql":
        # A cursor is planned to return its first 10 % fast (nested loops down an index); this
        # one reads every row, so plan for all of them (hash joins and one sort).
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
    with connection.chunked_cursor() as cursor:
        cursor.execute(select, params)
        while batch := cursor.fetchmany(MANIFEST_BATCH_ROWS):
            yield rows_to_batch(batch, row_type)


def _copied_batches(
    select: str, params: Sequence[Any], row_type: pa.StructType
) -> Iterator[pa.RecordBatch]:
    """PostgreSQL: the rows of `select` through COPY's CSV, as Arrow batches of any size."""
    names = [field.name for field in row_type]
    with connection.cursor() as cursor:
        # Sorting and hashing a million rows of text in memory, not in temporary files. LOCAL:
        # it ends with the caller's transaction (every caller, `freeze_version`, holds one;
        # outside a transaction PostgreSQL ignores it with a warning and the sort may spill).
        cursor.execute("SET LOCAL work_mem = '256MB'")
        with cursor.cursor.copy(f"COPY ({select}) TO STDOUT (FORMAT csv)", params) as copy:
            source = _CopyStream(iter(copy))
            if not source.peek():
                return
            reader = pacsv.open_csv(
                source,
                # The driver is read on this thread only: Arrow's reader threads would call it
                # concurrently with nothing to gain (the server, not parsing, is the cost).
                read_options=pacsv.ReadOptions(
                    column_names=names, use_threads=False, block_size=8 << 20
                ),
                # Every value is NOT NULL and PostgreSQL quotes an empty string ("" vs NULL's
                # nothing), so no string is ever read as null; captions may hold newlines.
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={field.name: field.type for field in row_type},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            yield from reader


class _CopyStream(io.RawIOBase):
    """The chunks a COPY … TO STDOUT yields, as the file Arrow's CSV reader reads."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def peek(self) -> bytes:
        """The first bytes still to read (b"" at the end), without consuming them."""
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = bytes(chunk)
        return self._pending

    def readinto(self, buffer: Any) -> int:
        # COPY yields a chunk per row: fill the reader's buffer from as many as fit, so Arrow
        # makes one call per buffer, not one per row.
        view, size = memoryview(buffer).cast("B"), 0
        while size < len(view) and self.peek():
            take = min(len(view) - size, len(self._pending))
            view[size : size + take] = self._pending[:take]
            self._pending = self._pending[take:]
            size += take
        return size


def _exact_batches(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`batches` cut into batches of exactly MANIFEST_BATCH_ROWS, the last one shorter: one
    manifest row group per batch, so the same rows give the same bytes whichever way they
    were read."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        if count < MANIFEST_BATCH_ROWS:
            continue
        # One copy of what is held; the full batches are zero-copy slices of it.
        table = pa.Table.from_batches(held).combine_chunks()
        full = count - count % MANIFEST_BATCH_ROWS
        for start in range(0, full, MANIFEST_BATCH_ROWS):
            yield table.slice(start, MANIFEST_BATCH_ROWS).to_batches()[0]
        rest = table.slice(full)
        held, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]


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
