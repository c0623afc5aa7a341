"""A manifest's rows read from the database: PostgreSQL's COPY read (Arrow parsing its CSV) and
the cursor read give the same Arrow batches, cut at exactly MANIFEST_BATCH_ROWS, whatever the
captions hold."""

from __future__ import annotations

import pytest

from curation.models import Dataset
from curation.services import manifests
from curation.services.manifests import MANIFEST_COLUMNS, manifest_columns, stream_batches
from curation.services.versions import add_items, create_draft_version

pytestmark = pytest.mark.django_db

ODD = ['a "quoted", comma', "new\nline", "cr\r\nlf", "🙂 \\N", "", "  spaced  ", "NULL", ","]


def _select(version, *, empty: bool = False) -> tuple[str, list]:
    items = version.items.filter(weight__lt=0) if empty else version.items.all()
    rows = manifest_columns(items).order_by("image_sha256").values_list(*MANIFEST_COLUMNS)
    sql, params = rows.query.sql_with_params()
    return sql, list(params)


@pytest.fixture
def draft(pool):
    version = create_draft_version(Dataset.objects.create(name="reads"), reason="test")
    images = pool["stickers"][:4] + pool["photos"][:4]
    add_items(
        version,
        [
            {"image": image, "caption": caption, "weight": 0.1 + n / 3, "label": f"l{n}"}
            for n, (image, caption) in enumerate(zip(images, ODD, strict=True))
        ],
    )
    return version


def test_both_reads_give_the_same_batches_of_the_set_size(draft, monkeypatch):
    monkeypatch.setattr(manifests, "MANIFEST_BATCH_ROWS", 3)
    select, params = _select(draft)
    read = list(stream_batches(select, params))
    by_cursor = list(stream_batches(select, params, writes_between=True))
    assert [batch.num_rows for batch in read] == [3, 3, 2]
    assert [batch.num_rows for batch in by_cursor] == [3, 3, 2]
    assert all(a.equals(b) for a, b in zip(read, by_cursor, strict=True))
    captions = [c for batch in read for c in batch.column("caption").to_pylist()]
    assert sorted(captions) == sorted(ODD)
    weights = sorted(w for batch in read for w in batch.column("weight").to_pylist())
    assert weights == sorted(0.1 + n / 3 for n in range(8))  # exact doubles, not rounded


def test_no_rows_give_no_batches(draft):
    select, params = _select(draft, empty=True)
    assert list(stream_batches(select, params)) == []
    assert list(stream_batches(select, params, writes_between=True)) == []


def test_batches_of_any_size_are_recut_in_order(monkeypatch):
    """COPY's reader hands over blocks of whatever size its buffer holds: held rows carry over
    from block to block, and no row is lost, repeated or moved."""
    import pyarrow as pa

    monkeypatch.setattr(manifests, "MANIFEST_BATCH_ROWS", 3)
    sizes, start, blocks = [2, 2, 5, 1, 0, 4], 0, []
    for size in sizes:
        blocks.append(pa.record_batch({"n": pa.array(range(start, start + size), pa.int64())}))
        start += size
    out = list(manifests._exact_batches(blocks))
    assert [batch.num_rows for batch in out] == [3, 3, 3, 3, 2]
    assert [n for batch in out for n in batch.column("n").to_pylist()] == list(range(14))
