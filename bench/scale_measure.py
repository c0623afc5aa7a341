"""What `bench/scale.py` times on one pool, inside its child process: the pages (against a
reference page measured alternately, so loads minutes apart compare), the recipe run, the
grid's freeze, the freeze step alone and pyarrow writing the same manifest, and the export."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

from scale_pool import build_pool, scores_by_sql, setup_django


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _best_of(fn: Any, times: int = 5) -> float:
    """The fastest of `times` calls after a warm-up: on cores shared with other work the
    fastest call is the one least slowed by it, and a page's own cost is what sizes compare."""
    fn()  # warm-up: templates, caches, the first connection
    return min(_timed(fn)[0] for _ in range(times))


def _best_of_pair(fn: Any, reference: Any, times: int = 5) -> tuple[float, float]:
    """Best of `times` for `fn` and for `reference`, called alternately after a warm-up, so both
    see the same load: their quotient stays put while other work on the cores comes and goes."""
    fn()
    reference()
    mine, theirs = [], []
    for _ in range(times):
        mine.append(_timed(fn)[0])
        theirs.append(_timed(reference)[0])
    return min(mine), min(theirs)


def _reference_page(recipe: Any, client: Any) -> Any:
    """The first grid page of a 100-row run in the same database: the same template, tiles and
    queries as any page, at a size that does not change; it measures how fast the machine is
    right now, so sizes measured minutes apart under different loads can be compared."""
    from django.urls import reverse

    run = scores_by_sql(recipe, score="0.5", limit=100)
    url = reverse("curation-review", args=[run.pk])

    def page() -> None:
        response = client.get(url)
        assert response.status_code == 200 and b'class="tile"' in response.content, url

    return page


# ---------------------------------------------------------------- one size, in a child process


def run_size(n: int, var_dir: Path) -> dict[str, Any]:
    setup_django(var_dir)
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from curation.models import Dataset, VectorIndex
    from curation.services.embeddings import bundle_for
    from curation.services.exports import export_version
    from curation.services.recipes import ensure_heuristics_recipe, run_recipe_job, start_recipe_run
    from curation.services.review import accept_above, freeze_domain_version
    from curation.services.versions import MANIFEST_SCHEMA, create_draft_version, freeze_version

    figures: dict[str, Any] = {"images": n}
    pool_file = var_dir / "pool.json"
    if os.environ.get("SCALE_REUSE_POOL") and pool_file.exists():
        figures.update(json.loads(pool_file.read_text()), pool_reused=True)
    else:
        figures.update(build_pool(n, var_dir))
        pool_file.write_text(
            json.dumps({k: figures[k] for k in ("insert_rows_s", "write_shards_s")})
        )
    if os.environ.get("SCALE_BUILD_ONLY"):
        connection.close()  # SQLite checkpoints its WAL into the file that --keep copies
        return figures
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-pw")
    client = Client()
    client.force_login(user)

    def admin_list() -> None:
        response = client.get(reverse("admin:curation_image_changelist"))
        assert response.status_code == 200, response.status_code

    recipe = ensure_heuristics_recipe(top_k=n)  # score the whole pool, not the default top 1,000
    reference = _reference_page(recipe, client)
    seconds, reference_s = _best_of_pair(admin_list, reference)
    figures["admin_list_s"] = round(seconds, 4)
    figures["admin_reference_s"] = round(reference_s, 4)
    if os.environ.get("SCALE_PAGES_ONLY"):
        return _pages_only(figures, recipe, client, reference)
    space_index = VectorIndex.objects.create(
        space_id=1, version=1, index_type="Flat", path=str(var_dir / "unused.faiss")
    )
    skip = set(filter(None, os.environ.get("SCALE_SKIP", "").split(",")))
    if skip:
        figures["skipped"] = sorted(skip)
    if "recipe" in skip:
        run = scores_by_sql(recipe)
    else:
        seconds, run = _timed(lambda: run_recipe_job(start_recipe_run(recipe, run_async=False)))
        figures["recipe_run_s"] = round(seconds, 3)

    _time_deep_review_page(figures, run, client, reference)

    # Freeze every scored image from the grid, with text captions from the run's queries.
    accept_above(run, 0.0)  # as the grid's "accept above" does
    run.index = space_index
    run.config = {**run.config, "text_queries": [{"text": "a sticker"}, {"text": "a photo"}]}
    run.save(update_fields=["index", "config"])
    # The text encoder is loaded once per process (a worker that embedded or searched already
    # holds it); torch's import alone is ~20 s on loaded cores, a one-off, not a cost of rows.
    bundle_for(space_index.space)
    seconds, version = _timed(
        lambda: freeze_domain_version(run, dataset_name="scale", reason="bench", user=user)
    )
    figures["freeze_review_s"] = round(seconds, 3)
    assert version.row_count == n

    # The freeze step proper on an equal draft (in another dataset: a version equal to its
    # parent is refused), against pyarrow writing the same manifest.
    other = Dataset.objects.create(name="scale-again", kind=Dataset.Kind.DOMAIN)
    draft = create_draft_version(other, reason="bench again")

    def copy_rows() -> None:
        """The rows written the cheapest way a database writes them: one INSERT … SELECT."""
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO curation_datasetitem (version_id, image_id, caption, label, weight,"
                " split) SELECT %s, image_id, caption, label, weight, split"
                " FROM curation_datasetitem WHERE version_id = %s",
                [draft.pk, version.pk],
            )

    seconds, _ = _timed(copy_rows)
    figures["insert_rows_bare_s"] = round(seconds, 3)
    seconds, again = _timed(lambda: freeze_version(draft, user=user, reason="bench again"))
    figures["freeze_s"] = round(seconds, 3)

    read_as = pa.struct(  # has_alpha as an integer (SQLite has no booleans), weight a double
        [
            pa.field(f.name, {"has_alpha": pa.int8(), "weight": pa.float64()}.get(f.name, f.type))
            for f in MANIFEST_SCHEMA
        ]
    )

    def bare() -> bytes:
        """The same manifest from a plain cursor, the way the product writes it (one Arrow
        conversion per 50,000 rows, sorted by sha256 in Arrow, 50,000-row groups): what a
        manifest costs with no draft to write, statistics, locks, checks or checksum."""
        parts = []
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT i.sha256, i.storage_key, d.caption, d.label, d.weight, d.split, i.width,"
                " i.height, CAST(i.has_alpha AS integer) FROM curation_datasetitem d"
                " JOIN curation_image i ON i.id = d.image_id WHERE d.version_id = %s",
                [again.pk],
            )
            while rows := cursor.fetchmany(50_000):
                batch = pa.RecordBatch.from_struct_array(pa.array(rows, type=read_as))
                parts.append(
                    pa.RecordBatch.from_arrays(
                        [pc.cast(batch.column(f.name), f.type) for f in MANIFEST_SCHEMA],
                        schema=MANIFEST_SCHEMA,
                    )
                )
        table = pa.Table.from_batches(parts, schema=MANIFEST_SCHEMA)
        table = table.take(pc.sort_indices(table, sort_keys=[("image_sha256", "ascending")]))
        sink = io.BytesIO()
        with pq.ParquetWriter(
            sink, MANIFEST_SCHEMA, compression="zstd", write_statistics=False, use_dictionary=False
        ) as writer:
            for start in range(0, table.num_rows, 50_000):
                writer.write_table(table.slice(start, 50_000))
        return sink.getvalue()

    seconds, manifest = _timed(bare)
    figures["pyarrow_manifest_s"] = round(seconds, 3)
    # The same manifest: the same bytes the grid's freeze stored, so both sides did one job.
    assert hashlib.sha256(manifest).hexdigest() == version.checksum == again.checksum

    if "export" not in skip:
        seconds, exported = _timed(
            lambda: export_version(again, "parquet", var_dir / "export" / "parquet")
        )
        figures["export_parquet_s"] = round(seconds, 3)
        assert exported.rows == n
    figures["database"] = connection.vendor
    return figures


def _pages_only(
    figures: dict[str, Any], recipe: Any, client: Any, reference: Any
) -> dict[str, Any]:
    """--pages-only: scores inserted by SQL (no recipe run), then only the deep review page.

    For sizes where the jobs would take hours on shared cores: the pages' cost does not depend
    on how the scores were made, only on how many rows the run has."""
    from django.db import connection

    _time_deep_review_page(figures, scores_by_sql(recipe), client, reference)
    figures["database"] = connection.vendor
    figures["pages_only"] = True
    return figures


def _time_deep_review_page(figures: dict[str, Any], run: Any, client: Any, reference: Any) -> None:
    """review_page_s: the grid page 90 % deep into `run` (keyset cursor), best of 5, alternating
    with the reference page (page_reference_s)."""
    from django.urls import reverse

    from curation.models import RecipeScore

    deep = int(figures["images"] * 0.9)
    row = RecipeScore.objects.filter(run=run).order_by("-score", "pk").values("score", "pk")[deep]
    url = reverse("curation-review", args=[run.pk]) + f"?after={row['score']!r}_{row['pk']}"

    def review_page() -> None:
        response = client.get(url)
        assert response.status_code == 200 and b'class="tile"' in response.content, url

    seconds, reference_s = _best_of_pair(review_page, reference)
    figures["review_page_s"] = round(seconds, 4)
    figures["page_reference_s"] = round(reference_s, 4)
