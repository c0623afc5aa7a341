"""The synthetic pools `bench/scale.py` measures on: N Image rows sharing a handful of real stored
PNGs, their cached labelling-function features, an embedding space of N random unit vectors in
shards, and (for sizes where a recipe run would take hours) a run's scores inserted by SQL.
Everything is written with set-based SQL: the ORM's per-object cost would make building the
pool the slowest part of the benchmark."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

SHARD_ROWS = 100_000
FEATURES = {
    "width": 256.0,
    "height": 256.0,
    "has_alpha": 1.0,
    "transparent_fraction": 0.4,
    "border_transparent_fraction": 1.0,
    "border_uniformity": 1.0,
    "colours_90": 4.0,
    "flat_fraction": 0.9,
    "white_fraction": 0.4,
    "chroma_mean": 90.0,
    "edge_cells": 0.3,
    "h_lines": 0.0,
    "v_lines": 0.0,
    "opaque_fraction": 0.6,
}


def setup_django(var_dir: Path) -> None:
    os.environ["PLATFORM_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _pictures() -> list[tuple[str, str, bool]]:
    """A few real stored PNGs: (sha256, storage key, has_alpha)."""
    import hashlib

    from PIL import Image as PILImage
    from PIL import ImageDraw

    from curation.services.storage import store_bytes

    out = []
    for n in range(8):
        image = PILImage.new("RGBA", (256, 256), (0, 0, 0, 0))
        ImageDraw.Draw(image).ellipse([20 + n, 20, 236, 236 - n], fill=(30 * n, 120, 200, 255))
        data = io.BytesIO()
        image.save(data, "PNG")
        digest = hashlib.sha256(data.getvalue()).hexdigest()
        out.append((digest, store_bytes(data.getvalue(), "png", sha256=digest), True))
    return out


def _generate_rows(n: int, template_pk: int) -> None:
    """N Image rows copied from one template row in a single INSERT … SELECT, and their cached
    features: the ORM's per-object cost would make building the pool the slowest part."""
    from django.db import connection

    from curation.models import Image
    from curation.models.recipes import ImageFeatures
    from curation.services.recipes import FEATURES_VERSION

    quote = connection.ops.quote_name
    columns = [
        f.column
        for f in Image._meta.concrete_fields
        if f.column not in ("id", "sha256", "origin", "has_alpha")
    ]
    postgres = connection.vendor == "postgresql"
    sha = "lpad(to_hex(x), 64, '0')" if postgres else "printf('%%064x', x)"
    origin = "'synthetic/' || x || '.png'"
    alpha = "(x %% 3 <> 0)"  # %% : these strings go through the driver's parameter formatting
    image_table = quote(Image._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {image_table} ({', '.join(map(quote, columns))}, sha256, origin, has_alpha)"
            f" WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < %s)"
            f" SELECT {', '.join('t.' + quote(c) for c in columns)}, {sha}, {origin}, {alpha}"
            f" FROM seq, {image_table} t WHERE t.id = %s",
            [n, template_pk],
        )
        cursor.execute(f"DELETE FROM {image_table} WHERE id = %s", [template_pk])
        # Half sticker-like, half photo-like measurements, so the label model has work to do.
        fixed = ", ".join(
            f'"{k}": {v}' for k, v in FEATURES.items() if k not in ("flat_fraction", "colours_90")
        )
        u = "((id * 7919) %% 1000) / 1000.0"
        values = f"'{{{fixed}, \"flat_fraction\": ' || {u} || ', \"colours_90\": ' || (4 + 200 * {u}) || '}}'"
        if postgres:
            values = f"({values})::jsonb"
        now = "now()" if postgres else "datetime('now')"
        features_table = quote(ImageFeatures._meta.db_table)
        cursor.execute(
            f"INSERT INTO {features_table} (image_id, version, {quote('values')}, error, computed_at)"
            f" SELECT id, %s, {values}, '', {now} FROM {image_table}",
            [FEATURES_VERSION],
        )


def build_pool(n: int, var_dir: Path) -> dict[str, Any]:
    import numpy as np

    from curation.models import EmbeddingShard, Image, Source
    from curation.models.recipes import ImageFeatures
    from curation.retrieval.embedding import write_shard
    from curation.services.embeddings import ensure_space, space_dir
    from curation.services.planner import refresh_statistics

    source = Source.objects.create(name="synthetic")
    pictures = _pictures()
    started = time.perf_counter()
    template = Image.objects.create(
        sha256="template",
        width=256,
        height=256,
        format="PNG",
        has_alpha=True,
        storage_key=pictures[0][1],
        source=source,
    )
    _generate_rows(n, template.pk)
    rows_s = time.perf_counter() - started
    # What autovacuum does a minute after a bulk load on a real server (PostgreSQL only).
    refresh_statistics(Image, ImageFeatures)
    ids = np.fromiter(Image.objects.order_by("pk").values_list("pk", flat=True), np.int64)
    assert len(ids) == n, (len(ids), n)
    rng = np.random.default_rng(0)

    started = time.perf_counter()
    space = ensure_space("tiny-clip", name="scale")
    folder = space_dir(space)
    for s, start in enumerate(range(0, n, SHARD_ROWS)):
        chunk = ids[start : start + SHARD_ROWS]
        vectors = rng.standard_normal((len(chunk), space.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        sidecar = write_shard(folder, f"shard-{s:05d}", chunk, vectors)
        EmbeddingShard.objects.create(
            space=space,
            index=s,
            first_image_id=int(chunk[0]),
            last_image_id=int(chunk[-1]),
            path=str(sidecar),
            count=len(chunk),
            status=EmbeddingShard.Status.DONE,
        )
    return {
        "insert_rows_s": round(rows_s, 2),
        "write_shards_s": round(time.perf_counter() - started, 2),
    }


def scores_by_sql(
    recipe: Any, score: str = "((id * 7919) %% 100003) / 100003.0", limit: int | None = None
) -> Any:
    """A finished run with one score per image (the first `limit` images by id, or all), the
    scores computed by the SQL expression `score` of the image id, inserted by one statement
    (no recipe run): for sizes where the jobs would take hours on shared cores. Pages and
    freezes cost what the run's row count makes them cost, not what made the scores."""
    from django.db import connection

    from curation.models import RecipeRun, RecipeScore
    from curation.services.planner import refresh_statistics

    run = RecipeRun.objects.create(recipe=recipe, config={"lfs": []}, stats={"status": "done"})
    table = connection.ops.quote_name(RecipeScore._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (run_id, image_id, score, probability, certainty, weak_label,"
            f" lf_votes, decision) SELECT %s, id, {score}, 0.5, 0.5, 1, '{{}}', 'unreviewed'"
            " FROM curation_image" + (f" ORDER BY id LIMIT {int(limit)}" if limit else ""),
            [run.pk],
        )
    refresh_statistics(RecipeScore)  # as a recipe run does after writing its scores
    return run
