"""Fill an empty draft and freeze it in one pass over its rows (the review grid's freeze).

`freeze_version` reads a draft's rows back from the database to write the manifest. A draft
that is filled only to be frozen at once need not be read back: the rows are read from their
sources once, in the manifest's order, and each batch goes both into the manifest and into the
draft. At a million rows the read-back was a second pass through Python as long as the
manifest write itself (docs/benchmarks.md, scale).
"""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from django.db import connection, transaction
from django.db.models import QuerySet

from curation.models import DatasetItem, DatasetVersion
from curation.services.manifests import (
    MANIFEST_COLUMNS,
    ROW_TYPE,
    manifest_part,
    stream_batches,
    write_manifest,
)
from curation.services.planner import refresh_statistics
from curation.services.versions import lock_draft, seal

# What each source selects, in this order: the image id, the manifest's columns, and whether
# the row's caption may be replaced by a text query's (1: the image has no caption of its own).
STREAM_COLUMNS = ["image_id", *MANIFEST_COLUMNS, "text_caption"]
STREAM_TYPE = pa.struct([("image_id", pa.int64()), *ROW_TYPE, pa.field("text_caption", pa.int8())])
ITEM_COLUMNS = ("image_id", "caption", "label", "weight", "split")


@dataclass(frozen=True)
class TextCaptions:
    """Captions by text query: `closest(ids)` gives (ids, index into `texts` of each one's
    closest text) for those of `ids` that have a vector; the others keep their caption."""

    texts: list[str]
    closest: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@transaction.atomic
def fill_and_freeze(
    version: DatasetVersion,
    sources: Iterable[QuerySet],
    *,
    captions: TextCaptions | None = None,
    user: Any = None,
    reason: str = "",
) -> DatasetVersion:
    """Insert the rows of `sources` into the empty draft `version` and freeze it. Each source
    is a queryset annotated with STREAM_COLUMNS (`manifest_columns` annotates the image's, with
    `original_bytes` as the version's lineage asks, as `build_manifest` reads them); sources
    must not select an image twice. Raises VersionUnchanged, as `freeze_version` does,
    when the rows are exactly the parent's.

    The rows are read once, in sha256 order, into the manifest; PostgreSQL copies each batch
    read into the draft. SQLite instead writes the draft with one `INSERT … SELECT` of the same
    sources in the same transaction (the grid's freeze holds SQLite's write lock by then, having
    created the draft, and the counts are compared): per-row inserts from Python cost twice
    that statement. Nothing is read back from the draft either way.
    """
    version = lock_draft(version)
    if version.items.exists():
        raise ValueError(f"{version} already has rows; fill_and_freeze fills an empty draft")
    select, params = _union(sources)
    copy = connection.vendor == "postgresql"
    picks: list[tuple[np.ndarray, np.ndarray]] = []
    rows = 0
    with ManifestWriter() as manifest:
        for batch in stream_batches(
            f"{select} ORDER BY 2", params, STREAM_TYPE, writes_between=copy
        ):
            batch, pick = _with_text_captions(batch, captions)
            picks.append(pick)
            manifest.put(batch)  # written on the worker thread while this one writes the rows
            if copy:
                _copy_items(version, batch)
            rows += batch.num_rows
        manifest.close()
        if not rows:
            raise ValueError(f"{version} has no rows; add images before freezing")
        if not copy:
            written = _insert_selected(version, select, params, captions, picks)
            if written != rows:
                raise RuntimeError(f"{version}: read {rows} rows but wrote {written}; not frozen")
        data = manifest.result()
    refresh_statistics(DatasetItem)  # the diff and every page read the rows just written
    return seal(version, data, rows, user=user, reason=reason)


_END = object()


class ManifestWriter:
    """The manifest written from batches on a worker thread, while the caller's thread writes
    the same rows into the database: the freeze then waits for the longer of the two writes,
    not their sum. Both release the GIL for their heavy part (sqlite3's statement, PostgreSQL
    doing the COPY's inserts, pyarrow's casts, encoding and compression).

    The worker runs pure pyarrow (`manifest_part`, `write_manifest`) and never touches a
    database connection: Django's are per-thread, and every row is read and written on the
    caller's, inside its transaction. The bytes stay in memory until `result()`; nothing is
    stored until the caller seals the version, so a failure on either side leaves no file.
    A failure of the worker is raised on the caller's thread at its next `put` or at
    `result()`; a failure of the caller stops the worker when the `with` block exits.
    """

    def __init__(self, depth: int = 4) -> None:
        # A few batches of slack (50,000 rows each): the reader never waits for the writer
        # unless the writer falls that far behind, and memory stays bounded.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._data: bytes | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="manifest-writer", daemon=True)

    def __enter__(self) -> ManifestWriter:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        self._thread.join()

    def _parts(self) -> Iterator[pa.RecordBatch]:
        while (batch := self._queue.get()) is not _END:
            yield manifest_part(batch)

    def _run(self) -> None:
        try:
            self._data = write_manifest(self._parts())
        except BaseException as error:  # handed to the caller's thread, raised there
            self._error = error
            while self._queue.get() is not _END:  # the caller never blocks on a dead writer
                pass

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing the manifest failed: {self._error}") from self._error

    def put(self, batch: pa.RecordBatch) -> None:
        """One more batch of the manifest, in sha256 order."""
        self._raise_failure()
        self._queue.put(batch)

    def close(self) -> None:
        """No more batches; the worker finishes writing."""
        if not self._closed:
            self._closed = True
            self._queue.put(_END)

    def result(self) -> bytes:
        """The manifest's bytes, once the worker has written them all."""
        self.close()
        self._thread.join()
        self._raise_failure()
        assert self._data is not None
        return self._data


def _union(sources: Iterable[QuerySet]) -> tuple[str, list[Any]]:
    """One `SELECT` of STREAM_COLUMNS over all sources (UNION ALL), without an order."""
    selects, params = [], []
    for source in sources:
        sql, more = source.order_by().values_list(*STREAM_COLUMNS).query.sql_with_params()
        selects.append(f"SELECT * FROM ({sql}) source_{len(selects)}")
        params.extend(more)
    if not selects:
        raise ValueError("fill_and_freeze: no sources of rows")
    return " UNION ALL ".join(selects), params


NO_PICK = (np.empty(0, np.int64), np.empty(0, np.int64))


def _with_text_captions(
    batch: pa.RecordBatch, captions: TextCaptions | None
) -> tuple[pa.RecordBatch, tuple[np.ndarray, np.ndarray]]:
    """`batch` with the closest text query as caption of the rows that may take one, and
    (image ids, text index) of the rows it recaptioned."""
    if captions is None or not captions.texts:
        return batch, NO_PICK
    ids = batch.column("image_id").to_numpy()
    wanted = ids[batch.column("text_caption").to_numpy(zero_copy_only=False).astype(bool)]
    if not len(wanted):
        return batch, NO_PICK
    found, best = captions.closest(wanted)
    if not len(found):
        return batch, NO_PICK
    order = np.argsort(ids, kind="stable")
    choice = np.full(len(ids), -1, dtype=np.int64)
    choice[order[np.searchsorted(ids, found, sorter=order)]] = best
    texts = pa.array(captions.texts, type=pa.string()).take(pa.array(choice.clip(min=0)))
    caption = pc.if_else(pa.array(choice >= 0), texts, batch.column("caption"))
    at = batch.schema.get_field_index("caption")
    return batch.set_column(at, "caption", caption), (found, best)


def _copy_items(version: DatasetVersion, batch: pa.RecordBatch) -> None:
    """One batch of rows into the draft by PostgreSQL's COPY, from Arrow's CSV writer: no
    Python object per row (every string is quoted, so an empty caption stays empty, not NULL)."""
    table = connection.ops.quote_name(DatasetItem._meta.db_table)
    columns = ", ".join(("version_id", *ITEM_COLUMNS))
    items = batch.select(list(ITEM_COLUMNS)).add_column(
        0, "version_id", pa.array(np.full(batch.num_rows, version.pk, dtype=np.int64))
    )
    text = io.BytesIO()
    pacsv.write_csv(items, text, pacsv.WriteOptions(include_header=False))
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy,
    ):
        copy.write(text.getvalue())


def _insert_selected(
    version: DatasetVersion,
    select: str,
    params: list[Any],
    captions: TextCaptions | None,
    picks: list[tuple[np.ndarray, np.ndarray]],
) -> int:
    """SQLite: the draft's rows by one `INSERT … SELECT` of the sources, the text captions
    chosen while streaming joined from a temporary table keyed by image id (filled by one
    statement from a JSON array: SQLite caps a statement's parameters far below a million)."""
    table = connection.ops.quote_name(DatasetItem._meta.db_table)
    ids = np.concatenate([pick[0] for pick in picks])
    caption, join, head = "source.caption", "", []
    with connection.cursor() as cursor:
        if captions is not None and len(ids):
            texts = len(captions.texts)
            choice = np.concatenate([pick[1] for pick in picks])
            packed = json.dumps((ids * texts + choice).tolist())
            cursor.execute("DROP TABLE IF EXISTS temp.caption_pick")  # left by a failed freeze
            cursor.execute(
                "CREATE TEMP TABLE caption_pick (image_id INTEGER PRIMARY KEY, text_index INTEGER)"
            )
            cursor.execute(
                "INSERT INTO temp.caption_pick SELECT value / %s, value %% %s FROM json_each(%s)",
                [texts, texts, packed],
            )
            join = " LEFT JOIN temp.caption_pick pick ON pick.image_id = source.image_id"
            cases = " ".join("WHEN %s THEN %s" for _ in captions.texts)
            caption = f"COALESCE(CASE pick.text_index {cases} END, source.caption)"
            head = [value for pair in enumerate(captions.texts) for value in pair]
        cursor.execute(
            f"INSERT INTO {table} (version_id, {', '.join(ITEM_COLUMNS)})"
            f" SELECT %s, source.image_id, {caption}, source.label, source.weight, source.split"
            f" FROM ({select}) source{join}",
            [version.pk, *head, *params],
        )
        written = cursor.rowcount
        if join:
            cursor.execute("DROP TABLE temp.caption_pick")
    return written
