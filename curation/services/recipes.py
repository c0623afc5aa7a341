"""Recipes: validate what the admin stores, run one over the pool, keep scores and LF stats.

A run snapshots the recipe (`RecipeRun.config`) and the index it searched, so a run can be
reproduced and a frozen dataset's lineage names exactly what chose its images. Features for
the labelling functions are measured from the stored bytes once per image and cached in
ImageFeatures; a recipe with a query and an index measures only its top-k candidates.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from django.db import transaction

from curation.models import EmbeddingSpace, Image, Recipe, RecipeRun, RecipeScore
from curation.models.recipes import ImageFeatures
from curation.services.jobs import enqueue_job
from curation.services.planner import refresh_statistics
from curation.services.storage import read_bytes
from curation.weak.recipe_fields import recipe_field_errors

FEATURES_VERSION = "weak-features/2"
FEATURE_CHUNK = 256  # images measured per batch (decoding is the cost)
CACHED_CHUNK = 5000  # cached rows read per query
FEATURE_THREADS = 4
SCORE_BATCH = 2000

ProgressFn = Callable[[int, int, str], None]


# ---------------------------------------------------------------- validation and the spec


def _queries(value: list[Any]) -> list[dict[str, Any]]:
    return [
        {"text": q, "weight": 1.0}
        if isinstance(q, str)
        else {"text": q["text"], "weight": float(q.get("weight", 1.0))}
        for q in value
    ]


def recipe_spec(recipe: Recipe) -> Any:
    """The Django-free RecipeSpec of a Recipe row; raises ValueError naming bad fields."""
    from curation.weak.recipe import RecipeSpec

    errors = recipe_field_errors(recipe)
    if errors:
        raise ValueError(f"recipe {recipe.name!r}: " + "; ".join(errors.values()))
    exemplar_ids = sorted(recipe.exemplars.values_list("pk", flat=True)) if recipe.pk else []
    return RecipeSpec.from_json(
        {
            "name": recipe.name,
            "text_queries": _queries(recipe.text_queries),
            "negative_queries": _queries(recipe.negative_queries),
            "exemplar_ids": exemplar_ids,
            "lfs": recipe.labelling_functions,
            "score_threshold": recipe.threshold,
            "top_k": recipe.top_k,
        }
    )


def heuristics_lf_configs() -> list[dict[str, Any]]:
    """The built-in `heuristics` recipe's labelling functions, as a Recipe row stores them."""
    from curation.weak.recipe import heuristics_recipe

    return [lf.to_config() for lf in heuristics_recipe().lfs]


def ensure_heuristics_recipe(name: str = "heuristics", **defaults: Any) -> Recipe:
    """A Recipe row holding the built-in heuristics recipe (no CLIP weights needed)."""
    recipe, _ = Recipe.objects.get_or_create(
        name=name,
        defaults={
            "description": "Built-in: labelling functions on image measurements only.",
            "labelling_functions": heuristics_lf_configs(),
            **defaults,
        },
    )
    return recipe


def _needs_vectors(spec: Any) -> bool:
    from curation.weak.labelling_functions import ClipTextSimilarity, ExemplarSimilarity

    return spec.has_query() or any(
        isinstance(lf, ClipTextSimilarity | ExemplarSimilarity) for lf in spec.lfs
    )


def _needs_texts(spec: Any) -> bool:
    from curation.weak.labelling_functions import ClipTextSimilarity

    return bool(spec.text_queries or spec.negative_queries) or any(
        isinstance(lf, ClipTextSimilarity) for lf in spec.lfs
    )


# ---------------------------------------------------------------- feature cache


def _measure(image_id: int, key: str) -> tuple[int, dict[str, float | None] | None, str]:
    from PIL import Image as PILImage

    from curation.weak.features import extract_features

    try:
        picture = PILImage.open(io.BytesIO(read_bytes(key)))
        picture.load()
        values = extract_features(picture)
    except Exception as exc:  # one unreadable image abstains; the run goes on
        return image_id, None, f"{type(exc).__name__}: {exc}"
    return image_id, {k: (None if math.isnan(v) else v) for k, v in values.items()}, ""


def image_features(
    image_ids: Sequence[int], *, progress: Callable[[int, int], None] | None = None
) -> dict[int, dict[str, float | None] | None]:
    """Features per image id (None where unmeasurable), measuring and caching what is missing.

    Cached rows are read CACHED_CHUNK ids per query; only the missing are decoded and measured,
    FEATURE_CHUNK at a time on a few threads.
    """
    out: dict[int, dict[str, float | None] | None] = {}
    ids = [int(i) for i in image_ids]
    total = len(ids)
    for start in range(0, total, CACHED_CHUNK):
        chunk = ids[start : start + CACHED_CHUNK]
        cached = ImageFeatures.objects.filter(image_id__in=chunk, version=FEATURES_VERSION)
        for image_id, values, error in cached.values_list("image_id", "values", "error"):
            out[image_id] = None if error else values
        missing = [i for i in chunk if i not in out]
        for at in range(0, len(missing), FEATURE_CHUNK):
            _measure_and_cache(missing[at : at + FEATURE_CHUNK], out)
            if progress:  # measuring is the slow part: report it as it goes
                done = len(chunk) - len(missing) + min(at + FEATURE_CHUNK, len(missing))
                progress(start + done, total)
        if progress:
            progress(min(start + CACHED_CHUNK, total), total)
    return out


def _measure_and_cache(missing: list[int], out: dict[int, dict[str, float | None] | None]) -> None:
    keys = dict(Image.objects.filter(pk__in=missing).values_list("pk", "storage_key"))
    with ThreadPoolExecutor(FEATURE_THREADS, thread_name_prefix="features") as pool:
        measured = list(pool.map(_measure, missing, [keys.get(i) or "" for i in missing]))
    ImageFeatures.objects.bulk_create(
        [
            ImageFeatures(image_id=i, version=FEATURES_VERSION, values=values or {}, error=error)
            for i, values, error in measured
            if i in keys
        ],
        update_conflicts=True,
        unique_fields=["image"],
        update_fields=["version", "values", "error", "computed_at"],
    )
    out.update({i: values for i, values, _ in measured})


class LazyFeatures(Mapping):
    """Features of the pool, measured only for the ids `run_recipe` actually asks about."""

    def __init__(self, pool_ids: Sequence[int]) -> None:
        self._ids = [int(i) for i in pool_ids]
        self._known: dict[int, dict[str, float | None] | None] = {}

    def __getitem__(self, image_id: int) -> dict[str, float | None] | None:
        image_id = int(image_id)
        if image_id not in self._known:
            self._known.update(image_features([image_id]))
        return self._known[image_id]

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def prefetch(
        self, image_ids: Sequence[int], progress: Callable[[int, int], None] | None = None
    ) -> None:
        todo = [i for i in image_ids if int(i) not in self._known]
        self._known.update(image_features(todo, progress=progress))


# ---------------------------------------------------------------- runs


def pool_ids() -> list[int]:
    """The usable images: candidates of every run (quarantined images never are)."""
    return list(Image.objects.usable().order_by("pk").values_list("pk", flat=True))


def start_recipe_run(
    recipe: Recipe,
    *,
    user: Any = None,
    space: EmbeddingSpace | None = None,
    run_async: bool = True,
) -> RecipeRun:
    """Snapshot the recipe into a RecipeRun and (by default) enqueue its `recipe_run` job.

    The latest index of `space` (or the most recent index of any space) is recorded on the
    run; a recipe that needs vectors and finds no index is refused here, before any work.
    """
    from curation.services.indexes import latest_index

    spec = recipe_spec(recipe)
    if space is not None:
        index = latest_index(space)
    else:
        from curation.models import VectorIndex

        index = VectorIndex.objects.order_by("-created_at", "-id").first()
    if _needs_vectors(spec) and index is None:
        raise ValueError(
            f"recipe {recipe.name!r} has text queries, exemplars or CLIP labelling functions: "
            "embed the pool and run `build_index` first"
        )
    run = RecipeRun.objects.create(
        recipe=recipe,
        index=index,
        config={**spec.to_json(), "space": index.space.name if index else None},
        stats={"status": "queued" if run_async else "running"},
    )
    if run_async:
        run.job = enqueue_job("recipe_run", params={"run_id": run.pk}, user=user, target=run)
        run.save(update_fields=["job", "updated_at"])
    return run


def run_recipe_job(
    run: RecipeRun,
    *,
    progress: ProgressFn | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> RecipeRun:
    """Run a RecipeRun's snapshot over the pool and write its RecipeScore rows and stats.

    Every decision recorded for the recipe (grid or import) is gold for this run: the label
    model and the decision classifier learn from it, and the grid shows it pre-set. Re-running
    the same run replaces its scores (a retried job starts clean); decisions live on the
    recipe, so none is lost with them.
    """
    from curation.weak.recipe import RecipeSpec, run_recipe

    started = time.perf_counter()
    report = progress or (lambda done, total, message: None)
    run = RecipeRun.objects.select_related("index__space", "recipe").get(pk=run.pk)
    config = {k: v for k, v in run.config.items() if k != "space"}
    spec = RecipeSpec.from_json(config)
    ids = pool_ids()
    features = LazyFeatures(ids)
    vectors = index = bundle = None
    if _needs_vectors(spec):
        if run.index is None:
            raise ValueError(f"{run}: the recipe needs vectors but the run has no index")
        from curation.retrieval.search import VectorStore
        from curation.services.embeddings import bundle_for, done_shard_paths
        from curation.services.indexes import open_index

        space = run.index.space
        report(0, 1, f"loading vectors of {space.name}")
        vectors = VectorStore.from_shards(done_shard_paths(space))
        index = open_index(run.index) if spec.has_query() and spec.top_k else None
        bundle = bundle_for(space) if _needs_texts(spec) else None
    if index is None:
        # Every pool image is a candidate: measure them all in chunks, with progress.
        features.prefetch(ids, progress=lambda done, total: report(done, total, "measuring"))
    if should_cancel and should_cancel():
        from curation.services.jobs import JobCancelled

        raise JobCancelled(f"{run} cancelled before scoring")
    from curation.services.decisions import recipe_gold

    gold = recipe_gold(run.recipe)
    report(len(ids), len(ids), "scoring")
    result = run_recipe(
        spec,
        features,
        vectors=vectors,
        index=index,
        bundle=bundle,
        allowed_ids=np.asarray(ids, dtype=np.int64),
        gold=gold,
    )
    stats = {
        "status": "done",
        "candidates": len(result),
        "pool": len(ids),
        "weak_positive": int((result.weak_labels == 1).sum()),
        "above_threshold": int((result.scores >= spec.score_threshold).sum()),
        "label_model": result.label_model,
        "threshold": spec.score_threshold,
        "lf": [s.to_json() for s in result.lf_stats],
        "decisions": result.decisions.to_json(),
        "seconds": round(time.perf_counter() - started, 3),
    }
    accepted = RecipeScore.Decision.ACCEPTED
    shown = {i: accepted if y else RecipeScore.Decision.REJECTED for i, y in gold.items()}
    with transaction.atomic():
        RecipeScore.objects.filter(run=run).delete()
        _insert_scores(run, result, shown)
        refresh_statistics(RecipeScore)  # the grid reads these rows next
        run.stats = stats
        run.save(update_fields=["stats", "updated_at"])
    return run


def _insert_scores(run: RecipeRun, result: Any, shown: Mapping[int, str]) -> None:
    """Write one RecipeScore per result row with executemany: at a million rows the ORM's
    per-object cost (model instances, per-field preparation) would dominate the whole run."""
    from django.db import connection

    meta = RecipeScore._meta
    votes_field = meta.get_field("lf_votes")
    fields = ["run", "image", "score", "probability", "certainty", "weak_label"]
    fields += ["lf_votes", "decision"]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(meta.db_table),
        ", ".join(quote(meta.get_field(name).column) for name in fields),
        ", ".join(["%s"] * len(fields)),
    )
    ids = result.image_ids.tolist()
    scores = np.nan_to_num(result.scores, nan=0.0, posinf=0.0, neginf=0.0).tolist()
    probabilities = np.nan_to_num(result.probabilities, nan=0.0).tolist()
    certainty = np.nan_to_num(result.certainty, nan=0.0).tolist()
    weak = result.weak_labels.tolist()
    names = result.lf_names
    votes = result.votes.tolist()
    unreviewed = RecipeScore.Decision.UNREVIEWED
    with connection.cursor() as cursor:
        for start in range(0, len(ids), SCORE_BATCH):
            stop = min(start + SCORE_BATCH, len(ids))
            cursor.executemany(
                sql,
                [
                    (
                        run.pk,
                        ids[i],
                        scores[i],
                        probabilities[i],
                        certainty[i],
                        weak[i],
                        votes_field.get_db_prep_save(
                            dict(zip(names, votes[i], strict=True)), connection
                        ),
                        # The recipe's earlier decisions show (and freeze) in this run's grid.
                        shown.get(ids[i], unreviewed),
                    )
                    for i in range(start, stop)
                ],
            )


def mark_run_failed(run_id: int, error: str) -> None:
    run = RecipeRun.objects.filter(pk=run_id).first()
    if run is not None:
        run.stats = {**run.stats, "status": "failed", "error": error[-2000:]}
        run.save(update_fields=["stats", "updated_at"])
